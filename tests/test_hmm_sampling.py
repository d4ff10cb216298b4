"""HMMProcess.sample: exact ancestral sampling, checked by exact binomial tests against probabilities
enumerated by tests/brute_force.py, and the inverse-CDF draw at the edges of [0, 1).
"""

from __future__ import annotations

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import hmms_of_shapes, non_unifilar_hmm

from toymodels.processes.hmm import HMMProcess


# --------------------------------------------------------------------------------------------------
# Sampling: exact binomial tests against enumerated probabilities
# --------------------------------------------------------------------------------------------------

# Each example counts n samples over the K = V^L = 2^4 = 16 sequences and runs one exact two-sided
# binomial test per sequence. The thorough profile runs 500 examples, i.e. at most 500 * 16 = 8,000
# tests; with a family-wise false-failure rate of 1e-3 per run, Bonferroni gives a per-test level of
# 1e-3 / 8,000 = 1.25e-7. With n = 20,000 a sequence of probability 1/16 has standard deviation
# 0.0017 in frequency, so a deviation of about 0.009 (15% relative) is still detected (z = 5.3).
SAMPLE_N, SAMPLE_L = 20_000, 4
SAMPLE_ALPHA = 1e-3 / (500 * 2**4)


def sequence_index(x: np.ndarray, vocab_size: int) -> np.ndarray:
    """Lexicographic index (first token most significant) of each row, as in bf.all_sequences."""
    return x @ (vocab_size ** np.arange(x.shape[1] - 1, -1, -1))


# One shape only (V = 2 tokens, S = 3 states): the sampler compiles slowly (1-2 s per shape and
# structure on 2 cores), and what matters here is the variety of styles.
@given(hmms_of_shapes(shapes=((2, 3),)), st.integers(0, 2**32 - 1))
def test_sample_frequencies_match_exact_probabilities(hmm, seed):
    """The count of every x in V^4 among 20,000 samples is binomial(n, P(x)) with P by enumeration
    (exact binomial test, Bonferroni level over the thorough profile)."""
    transitions, initial = hmm
    vocab = transitions.shape[0]
    x = np.asarray(HMMProcess(transitions, initial).sample(jax.random.key(seed), SAMPLE_N, SAMPLE_L))
    assert x.shape == (SAMPLE_N, SAMPLE_L)
    assert np.issubdtype(x.dtype, np.integer)
    assert x.min() >= 0 and x.max() < vocab
    probs = bf.hmm_sequence_probs(transitions, initial, bf.all_sequences(vocab, SAMPLE_L))
    counts = np.bincount(sequence_index(x, vocab), minlength=vocab**SAMPLE_L)
    pvalues = bf.binomial_pvalues(counts, probs)
    assert pvalues.min() >= SAMPLE_ALPHA, f"counts {counts} vs expected {SAMPLE_N * probs}"


def test_sample_non_unifilar_hmm():
    """Sequence frequencies of a non-unifilar general HMM (L = 6, 100,000 samples) pass exact binomial
    tests at level 1e-6 / 64 each (Bonferroni over the 64 sequences; one fixed key); the same key gives
    the same samples, another key other samples."""
    transitions, initial = non_unifilar_hmm()
    process = HMMProcess(transitions, initial)
    assert process.structure == "general"
    n, length = 100_000, 6
    key = jax.random.key(20240607)
    x = np.asarray(process.sample(key, n, length))
    assert x.shape == (n, length)
    probs = bf.hmm_sequence_probs(transitions, initial, bf.all_sequences(2, length))
    counts = np.bincount(sequence_index(x, 2), minlength=2**length)
    assert bf.binomial_pvalues(counts, probs).min() >= 1e-6 / 2**length
    np.testing.assert_array_equal(x, np.asarray(process.sample(key, n, length)))
    assert not np.array_equal(x, np.asarray(process.sample(jax.random.key(1), n, length)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inverse_cdf_never_draws_a_zero_probability_entry(dtype):
    """The sampler's inverse-CDF draw at the edges of [0, 1): zeros before, between and after the
    positive entries, and a float32 row whose running sum rounds away from 1, are never chosen."""
    from toymodels.processes.hmm import _inverse_cdf, _last_positive

    rows = np.zeros((3, 12), dtype)
    rows[0, [1, 3]] = 0.3, 0.7
    rows[1, :10] = 0.1
    rows[2, 5] = 1.0
    edges = np.array([0.0, np.finfo(dtype).tiny, 0.3, 0.5, np.nextafter(dtype(1), dtype(0))], dtype)
    for row in range(3):
        for u in edges:
            cumulative = jnp.cumsum(jnp.asarray(rows[row:row + 1]), axis=-1)
            index = int(_inverse_cdf(cumulative, _last_positive(jnp.asarray(rows[row:row + 1])), jnp.asarray([u]))[0])
            assert rows[row, index] > 0, (row, u, index)


def test_sample_length_zero():
    """sample(key, n, 0) gives an integer array of shape [n, 0]."""
    x = np.asarray(HMMProcess(*non_unifilar_hmm()).sample(jax.random.key(0), 5, 0))
    assert x.shape == (5, 0) and np.issubdtype(x.dtype, np.integer)


# --------------------------------------------------------------------------------------------------
# The parallel-in-time sampler (accelerators) gives the scan's tokens exactly
# --------------------------------------------------------------------------------------------------


@given(hmms_of_shapes(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_parallel_sampler_gives_the_scans_tokens(hmm, dtype, seed):
    """Composing each step's all-states draw (associative_scan) reproduces the scan token for token,
    also for sparse, deterministic and absorbing processes and in float32."""
    from toymodels.processes.hmm import _sample

    transitions, initial = (jnp.asarray(a, dtype) for a in hmm)
    key = jax.random.key(seed)
    scanned = _sample(transitions, initial, key, 4, 9)
    parallel = _sample(transitions, initial, key, 4, 9, parallel=True)
    np.testing.assert_array_equal(np.asarray(parallel), np.asarray(scanned))


def test_parallel_sampler_on_a_long_batch():
    """The benchmark's shape (64 x 64, 8 states, 16 tokens) and a 1,000-token run agree with the scan."""
    from toymodels.processes import random_hmm
    from toymodels.processes.hmm import _sample

    process = random_hmm(16, 8, seed=0)
    for num_sequences, length in ((64, 64), (2, 1000)):
        key = jax.random.key(length)
        scanned = _sample(process.transitions, process.initial, key, num_sequences, length)
        parallel = _sample(process.transitions, process.initial, key, num_sequences, length, parallel=True)
        np.testing.assert_array_equal(np.asarray(parallel), np.asarray(scanned))


def test_parallel_sampling_is_chosen_on_accelerators_for_bounded_sizes(monkeypatch):
    from toymodels.processes import hmm

    monkeypatch.setattr(hmm.jax, "default_backend", lambda: "cpu")
    assert not hmm._parallel_sampling(8, 16, 64, 64)
    monkeypatch.setattr(hmm.jax, "default_backend", lambda: "gpu")
    assert hmm._parallel_sampling(8, 16, 64, 64)
    assert not hmm._parallel_sampling(8, 16, 64, 0)
    assert not hmm._parallel_sampling(32, 16, 10_000, 1_000)  # 1.6e11 compares: the scan instead
