"""Causal attention as one fused GPU kernel (forward and backward), for the short contexts of toy models.

Why: with many seeds in one program a toy model's training step is bound by memory traffic, and the
einsum attention's [B, H, L, L] scores, with their softmax and its gradient, are among the largest
tensors it moves (on an H100, a third of the 64-seed benchmark step). The fused kernel keeps each
sequence's scores on chip.
The kernel is JAX's Pallas flash-attention example (`jax.experimental.pallas.ops.gpu.attention`,
Triton), differentiable through its own backward kernels; this module fits it to the model's shapes.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# Triton's matrix products need every tile side >= 16, so sequences are padded to a multiple of 16 and
# heads to at least 16 wide. Both are exact: in causal attention no real query reaches a later (padded)
# key, zero query and key entries add nothing to a score, and zero value entries give output entries
# that are cut off.
_MIN_BLOCK = 16
# Largest tile along the sequence; an L <= 64 sequence is one tile, so its scores never leave the chip.
_MAX_BLOCK = 64


def _block(length: int) -> int:
    """The largest power of two dividing `length` (a multiple of 16), at most _MAX_BLOCK."""
    block = _MAX_BLOCK
    while length % block:
        block //= 2
    return block


def causal_attention(
    q_BxLxHxK: Float[Array, "B L H K"],
    k_BxLxHxK: Float[Array, "B L H K"],
    v_BxLxHxK: Float[Array, "B L H K"],
    interpret: bool = False,
) -> Float[Array, "B L H K"]:
    """softmax(q k^T / sqrt(K), causal) v per head, by the fused kernel. `interpret=True` runs the
    kernel's program through JAX's interpreter (any backend; how it is tested off a GPU)."""
    _, length, _, width = q_BxLxHxK.shape
    padded = -(-length // _MIN_BLOCK) * _MIN_BLOCK
    pad = [(0, 0), (0, padded - length), (0, 0), (0, max(width, _MIN_BLOCK) - width)]
    q, k, v = (jnp.pad(x, pad) for x in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxK))
    out = _kernel(q, k, v, width**-0.5, interpret)
    return out[:, :length, :, :width]


def _mha(scale: float, interpret: bool):
    """The kernel as a function of (q, k, v), tiles fitted to the (padded) length."""
    from jax.experimental.pallas.ops.gpu import attention as pallas_ops  # imports Triton's lowering

    def mha(q, k, v):
        block = _block(q.shape[1])
        sizes = pallas_ops.BlockSizes(block_q=block, block_k=block, block_q_dkv=block, block_kv_dkv=block,
                                      block_q_dq=block, block_kv_dq=block)
        return pallas_ops.mha(q, k, v, None, sm_scale=scale, causal=True, block_sizes=sizes, interpret=interpret)

    return mha


# The kernel's index arithmetic mixes int32 program ids with Python ints, which fails when 64-bit types
# are on (JAX's x64 mode, which the exact side of this project uses), so the kernel and its gradient are
# traced with x64 off; its inputs and outputs are float32 or narrower either way.
@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _kernel(q, k, v, scale: float, interpret: bool):
    with jax.enable_x64(False):
        return _mha(scale, interpret)(q, k, v)


def _kernel_forward(q, k, v, scale, interpret):
    with jax.enable_x64(False):
        return jax.vjp(_mha(scale, interpret), q, k, v)


def _kernel_backward(scale, interpret, vjp, g):
    with jax.enable_x64(False):
        return vjp(g)


_kernel.defvjp(_kernel_forward, _kernel_backward)
