"""Hypothesis strategies for random process instances, built as plain NumPy arrays.

Hypothesis draws small integers and a seed; the arrays come from a NumPy generator seeded with it, so
shapes stay bounded (jit caches stay small) and examples shrink to small sizes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

STYLES = ("dense", "sparse", "near_deterministic", "deterministic", "emit_then_move", "move_then_emit")


def _rows(rng: np.random.Generator, rows: int, width: int, style: str) -> np.ndarray:
    """`rows` probability vectors of length `width` in the given style (each with a nonzero entry)."""
    if style == "deterministic":
        out = np.zeros((rows, width))
        out[np.arange(rows), rng.integers(width, size=rows)] = 1.0
        return out
    out = rng.dirichlet(np.full(width, 0.7), size=rows)
    if style == "sparse":
        mask = rng.random((rows, width)) < 0.5
        mask[np.arange(rows), rng.integers(width, size=rows)] = True
        out = out * mask
    elif style == "near_deterministic":
        out = 1e-7 * out
        out[np.arange(rows), rng.integers(width, size=rows)] += 1.0
    return out / out.sum(axis=1, keepdims=True)


def random_hmm(rng: np.random.Generator, vocab_size: int, num_states: int, style: str):
    """(T [V, S, S], pi [S]) of an edge-emitting HMM in `style`."""
    if style == "emit_then_move":
        emit = _rows(rng, num_states, vocab_size, "sparse")
        move = _rows(rng, num_states, num_states, "dense")
        transitions = np.einsum("iv,ij->vij", emit, move)
    elif style == "move_then_emit":
        move = _rows(rng, num_states, num_states, "sparse")
        emit = _rows(rng, num_states, vocab_size, "dense")
        transitions = np.einsum("ij,jv->vij", move, emit)
    else:
        joint = _rows(rng, num_states, vocab_size * num_states, style)  # [i, (v, j)]
        transitions = joint.reshape(num_states, vocab_size, num_states).transpose(1, 0, 2)
    initial = _rows(rng, 1, num_states, "sparse" if style == "sparse" else "dense")[0]
    return transitions, initial


@st.composite
def hmms(draw, max_vocab: int = 3, max_states: int = 3, min_vocab: int = 1, styles=STYLES):
    """A random edge-emitting HMM as arrays: (transitions, initial)."""
    vocab_size = draw(st.integers(min_vocab, max_vocab))
    num_states = draw(st.integers(1, max_states))
    style = draw(st.sampled_from(styles))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_hmm(np.random.default_rng(seed), vocab_size, num_states, style)


@st.composite
def hmm_pairs(draw, max_vocab: int = 3, max_states: int = 3):
    """Two random HMMs over the same vocabulary: a data process and a predictor."""
    vocab_size = draw(st.integers(1, max_vocab))
    out = []
    for _ in range(2):
        num_states = draw(st.integers(1, max_states))
        style = draw(st.sampled_from(STYLES))
        seed = draw(st.integers(0, 2**32 - 1))
        out.append(random_hmm(np.random.default_rng(seed), vocab_size, num_states, style))
    return tuple(out)


def embed_hmm(transitions, initial, vocab_size: int = 3, num_states: int = 5):
    """The same process in fixed array sizes [vocab_size, num_states, num_states].

    Tokens V..vocab_size-1 get probability zero; states S..num_states-1 are unreachable (initial weight 0
    and no edge in from the real states). The last two form a gadget (a: 0 -> a or 1 -> b, half each;
    b: 1 -> a) that is neither emit-then-move nor move-then-emit, so HMMProcess always takes its general
    structure: every embedded HMM of these sizes shares one jit cache entry, and Hypothesis examples do
    not recompile. Needs vocab_size >= 2 and num_states >= S + 2.
    """
    t = np.asarray(transitions, np.float64)
    vocab, states, _ = t.shape
    if vocab > vocab_size or vocab_size < 2 or states + 2 > num_states:
        raise ValueError(f"cannot embed V={vocab}, S={states} into V={vocab_size}, S={num_states}")
    out = np.zeros((vocab_size, num_states, num_states))
    out[:vocab, :states, :states] = t
    for k in range(states, num_states - 2):
        out[0, k, k] = 1.0
    a, b = num_states - 2, num_states - 1
    out[0, a, a] = 0.5
    out[1, a, b] = 0.5
    out[1, b, a] = 1.0
    pi = np.zeros(num_states)
    pi[:states] = np.asarray(initial, np.float64)
    return out, pi


# A few fixed shapes (V, S) covering the regimes of the exact core: a single token, a single state (an
# i.i.d. process), fewer tokens than states, more tokens than states. Drawing from a short list instead of
# every V, S <= 3 keeps jit caches small (each new shape and structure is a new compilation).
CORE_SHAPES = ((1, 2), (2, 1), (2, 3), (3, 2))


@st.composite
def hmms_of_shapes(draw, shapes=CORE_SHAPES, styles=STYLES):
    """A random edge-emitting HMM (transitions, initial) whose (V, S) is one of `shapes`."""
    vocab_size, num_states = draw(st.sampled_from(shapes))
    style = draw(st.sampled_from(styles))
    seed = draw(st.integers(0, 2**32 - 1))
    return random_hmm(np.random.default_rng(seed), vocab_size, num_states, style)
def non_unifilar_hmm():
    """Two states; from state 0, token 0 leads to state 0 or to state 1 (the token does not determine
    the next state), and the token and the move are dependent (a general-structure HMM)."""
    transitions = np.zeros((2, 2, 2))
    transitions[0, 0, 0], transitions[0, 0, 1], transitions[1, 0, 0] = 0.3, 0.4, 0.3
    transitions[1, 1, 0], transitions[0, 1, 1] = 0.5, 0.5
    return transitions, np.array([0.8, 0.2])


