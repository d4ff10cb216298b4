"""Exact distributions over V^L by enumeration, and the entropies the claims read off them.

Several claims need a process's whole length-L distribution as an array (C8's early-information gaps,
C9's persona mixtures and RL optima, C13's optimal loss). `sequence_table` scores every sequence of V^L
with the process's own exact log-probabilities, in fixed-size chunks so that one compilation serves
every chunk. The entropy helpers take such a table, shape [V] * L, and never call the process again.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from toymodels.predictors import sequence_log_prob

MAX_SEQUENCES = 2**22  # 4M sequences: the largest table worth building on a laptop
CHUNK = 2**16


def all_sequences(vocab_size: int, length: int) -> np.ndarray:
    """Every sequence of V^L in lexicographic order (x_1 most significant), shape [V^L, L], int32 (one empty
    sequence for L = 0)."""
    if isinstance(vocab_size, bool) or int(vocab_size) != vocab_size or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    if isinstance(length, bool) or int(length) != length or length < 0:
        raise ValueError(f"length must be a non-negative int, got {length!r}")
    if vocab_size**length > MAX_SEQUENCES:
        raise ValueError(
            f"vocab_size**length = {vocab_size}**{length} exceeds {MAX_SEQUENCES} sequences; use a shorter length"
        )
    index = np.arange(vocab_size**length, dtype=np.int64)
    powers = vocab_size ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return ((index[:, None] // powers) % vocab_size).astype(np.int32)


def sequence_table(process, length: int) -> np.ndarray:
    """P(x_1..x_L) for every x in V^L, as a float64 array of shape [V] * L: exp of the process's exact
    `log_prob` (any other Predictor works too, by the chain rule over its conditionals)."""
    vocab = int(process.vocab_size)
    sequences = all_sequences(vocab, length)
    total = sequences.shape[0]
    chunk = min(CHUNK, total)
    # A process's own log_prob skips the conditionals; any other predictor goes by the chain rule.
    score = process.log_prob if callable(getattr(process, "log_prob", None)) else partial(sequence_log_prob, process)
    out = np.empty(total)
    for start in range(0, total, chunk):
        block = sequences[start : start + chunk]
        rows = block.shape[0]
        if rows < chunk:  # pad the last chunk so that every call has the same shape (one compilation)
            block = np.concatenate([block, np.zeros((chunk - rows, length), np.int32)])
        out[start : start + rows] = np.exp(np.asarray(score(block), np.float64))[:rows]
    return out.reshape((vocab,) * length)


def check_table(table, name: str = "table") -> np.ndarray:
    """A float64 copy of a distribution over V^L given with shape [V] * L (validated)."""
    array = np.asarray(table, np.float64)
    if array.ndim < 1 or len(set(array.shape)) != 1:
        raise ValueError(f"{name} must have shape [V] * L, got {array.shape}")
    if np.any(~np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must hold finite non-negative probabilities")
    if abs(array.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got {array.sum()}")
    return array


def entropy(probs) -> float:
    """Shannon entropy in nats of any array of probabilities (0 log 0 = 0)."""
    p = np.asarray(probs, np.float64).reshape(-1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def marginal(table, positions) -> np.ndarray:
    """The joint marginal of the tokens at `positions` (increasing 0-based indices) of a table [V] * L."""
    array = np.asarray(table, np.float64)
    keep = set(int(i) for i in positions)
    return array.sum(axis=tuple(i for i in range(array.ndim) if i not in keep))


def conditional_entropies(table) -> np.ndarray:
    """[L]: H(X_t | X_<t) for t = 0..L-1 (nats), the Bayes predictor's expected loss at each position:
    differences of block entropies H(X_0..X_t) - H(X_0..X_{t-1})."""
    array = check_table(table)
    blocks = [0.0] + [entropy(marginal(array, range(t + 1))) for t in range(array.ndim)]
    return np.diff(blocks)


def windowed_conditional_entropies(table, window: int) -> np.ndarray:
    """[L]: H(X_t | X_{t-w}..X_{t-1}) for t = 0..L-1 (nats), the expected loss of the best predictor that
    knows the position t and only the last w = `window` tokens (fewer at t < w; w = 0: none)."""
    array = check_table(table)
    if isinstance(window, bool) or int(window) != window or window < 0:
        raise ValueError(f"window must be an int >= 0, got {window!r}")
    out = np.zeros(array.ndim)
    for t in range(array.ndim):
        start = max(0, t - int(window))
        with_target = entropy(marginal(array, range(start, t + 1)))
        context = entropy(marginal(array, range(start, t))) if t > start else 0.0
        out[t] = with_target - context
    return out
