"""log P(x) of an edge-emitting HMM by the CPU kernel hmm_log_prob.cc (see its header for the method).

`available(dtype)` says whether the kernel can run here (built, loaded and registered with XLA); the
filter in toymodels/processes/hmm.py uses it on the CPU and its XLA recursion elsewhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from toymodels.native import build

# XLA custom-call target and library symbol per dtype.
_TARGETS = {
    np.dtype(np.float32): ("toymodels_hmm_log_prob_f32", "HmmLogProbF32"),
    np.dtype(np.float64): ("toymodels_hmm_log_prob_f64", "HmmLogProbF64"),
}
# kVectorBytes in the kernel: the state axis is padded with zeros to a whole number of vectors.
VECTOR_BYTES = 64


@functools.cache
def _registered() -> bool:
    library = build.load("hmm_log_prob")
    if library is None:
        return False
    for target, symbol in _TARGETS.values():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    return True


def available(dtype) -> bool:
    return np.dtype(dtype) in _TARGETS and _registered()


# The kernel's steps, in the order of its enum Step (hmm_log_prob.cc); named as HMMProcess.structure.
STEPS = ("emit_then_move", "move_then_emit", "general")


def log_prob(step: str, emissions, matrices, initial, tokens):
    """log P(x) [B] for the filter step u <- (u * E[x]) A ("emit_then_move"), (u A) * E[x]
    ("move_then_emit") or u T[x] ("general"), where emissions E is [V, S] (read for its V alone by GENERAL), matrices is A
    [1, S, S] or T [V, S, S], initial [S] and tokens [B, L] (an id outside [0, V) is an impossible
    token). Needs `available(dtype)`."""
    dtype = np.dtype(initial.dtype)
    num_states, vocab = initial.shape[-1], emissions.shape[-2]
    padding = -num_states % (VECTOR_BYTES // dtype.itemsize)

    def pad(array):
        return jnp.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, padding)])

    ids = jnp.where((tokens >= 0) & (tokens < vocab), tokens, -1).astype(jnp.int32)
    call = jax.ffi.ffi_call(_TARGETS[dtype][0], jax.ShapeDtypeStruct(tokens.shape[:-1], dtype),
                            vmap_method="broadcast_all")
    return call(pad(emissions), pad(matrices), pad(initial), ids, step=np.int32(STEPS.index(step)))
