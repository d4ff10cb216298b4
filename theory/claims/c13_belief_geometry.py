"""C13: a good next-token predictor of a hidden Markov process must carry the belief state over its
hidden states, and for Mess3 that belief is linearly readable.

Seed 004 asks whether long context lets a predictor rebuild a recurrent state. Shai et al. 2024 answer
it on Mess3 (x = 0.05, alpha = 0.85): a linear map from a trained transformer's residual stream
recovers the Bayes-optimal belief over the three hidden states, and the decoded points draw the same
fractal in the simplex as the exact beliefs. This module holds the exact side of that reproduction:

- the probe targets are the belief states b_t = P(state after t tokens | x_1..x_t) of
  `HMMProcess.belief_states` (points of the probability simplex);
- the next-token distribution is a linear function of the belief, p(x_{t+1} = v | x_<=t) = (b_t E)_v
  with E[i, v] = sum_j T[v, i, j] (`next_token_map`). For Mess3 E = A C is invertible whenever
  x != 1/3 and alpha != 1/3, so there the belief is also a linear function of the next-token
  distribution and the "latent posterior vs next-token distribution" contrast between layers can only
  show up as a difference in how well each is decoded, not in what is decodable; for RRXOR E has rank 2
  with 5 states, and the next-token distribution does not determine the belief;
- the floor a trained model is measured against: the exact Bayes loss per position,
  H(X_t | X_<t), and its average over a context of n tokens, `optimal_loss` = H(X_1..X_n) / n (about
  0.833 nats for Mess3 at n = 10), above the entropy rate (about 0.79 nats), which it brackets between
  H(X_n | X_<n, S_0) and H(X_n | X_<n) for a process started stationary (Cover and Thomas, Thm 4.5.1).
"""

from __future__ import annotations

import numpy as np

from theory.claims.enumeration import conditional_entropies, sequence_table
from toymodels.processes.hmm import HMMProcess

SHAI_2024 = {"x": 0.05, "alpha": 0.85}  # the Mess3 parameters of the published result


def _check_context(context) -> int:
    if isinstance(context, bool) or int(context) != context or context < 1:
        raise ValueError(f"context must be an int >= 1, got {context!r}")
    return int(context)


def bayes_loss_per_position(process, context: int) -> np.ndarray:
    """[n]: the exact Bayes-optimal expected loss H(X_t | X_<t) at positions t = 0..n-1 (nats), by
    enumerating all V^n sequences with the process's own probabilities (V^n must stay small)."""
    return conditional_entropies(sequence_table(process, _check_context(context)))


def optimal_loss(process, context: int) -> float:
    """The position-averaged exact Bayes loss over a context of n tokens, (1/n) sum_t H(X_t | X_<t) =
    H(X_1..X_n) / n: the lowest mean cross-entropy any predictor can reach on length-n sequences."""
    return float(bayes_loss_per_position(process, context).mean())


def next_token_map(process: HMMProcess) -> np.ndarray:
    """E [S, V] with E[i, v] = sum_j T[v, i, j] = P(next token v | state i), so that the next-token
    distribution after any possible prefix is b_t @ E (b_t the belief state)."""
    if not isinstance(process, HMMProcess):
        raise ValueError(f"process must be an HMMProcess (it needs transitions), got {type(process).__name__}")
    return np.asarray(process.transitions, np.float64).sum(axis=2).T


def entropy_rate_bounds(process: HMMProcess, length: int) -> tuple[float, float]:
    """(H(X_n | X_<n, S_0), H(X_n | X_<n)) with n = `length`: lower and upper bounds on the entropy
    rate of an HMM started in its stationary distribution; the gap shrinks to 0 as n grows."""
    if not isinstance(process, HMMProcess):
        raise ValueError(f"process must be an HMMProcess, got {type(process).__name__}")
    n = _check_context(length)
    transitions = np.asarray(process.transitions, np.float64)
    initial = np.asarray(process.initial, np.float64)
    if not np.allclose(initial @ transitions.sum(axis=0), initial, atol=1e-9):
        raise ValueError("process must start in a stationary distribution (initial @ sum_v T[v] = initial) "
                         "for these to bound the entropy rate")
    upper = bayes_loss_per_position(process, n)[-1]
    lower = 0.0
    for state in np.flatnonzero(initial > 0):
        started = HMMProcess(transitions, np.eye(len(initial))[state])
        lower += initial[state] * bayes_loss_per_position(started, n)[-1]
    return float(lower), float(upper)
