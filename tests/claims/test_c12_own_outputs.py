"""C12: a model refitted on its own samples loses support it can never regain.

For a categorical model refitted by maximum likelihood on N of its own samples, a token that reaches
probability zero is never produced again and the refitted probabilities are unbiased (a martingale)
while they drift to a single token. Fresh samples make loss non-absorbing but any generation can still
miss a token; mixing in the true distribution, or smoothing, keeps full support with a bounded KL. For
a Markov chain the count-ratio MLE is biased.
"""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binom, multinomial

from theory.claims.c12_own_outputs import (
    forward_kl_categorical,
    lost_token_stays_lost,
    markov_mle,
    refit_loop,
    sample_counts,
    smoothed_mle,
    smoothing_kl_bound,
)

GENERATIONS = 12
# Sample sizes are static (they fix array shapes), so examples draw from a few to share compilations.
SAMPLE_SIZES = st.sampled_from([1, 7, 30])


@st.composite
def categoricals(draw, max_vocab=5):
    vocab = draw(st.integers(2, max_vocab))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    probs = rng.dirichlet(np.full(vocab, 0.8))
    if draw(st.booleans()):
        probs[rng.integers(vocab)] = 0.0  # a token already lost
        probs = probs / probs.sum() if probs.sum() > 0 else np.eye(vocab)[0]
    return probs


@given(categoricals(), SAMPLE_SIZES, st.integers(0, 2**32 - 1))
def test_lost_support_is_never_regained(probs, num_samples, seed):
    """Without fresh data the support only shrinks: a zero stays zero in every later generation, and the
    number of surviving tokens never increases."""
    trajectory = np.asarray(refit_loop(jax.random.key(seed), probs, num_samples, GENERATIONS))
    alive = trajectory > 0
    assert np.all(alive[1:] <= alive[:-1])
    assert np.all(np.diff(alive.sum(axis=1)) <= 0)


@given(categoricals(max_vocab=3), st.integers(1, 6))
def test_refit_is_a_martingale_by_enumeration(probs, num_samples):
    """E[p_{k+1} | p_k] = p_k, summing the empirical frequencies of every count vector weighted by its
    multinomial probability (scipy's pmf, an independent oracle)."""
    vocab = len(probs)
    expected = np.zeros(vocab)
    for counts in itertools.product(range(num_samples + 1), repeat=vocab):
        if sum(counts) == num_samples:
            weight = multinomial.pmf(counts, num_samples, probs)
            expected += weight * np.asarray(smoothed_mle(np.asarray(counts, float)))
    np.testing.assert_allclose(expected, probs, atol=1e-12)


def test_refit_mean_matches_the_previous_model_by_simulation():
    """The library's sampled refit has mean p_k: over 4000 independent refits each coordinate lies within
    5 standard errors (one fixed case, so no union bound is needed)."""
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    keys = jax.random.split(jax.random.key(0), 4000)
    fits = np.asarray(jax.vmap(lambda k: smoothed_mle(sample_counts(k, jax.numpy.asarray(probs), 20)))(keys))
    stderr = np.sqrt(probs * (1 - probs) / 20 / len(keys))
    assert np.all(np.abs(fits.mean(axis=0) - probs) <= 5 * stderr)


def test_refitting_collapses_to_one_token():
    """Repeated refits fix on a single token: after enough generations every run has one survivor and
    infinite forward KL to the truth (with N = 10 the expected fixation time is a few dozen generations)."""
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    runs = [np.asarray(refit_loop(jax.random.key(seed), probs, 10, 400)) for seed in range(5)]
    for trajectory in runs:
        assert (trajectory[-1] > 0).sum() == 1
        assert forward_kl_categorical(probs, trajectory[-1]) == math.inf


@given(st.floats(0.01, 0.9), st.floats(0.05, 1.0), st.integers(1, 200))
def test_lost_token_stays_lost_with_the_binomial_zero_probability(p_i, alpha, num_samples):
    """With round(alpha N) fresh samples a lost token is drawn zero times with probability
    (1 - p_i)^(alpha N), the binomial probability of zero successes (scipy's pmf as the oracle)."""
    fresh = round(alpha * num_samples)
    assert lost_token_stays_lost(p_i, alpha, num_samples) == pytest.approx(binom.pmf(0, fresh, p_i), rel=1e-9)


def test_refit_loop_is_a_martingale_and_keeps_a_lost_token_lost_at_the_binomial_rate():
    """The loop itself, not only its parts: (a) one generation from p has mean p (4000 independent
    loops, each coordinate within 5 standard errors); (b) once the model has lost token 2, its own
    samples never produce it, so it stays lost at the next generation exactly when the round(alpha N)
    fresh samples miss it, with probability (1 - p_2)^round(alpha N): the fraction over every (lost at k)
    -> (k + 1) transition of 300 loops lies within 5 binomial standard errors of it (given the past,
    each such transition is an independent Bernoulli trial with that probability)."""
    probs = np.array([0.6, 0.3, 0.1])
    first = np.array([np.asarray(refit_loop(jax.random.key(seed), probs, 20, 1))[1] for seed in range(4000)])
    assert np.all(np.abs(first.mean(axis=0) - probs) <= 5 * np.sqrt(probs * (1 - probs) / 20 / len(first)))

    num_samples, alpha = 10, 0.3
    stays = []
    for seed in range(300):
        lost = np.asarray(refit_loop(jax.random.key(10_000 + seed), probs, num_samples, 60, alpha=alpha))[:, 2] == 0
        stays.extend(lost[1:][lost[:-1]])
    expected = 0.9**3  # (1 - p_2)^round(alpha N), by hand: round(0.3 * 10) = 3 fresh draws
    assert lost_token_stays_lost(0.1, alpha, num_samples) == pytest.approx(expected) and len(stays) > 500
    assert abs(np.mean(stays) - expected) <= 5 * math.sqrt(expected * (1 - expected) / len(stays))


