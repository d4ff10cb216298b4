"""Matrix products at full precision, for the exact side of the project.

On GPUs JAX's default float32 matmul rounds its operands to TF32 (a 10-bit mantissa, relative error
about 1e-3 per product). That is fine for training a model and wrong for an exact quantity: on an H100
the probabilities of all 3^10 Mess3 sequences, filtered with default-precision products, summed to
0.9986. Processes, exact predictors, empirical conditionals and probes use these helpers instead of
`@`; on a CPU they compute the same thing. The transformer keeps the default precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EXACT = jax.lax.Precision.HIGHEST


def matmul(a, b):
    """`a @ b` with float32 operands kept at full precision on every backend."""
    return jnp.matmul(a, b, precision=EXACT)


def einsum(subscripts: str, *operands):
    """`jnp.einsum` with full-precision products on every backend."""
    return jnp.einsum(subscripts, *operands, precision=EXACT)
