"""The standard processes (Mess3, RRXOR, Markov chains, Dirichlet-random HMMs) against their definitions.

Each oracle is written from the process's published or stated definition in plain NumPy (explicit
matrices, explicit hidden bits, explicit products of kernel entries), never from the library's T.
"""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from brute_force import all_sequences
from toymodels.processes import markov_chain, mess3, random_hmm, rrxor


def published_mess3(x: float, alpha: float) -> np.ndarray:
    """Mess3 as printed (Marzen and Crutchfield; Shai et al. 2024): T^(A), T^(B), T^(C)."""
    beta, y = (1 - alpha) / 2, 1 - 2 * x
    a, b = alpha, beta
    return np.array([
        [[a * y, b * x, b * x], [a * x, b * y, b * x], [a * x, b * x, b * y]],
        [[b * y, a * x, b * x], [b * x, a * y, b * x], [b * x, a * x, b * y]],
        [[b * y, b * x, a * x], [b * x, b * y, a * x], [b * x, b * x, a * y]],
    ])


@given(st.floats(0.0, 0.5), st.floats(0.0, 1.0))
def test_mess3_matches_published_matrices(x, alpha):
    """mess3(x, alpha) has exactly the published transition tensor and starts uniform (stationary)."""
    process = mess3(x, alpha)
    np.testing.assert_allclose(np.asarray(process.transitions), published_mess3(x, alpha), atol=1e-15)
    np.testing.assert_allclose(np.asarray(process.initial), np.full(3, 1 / 3), atol=1e-15)
    assert process.latents["state"] == ("A", "B", "C")


def test_mess3_bayes_loss_at_context_ten():
    """At the published parameters, the position-averaged Bayes loss over a context of 10 tokens is
    about 0.833 nats (the figure quoted for Shai et al.'s setting), above the entropy rate of about 0.79."""
    process = mess3(0.05, 0.85)
    tokens = all_sequences(3, 10)
    log_cond = np.asarray(process.log_conditionals(tokens))
    probs = np.exp(np.asarray(process.log_prob(tokens)))
    picked = np.take_along_axis(log_cond, tokens[..., None], axis=-1)[..., 0]
    average_loss = float(-(probs[:, None] * picked).sum(axis=0).mean())
    assert abs(average_loss - 0.833) < 0.005
    last_position = float(-(probs * picked[:, -1]).sum())
    assert 0.78 < last_position < average_loss


def rrxor_oracle(tokens) -> float:
    """P(x) for RRXOR from its definition: a stationary phase (each of the 3 positions of a triple with
    probability 1/3), fair bits b1, b2 per triple and b3 = b1 xor b2."""
    length = len(tokens)
    total = 0.0
    for phase in range(3):
        num_triples = (length + phase + 2) // 3
        for bits in itertools.product((0, 1), repeat=2 * num_triples):
            stream = []
            for i in range(num_triples):
                b1, b2 = bits[2 * i], bits[2 * i + 1]
                stream += [b1, b2, b1 ^ b2]
            if list(stream[phase : phase + length]) == list(tokens):
                total += (1 / 3) * 0.25**num_triples
    return total


def test_rrxor_matches_definition():
    """Every binary sequence of length 6 has the probability the RRXOR definition gives it."""
    process = rrxor()
    tokens = all_sequences(2, 6)
    expected = np.array([rrxor_oracle(x) for x in tokens])
    np.testing.assert_allclose(np.exp(np.asarray(process.log_prob(tokens))), expected, atol=1e-15)
    assert expected.sum() == pytest.approx(1.0)


def test_rrxor_phase_posterior_is_certain_after_a_violation_free_window():
    """Once a sequence rules out two of the three phases, the phase posterior is one-hot."""
    process = rrxor()
    tokens = np.array([[0, 1, 1, 1, 1, 0, 0, 0, 0]])  # only the phase starting at a first bit fits
    posterior = np.asarray(process.posterior(tokens, "phase"))[0, -1]
    assert rrxor_oracle(tokens[0]) > 0
    np.testing.assert_allclose(posterior, [1.0, 0.0, 0.0], atol=1e-12)


