"""Matrix products at full precision, for the exact side of the project.

On GPUs JAX's default float32 matmul rounds its operands to TF32 (a 10-bit mantissa, relative error
about 1e-3 per product). That is fine for training a model and wrong for an exact quantity: on an H100
the probabilities of all 3^10 Mess3 sequences, filtered with default-precision products, summed to
0.9986. Processes, exact predictors, empirical conditionals and probes use these helpers instead of
`@`; on a CPU they compute the same thing.

A trained transformer is trained at the default precision, but wherever it is *read* as a predictor
(its conditionals for divergences and evaluation against Bayes, its residuals for probes, RL rollouts
and the log-probabilities their gradient uses) it runs inside `exact_products()`: TF32 rounding moves
its logits by ~1e-3, the size of the KLs to Bayes the claims measure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EXACT = jax.lax.Precision.HIGHEST


def matmul(a, b):
    """`a @ b` with float32 operands kept at full precision on every backend."""
    return jnp.matmul(a, b, precision=EXACT)


def exact_products():
    """A context in which every matrix product traced inside asks for full precision, for code that
    does not pass `precision` itself (flax layers, attention)."""
    return jax.default_matmul_precision("highest")


def einsum(subscripts: str, *operands):
    """`jnp.einsum` with full-precision products on every backend."""
    return jnp.einsum(subscripts, *operands, precision=EXACT)
