"""Causal softmax attention by the CPU kernel causal_attention.cc (see its header for the method).

`available(dtype)` says whether the kernel can run here (float32, built, loaded and registered with
XLA); toymodels/transformer.py uses it for the full pass on the CPU and its einsum attention elsewhere.
`causal_attention` is differentiable in reverse mode (its gradient is the kernel's backward pass).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from toymodels.native import build

_FORWARD, _BACKWARD = "toymodels_causal_attention_f32", "toymodels_causal_attention_backward_f32"


@functools.cache
def _registered() -> bool:
    library = build.load("causal_attention")
    if library is None:
        return False
    jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(library.CausalAttentionF32), platform="cpu")
    jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(library.CausalAttentionBackwardF32), platform="cpu")
    return True


def available(dtype) -> bool:
    return np.dtype(dtype) == np.float32 and _registered()


def _forward(qkv):
    """(o [..., L, H, K], log-sum-exp of each score row [..., H, L])."""
    if not available(qkv.dtype):
        raise ValueError(f"the causal attention kernel takes float32 on a CPU where it could be built, got "
                         f"{qkv.dtype} (check available(dtype) first)")
    if qkv.ndim < 4 or qkv.shape[-3] != 3:
        raise ValueError(f"qkv must have shape [..., L, 3, H, K], got {qkv.shape}")
    *lead, length, _, heads, head_dim = qkv.shape
    shapes = (jax.ShapeDtypeStruct((*lead, length, heads, head_dim), qkv.dtype),
              jax.ShapeDtypeStruct((*lead, heads, length), qkv.dtype))
    return jax.ffi.ffi_call(_FORWARD, shapes, vmap_method="broadcast_all")(qkv)


@jax.custom_vjp
def causal_attention(qkv):
    """softmax_j(q_t . k_j / sqrt(K), j <= t) v per head, [..., L, H, K], from the queries, keys and
    values qkv[..., :, 0], qkv[..., :, 1], qkv[..., :, 2] of qkv [..., L, 3, H, K] (float32; the layout
    of a fused projection's output). Needs `available(float32)`."""
    return _forward(qkv)[0]


def _causal_attention_fwd(qkv):
    o, lse = _forward(qkv)
    return o, (qkv, o, lse)


def _causal_attention_bwd(residuals, d_o):
    qkv = residuals[0]
    call = jax.ffi.ffi_call(_BACKWARD, jax.ShapeDtypeStruct(qkv.shape, qkv.dtype), vmap_method="broadcast_all")
    return (call(*residuals, d_o),)


causal_attention.defvjp(_causal_attention_fwd, _causal_attention_bwd)