@st.composite
def markov_kernels(draw):
    vocab = draw(st.integers(1, 3))
    order = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kernel = rng.dirichlet(np.full(vocab, 0.5), size=(vocab,) * order)
    kernel[rng.random(kernel.shape) < 0.2] = 0.0  # structural zeros
    kernel[..., 0] += kernel.sum(axis=-1) == 0  # keep every row a distribution
    kernel /= kernel.sum(axis=-1, keepdims=True)
    initial = rng.dirichlet(np.ones(vocab**order)).reshape((vocab,) * order)
    return kernel, initial


@given(markov_kernels())
def test_markov_chain_log_prob_is_the_product_of_kernel_entries(kernel_and_initial):
    """log P(x) = log initial(x_1..x_k) + sum_t log kernel(x_{t-k}..x_{t-1}, x_t), exactly (-inf where
    a factor is zero)."""
    kernel, initial = kernel_and_initial
    vocab, order = kernel.shape[0], kernel.ndim - 1
    process = markov_chain(kernel, initial)
    length = 4
    tokens = all_sequences(vocab, length)
    expected = []
    for x in tokens:
        prob = initial[tuple(x[:order])]
        for t in range(order, length):
            prob *= kernel[tuple(x[t - order : t + 1])]
        expected.append(prob)
    got = np.exp(np.asarray(process.log_prob(tokens)))
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_markov_chain_defaults_to_a_uniform_start():
    """Without `initial`, the first k tokens are uniform."""
    process = markov_chain([[0.9, 0.1], [0.3, 0.7]])
    np.testing.assert_allclose(np.exp(np.asarray(process.log_prob(np.array([[0], [1]])))), [0.5, 0.5])


def test_random_hmm_is_deterministic_in_its_seed():
    """Same seed, same process; another seed, another process; rows are distributions."""
    a, b, c = random_hmm(3, 4, 0.5, seed=1), random_hmm(3, 4, 0.5, seed=1), random_hmm(3, 4, 0.5, seed=2)
    np.testing.assert_array_equal(np.asarray(a.transitions), np.asarray(b.transitions))
    assert not np.allclose(np.asarray(a.transitions), np.asarray(c.transitions))
    np.testing.assert_allclose(np.asarray(a.transitions).sum(axis=(0, 2)), 1.0, atol=1e-12)


def test_long_sequences_stay_finite():
    """10^4 tokens of each standard process: log-probabilities finite, no NaN anywhere."""
    for process in (mess3(), rrxor(), markov_chain([[1.0, 0.0], [0.0, 1.0]]), random_hmm(3, 4, 0.05, seed=3)):
        tokens = process.sample(jax.random.key(0), 2, 10_000)
        log_prob = np.asarray(process.log_prob(tokens))
        assert np.all(np.isfinite(log_prob))
        assert not np.any(np.isnan(np.asarray(process.belief_states(tokens))))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: mess3(x=0.6), "x"),
        (lambda: mess3(x=-0.1), "x"),
        (lambda: mess3(alpha=1.5), "alpha"),
        (lambda: markov_chain([0.5, 0.5]), "transition"),
        (lambda: markov_chain([[0.5, 0.6], [0.5, 0.5]]), "transition"),
        (lambda: markov_chain([[0.5, 0.5], [-0.5, 1.5]]), "transition"),
        (lambda: markov_chain([[0.5, 0.5], [0.5, 0.5]], initial=[0.5, 0.6]), "initial"),
        (lambda: markov_chain([[0.5, 0.5], [0.5, 0.5]], initial=[1.0]), "initial"),
        # Off by 1e-5 in float64: beyond rounding (np.isclose's default rtol once let it through, renormalised).
        (lambda: markov_chain([[0.5, 0.5], [0.5, 0.5]], initial=[0.5, 0.50001]), "initial"),
        (lambda: markov_chain([[0.5, 0.50001], [0.5, 0.5]]), "transition"),
        (lambda: random_hmm(0, 2), "vocab_size"),
        (lambda: random_hmm(2, 0), "num_states"),
        (lambda: random_hmm(2, 2, concentration=0.0), "concentration"),
        (lambda: random_hmm(2, 2, concentration=math.nan), "concentration"),
    ],
)
def test_bad_arguments_raise(build, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        build()
