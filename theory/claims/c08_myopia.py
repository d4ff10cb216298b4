"""C8: a transformer trained with full gradients is not myopic; it learns to compute early what only
later tokens need.

The claim is empirical (Wu, Morris, Levine 2024): train the same transformer twice, once with ordinary
gradients and once with *myopic* ones, where the loss at position t cannot change the computation at
positions s < t (stop-gradient on the keys and values of earlier positions; `TransformerConfig(myopic=
True)`). On a process whose late tokens depend on a fold of early ones (`precaching`), the myopic model
should lose more; on a Markov chain, where nothing is worth computing ahead, the two should tie.

This module holds the exact side of that experiment. For a predictor that knows the position t and
only the last w tokens, the best achievable loss is H(X_t | X_{t-w..t-1}); the Bayes predictor, which
sees everything, achieves H(X_t | X_<t). Their difference,

    early_t(w) = H(X_t | X_{t-w..t-1}) - H(X_t | X_<t) = I(X_t ; X_{<t-w} | X_{t-w..t-1}) >= 0,

is the loss (nats) that information older than w tokens is worth at position t. On `precaching(V, d)`
it is log V at every answer when w < d and 0 at every input for every w >= 0: the inputs are uniform
whatever came before, so no loss at an input position rewards computing the running fold there, and
only gradients from the answer's loss (exactly what myopic training removes) can build it. On a
first-order Markov chain early_t(w) = 0 for every w >= 1: the last token says all there is.

The transformer-side ingredients (myopic forward values equal normal ones; the loss at t has exactly
zero gradient into earlier positions' keys and values under myopia, nonzero without) are checked in the
claim's tests against `toymodels.transformer` (theory never imports the learning side).
"""

from __future__ import annotations

import numpy as np

from theory.claims.enumeration import (
    check_table,
    conditional_entropies,
    sequence_table,
    windowed_conditional_entropies,
)


def early_information(table, window: int) -> np.ndarray:
    """[L]: early_t(w) = H(X_t | X_{t-w..t-1}) - H(X_t | X_<t) for t = 0..L-1, from an exact
    distribution over V^L given as a table [V] * L (see the module docstring). Clipped at 0 against
    round-off: the exact quantity is a conditional mutual information, never negative."""
    array = check_table(table)
    gap = windowed_conditional_entropies(array, window) - conditional_entropies(array)
    return np.maximum(gap, 0.0)


def process_early_information(process, length: int, window: int) -> np.ndarray:
    """`early_information` of a process's length-L distribution (enumerated: V^L must stay small)."""
    return early_information(sequence_table(process, length), window)


def answer_positions(delay: int, length: int) -> np.ndarray:
    """[L] bool: which 0-based positions of `precaching(V, delay)` hold an answer (t mod (d+1) = d)."""
    if isinstance(delay, bool) or int(delay) != delay or delay < 1:
        raise ValueError(f"delay must be an int >= 1, got {delay!r}")
    if isinstance(length, bool) or int(length) != length or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    return np.arange(length) % (delay + 1) == delay


def precaching_early_information(vocab_size: int, delay: int, length: int, window: int) -> np.ndarray:
    """The closed form of early_t(w) on `precaching(V, d)`: log V at an answer when w < d (the window
    misses an input of the block, and a Latin-square fold of a uniform input is uniform), else 0."""
    if isinstance(window, bool) or int(window) != window or window < 0:
        raise ValueError(f"window must be an int >= 0, got {window!r}")
    answers = answer_positions(delay, length)
    return np.where(answers & (window < delay), np.log(vocab_size), 0.0)
