"""Standard processes from the computational-mechanics and interpretability literature.

- `mess3(x, alpha)`: Marzen and Crutchfield's three-state, three-symbol process, with the parameters of
  Shai et al. 2024 (x = 0.05, alpha = 0.85) as defaults; its belief states form a fractal in the simplex.
- `rrxor()`: random bit, random bit, their XOR, repeated.
- `markov_chain(transition, initial)`: an observed Markov chain of order 1, or of order k given a kernel
  over the last k tokens.
- `random_hmm(vocab_size, num_states, concentration, seed)`: Dirichlet-random edge-emitting HMMs.

Every process starts from a stated distribution (stationary where the literature does).
"""

from __future__ import annotations

import itertools

import numpy as np

from toymodels.processes._validation import as_probabilities, device_dtype, sum_tolerance
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import register_family


def _stationary(moves: np.ndarray) -> np.ndarray:
    """The stationary distribution of a row-stochastic matrix (the eigenvector for eigenvalue 1)."""
    values, vectors = np.linalg.eig(moves.T)
    vector = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    return vector / vector.sum()


@register_family("mess3", example=dict(x=0.05, alpha=0.85))
def mess3(x: float = 0.05, alpha: float = 0.85) -> HMMProcess:
    """Mess3: stay in the hidden state with probability 1 - 2x (else move to each other state with x),
    then emit the new state's own symbol with probability alpha (each other symbol with (1-alpha)/2).

    T[v, i, j] = A[i, j] C[j, v]; the latent "state" is the hidden state; starts stationary (uniform).
    """
    x, alpha = float(x), float(alpha)
    if not 0 <= x <= 0.5:
        raise ValueError(f"x must lie in [0, 0.5] (1 - 2x is the probability of staying), got {x}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    # Diagonal and off-diagonal entries set directly: a diagonal built as the off-diagonal value plus a
    # difference, (1 - alpha) / 2 + (alpha - (1 - alpha) / 2), is only right to 5e-17 absolute, which for
    # alpha = 1e-6 is 5e-11 relative and moved beliefs by 1e-12.
    same = np.eye(3, dtype=bool)
    moves = np.where(same, 1 - 2 * x, x)
    emits = np.where(same, alpha, (1 - alpha) / 2)
    transitions = np.einsum("ij,jv->vij", moves, emits)
    return HMMProcess(
        transitions,
        np.full(3, 1 / 3),
        latents={"state": (("A", "B", "C"), np.arange(3))},
        info={"family": "mess3"},
    )


@register_family("rrxor", example={})
def rrxor() -> HMMProcess:
    """Random-random-XOR: two fair bits, then their XOR, repeated; starts at the stationary phase mix.

    Hidden states: 0 start of a triple, 1/2 after a first bit 0/1, 3/4 when the XOR to emit is 0/1.
    The latent "phase" is the position within the triple.
    """
    t = np.zeros((2, 5, 5))
    t[0, 0, 1] = t[1, 0, 2] = 0.5  # first bit
    t[0, 1, 3] = t[1, 1, 4] = 0.5  # second bit after a 0: XOR equals the second bit
    t[0, 2, 4] = t[1, 2, 3] = 0.5  # second bit after a 1: XOR flips it
    t[0, 3, 0] = t[1, 4, 0] = 1.0  # the XOR itself
    initial = _stationary(t.sum(axis=0))
    return HMMProcess(
        t,
        initial,
        latents={
            "state": (tuple(f"s{i}" for i in range(5)), np.arange(5)),
            "phase": (("bit1", "bit2", "xor"), np.array([0, 1, 1, 2, 2])),
        },
        info={"family": "rrxor"},
    )


@register_family("markov_chain", example=dict(transition=[[0.9, 0.1], [0.3, 0.7]]))
def markov_chain(transition, initial=None) -> HMMProcess:
    """An observed Markov chain of order k over V tokens.

    Args:
        transition: shape [V] * (k + 1); transition[h_1, ..., h_k, v] = P(next = v | last k tokens h).
        initial: the distribution of the first k tokens, shape [V] * k (default: uniform).

    Hidden states are the histories of length 0..k (the chain is observed, so beliefs are one-hot once
    k tokens are seen); the latent "history" names them.
    """
    kernel = np.asarray(transition, dtype=np.float64)
    if kernel.ndim < 2 or len(set(kernel.shape)) != 1:
        raise ValueError(f"transition must have shape [V] * (k + 1) with k >= 1, got {kernel.shape}")
    as_probabilities(kernel.reshape(-1, kernel.shape[-1]), "transition", ndim=2)
    vocab, order = kernel.shape[0], kernel.ndim - 1
    # Within rounding of the dtype given (np.isclose's default rtol of 1e-5 let real errors through, and
    # `initial` was then silently renormalised).
    tolerance = sum_tolerance(device_dtype(np.asarray(transition)))
    if not np.allclose(kernel.sum(axis=-1), 1.0, rtol=0, atol=tolerance):
        raise ValueError(f"transition: each row transition[h, :] must sum to 1 (within {tolerance:g})")
    start = np.full((vocab,) * order, vocab**-order) if initial is None else np.asarray(initial, np.float64)
    if start.shape != (vocab,) * order:
        raise ValueError(f"initial must have shape {(vocab,) * order} (the first k tokens), got {start.shape}")
    as_probabilities(start.reshape(1, -1), "initial", ndim=2)
    if not np.isclose(start.sum(), 1.0, rtol=0, atol=tolerance):
        raise ValueError(f"initial must sum to 1 (within {tolerance:g}), got {start.sum()!r}")

    histories = [h for j in range(order + 1) for h in itertools.product(range(vocab), repeat=j)]
    index = {h: i for i, h in enumerate(histories)}
    t = np.zeros((vocab, len(histories), len(histories)))
    for h in histories:
        if len(h) < order:
            # Conditionals of the first k tokens from the marginals of `initial`.
            marginal = start.sum(axis=tuple(range(len(h) + 1, order))) if len(h) + 1 < order else start
            here = marginal[h]
            total = here.sum()
            probs = here / total if total > 0 else np.full(vocab, 1 / vocab)
            for v in range(vocab):
                t[v, index[h], index[h + (v,)]] = probs[v]
        else:
            for v in range(vocab):
                t[v, index[h], index[(h + (v,))[-order:]]] = kernel[h][v]
    initial_state = np.zeros(len(histories))
    initial_state[index[()]] = 1.0
    labels = tuple("".join(map(str, h)) or "start" for h in histories)
    return HMMProcess(
        t,
        initial_state,
        latents={"history": (labels, np.arange(len(histories)))},
        info={"family": "markov_chain", "order": order},
    )


@register_family("random_hmm", example=dict(vocab_size=3, num_states=4, concentration=1.0, seed=0))
def random_hmm(vocab_size: int, num_states: int, concentration: float = 1.0, seed: int = 0) -> HMMProcess:
    """A Dirichlet-random edge-emitting HMM: each row T[:, i, :] ~ Dirichlet(concentration) over the
    V * S (token, next state) pairs, the initial distribution ~ Dirichlet(1). Small concentrations give
    near-deterministic, sparse-looking processes. Deterministic in `seed`."""
    if int(vocab_size) != vocab_size or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size}")
    if int(num_states) != num_states or num_states < 1:
        raise ValueError(f"num_states must be a positive int, got {num_states}")
    if not (np.isfinite(concentration) and concentration > 0):
        raise ValueError(f"concentration must be positive, got {concentration}")
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.full(vocab_size * num_states, float(concentration)), size=num_states)
    # Tiny concentrations can round a whole row to zeros but one; renormalise the rounding only.
    joint = joint / joint.sum(axis=1, keepdims=True)
    transitions = joint.reshape(num_states, vocab_size, num_states).transpose(1, 0, 2)
    initial = rng.dirichlet(np.ones(num_states))
    return HMMProcess(
        transitions,
        initial,
        info={"family": "random_hmm"},
    )