def test_fresh_samples_regain_support_but_can_miss_a_token():
    """With fresh samples a lost token comes back, yet some generation can still lack a token, where
    the forward KL is infinite."""
    probs = np.array([0.7, 0.25, 0.05])
    trajectory = np.asarray(refit_loop(jax.random.key(1), probs, 20, 200, alpha=0.2))
    missing = trajectory[:, 2] == 0
    assert missing.any() and (~missing[1:] & missing[:-1]).any()  # lost, then regained
    assert forward_kl_categorical(probs, trajectory[missing][0]) == math.inf


@given(categoricals(), st.floats(0.01, 1.0), SAMPLE_SIZES, st.integers(0, 2**32 - 1))
def test_distribution_mixing_keeps_support_with_bounded_kl(probs, alpha, num_samples, seed):
    """p_{k+1} = alpha p + (1 - alpha) p_hat keeps every token of p and KL(p || p_k) <= log(1 / alpha)."""
    trajectory = np.asarray(refit_loop(jax.random.key(seed), probs, num_samples, GENERATIONS, alpha=alpha, mixing="distribution"))
    assert np.all(trajectory[:, probs > 0] > 0)
    assert np.all(forward_kl_categorical(probs, trajectory) <= math.log(1 / alpha) + 1e-12)


@given(categoricals(), st.floats(0.01, 5.0), SAMPLE_SIZES, st.integers(0, 2**32 - 1))
def test_smoothing_keeps_support_with_bounded_kl(probs, smoothing, num_samples, seed):
    """Additive smoothing keeps every token, and KL(p || p_k) <= log((N + V lambda) / lambda)."""
    trajectory = np.asarray(refit_loop(jax.random.key(seed), probs, num_samples, GENERATIONS, smoothing=smoothing))
    assert np.all(trajectory[1:] > 0)
    bound = smoothing_kl_bound(num_samples, len(probs), smoothing)
    assert np.all(forward_kl_categorical(probs, trajectory[1:]) <= bound + 1e-12)


def markov_mle_oracle(sequence, vocab, previous):
    """Count ratios written out with dictionaries, for one sequence."""
    counts, totals = {}, {}
    for a, b in zip(sequence[:-1], sequence[1:]):
        counts[(a, b)] = counts.get((a, b), 0) + 1
        totals[a] = totals.get(a, 0) + 1
    return np.array([[counts.get((i, j), 0) / totals[i] if i in totals else previous[i][j] for j in range(vocab)]
                     for i in range(vocab)])


def test_markov_mle_is_biased_and_keeps_unvisited_rows():
    """The expected transition MLE over every length-4 path of a 2-state chain (exact enumeration)
    differs from the true kernel: a ratio of random counts is biased, so there is no martingale. Rows never
    visited keep their previous values, which makes lost transitions absorbing."""
    kernel = np.array([[0.9, 0.1], [0.4, 0.6]])
    start = np.array([0.5, 0.5])
    expected = np.zeros((2, 2))
    for path in itertools.product(range(2), repeat=4):
        prob = start[path[0]] * np.prod([kernel[a, b] for a, b in zip(path[:-1], path[1:])])
        fitted = markov_mle(np.array([path]), 2, previous=kernel)
        np.testing.assert_allclose(fitted, markov_mle_oracle(path, 2, kernel))
        expected += prob * fitted
    assert np.max(np.abs(expected - kernel)) > 1e-3
    # State 1 never visited: with the previous kernel its lost transition 1 -> 0 stays lost; without
    # one the row falls back to uniform and the transition comes back.
    lost = np.array([[0.9, 0.1], [0.0, 1.0]])
    assert markov_mle(np.array([[0, 0, 0]]), 2, previous=lost)[1].tolist() == [0.0, 1.0]
    assert markov_mle(np.array([[0, 0, 0]]), 2)[1].tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: refit_loop(jax.random.key(0), [0.5, 0.6], 10, 3), "true_probs"),
        (lambda: refit_loop(jax.random.key(0), [0.5, 0.5], 0, 3), "num_samples"),
        (lambda: refit_loop(jax.random.key(0), [0.5, 0.5], 10, 0), "generations"),
        (lambda: refit_loop(jax.random.key(0), [0.5, 0.5], 10, 3, alpha=1.5), "alpha"),
        (lambda: refit_loop(jax.random.key(0), [0.5, 0.5], 10, 3, mixing="both"), "mixing"),
        (lambda: refit_loop(jax.random.key(0), [0.5, 0.5], 10, 3, smoothing=-1.0), "smoothing"),
        (lambda: markov_mle(np.array([0, 1]), 2), "sequences"),
        (lambda: markov_mle(np.array([[0, 2]]), 2), "sequences"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
