"""Tests of theory/divergence.py: forward_kl, generation_kl and total_variation against brute force.

Oracles (tests/brute_force.py, tests/brute_force_pq.py) sum over every sequence of W^n: sequence KL
sum_x P log(P/Q), 0.5 sum_x |P - Q|, prefix marginals for the per-position TV, and the expected
next-token KL E_{x<t ~ A} KL(a(.|x<t) || b(.|x<t)) for each chain-rule term, with probabilities from
path enumeration and transforms from their definitions. Random HMMs are embedded in one array shape
(`embed_hmm`) so that Hypothesis examples share compilations.

Monte Carlo tolerance: k = 5 standard errors, where the standard error is the larger of the one the
library reports and the exact sigma / sqrt(N) (sigma from enumeration; the reported one is 0 when every
sample misses a rare prefix, the exact one is too small when a rare prefix happens to be drawn). A
normal deviate exceeds 5 with probability 5.7e-7; this file makes at most 3 Monte Carlo checks per
example, so under the thorough profile (500 examples) a correct estimator fails with probability at
most 500 * 3 * 5.7e-7 < 1e-3 (union bound).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from brute_force import kl
from brute_force import total_variation as tv_oracle
from brute_force_pq import (
    chain_rule_terms,
    hmm_conditional,
    hmm_probs,
    off_support_mass,
    per_sequence_chain_totals,
    prefix_tv,
    sequence_probs_from_conditionals,
    sticky_definition,
)
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import embed_hmm, hmms
from wrappers import ConditionalsOnly

from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import override_off_support, sticky_marker, with_temperature
from toymodels.processes import HMMProcess

V = 3
LENGTH = 3  # one length for every property test: each new length costs compilations
NUM_SAMPLES = 4000
K_SIGMA = 5.0
FULL_SUPPORT = ("dense", "near_deterministic", "move_then_emit")  # with V = 3: every token possible everywhere
seeds = st.integers(0, 2**31 - 1)


def process(arrays, vocab_size: int = V) -> HMMProcess:
    return HMMProcess(*embed_hmm(*arrays, vocab_size=vocab_size))


def iid(probs) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of the one-state HMM emitting i.i.d. tokens with `probs`."""
    probs = np.asarray(probs, np.float64)
    return probs.reshape(-1, 1, 1), np.ones(1)


def assert_terms_equal(actual, expected, rtol=1e-9, atol=1e-11):
    """Same infinities (no NaN), equal finite values."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    assert not np.isnan(actual).any()
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=atol)


def assert_kl_matches(result, cond_a, cond_b, width, length):
    """A KL result (expectation side a) equals brute force: value, chain-rule terms, off-support mass."""
    probs_a = sequence_probs_from_conditionals(cond_a, width, length)
    probs_b = sequence_probs_from_conditionals(cond_b, width, length)
    terms = chain_rule_terms(cond_a, cond_b, width, length)
    sequence_kl = kl(probs_a, probs_b)
    # The oracle's own chain rule: the terms add up to the sequence KL (both inf, or equal).
    assert np.isinf(terms.sum()) == np.isinf(sequence_kl)
    if np.isfinite(sequence_kl):
        assert terms.sum() == pytest.approx(sequence_kl, rel=1e-9, abs=1e-11)
    assert result.method == "enumeration" and result.stderr == 0.0
    assert_terms_equal(result.per_position, terms)
    assert_terms_equal([result.value], [sequence_kl])
    assert result.off_support_fraction == pytest.approx(off_support_mass(probs_a, probs_b), abs=1e-12)


def assert_tv_matches(result, cond_p, cond_q, width, length):
    probs_p = sequence_probs_from_conditionals(cond_p, width, length)
    probs_q = sequence_probs_from_conditionals(cond_q, width, length)
    assert result.method == "enumeration" and result.stderr == 0.0
    np.testing.assert_allclose(result.per_position, prefix_tv(probs_p, probs_q, width, length), rtol=1e-9, atol=1e-12)
    assert result.value == pytest.approx(tv_oracle(probs_p, probs_q), rel=1e-9, abs=1e-12)
    assert result.off_support_fraction == pytest.approx(off_support_mass(probs_q, probs_p), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Enumeration against brute force
# --------------------------------------------------------------------------------------------------


@given(p_arrays=hmms(), q_arrays=hmms())
def test_forward_kl_enumeration_matches_brute_force(p_arrays, q_arrays):
    """forward_kl: value = sum_x P log P/Q, per_position = E_P next-token KLs, off = P(Q = 0)."""
    result = forward_kl(process(p_arrays), process(q_arrays), LENGTH)
    assert_kl_matches(result, hmm_conditional(*p_arrays, V), hmm_conditional(*q_arrays, V), V, LENGTH)


@given(p_arrays=hmms(), q_arrays=hmms())
def test_generation_kl_enumeration_matches_brute_force(p_arrays, q_arrays):
    """generation_kl: value = sum_x Q log Q/P, per_position = E_Q next-token KLs, off = Q(P = 0)."""
    result = generation_kl(process(p_arrays), process(q_arrays), LENGTH)
    assert_kl_matches(result, hmm_conditional(*q_arrays, V), hmm_conditional(*p_arrays, V), V, LENGTH)


@given(p_arrays=hmms(), q_arrays=hmms())
def test_total_variation_enumeration_matches_brute_force(p_arrays, q_arrays):
    """total_variation: value = 0.5 sum |P - Q|, per_position[t-1] = TV of length-t prefixes."""
    result = total_variation(process(p_arrays), process(q_arrays), LENGTH)
    assert_tv_matches(result, hmm_conditional(*p_arrays, V), hmm_conditional(*q_arrays, V), V, LENGTH)
    assert result.value == result.per_position[-1]


@given(p_arrays=hmms(), q_arrays=hmms(), eps=st.floats(1e-6, 0.999))
def test_divergences_with_a_larger_predictor_vocabulary(p_arrays, q_arrays, eps):
    """With q = sticky_marker(q0, eps) (vocab V+1), F, G and TV all equal brute force over (V+1)^n."""
    p, q = process(p_arrays), sticky_marker(process(q_arrays), eps)
    cond_p = hmm_conditional(*p_arrays, V + 1)
    cond_q = sticky_definition(hmm_conditional(*q_arrays, V), eps, V)
    assert_kl_matches(forward_kl(p, q, LENGTH), cond_p, cond_q, V + 1, LENGTH)
    assert_kl_matches(generation_kl(p, q, LENGTH), cond_q, cond_p, V + 1, LENGTH)
    assert_tv_matches(total_variation(p, q, LENGTH), cond_p, cond_q, V + 1, LENGTH)


@given(p_arrays=hmms(), q_arrays=hmms())
def test_enumeration_in_chunks_equals_one_chunk(p_arrays, q_arrays):
    """chunk_size=5 (27 = 5 * 5 + 2 sequences, a partial last chunk) gives what one chunk gives."""
    p, q = process(p_arrays), process(q_arrays)
    for divergence in (forward_kl, generation_kl, total_variation):
        whole, chunked = divergence(p, q, LENGTH), divergence(p, q, LENGTH, chunk_size=5)
        assert_terms_equal(chunked.per_position, whole.per_position, rtol=1e-12, atol=1e-14)
        assert chunked.off_support_fraction == pytest.approx(whole.off_support_fraction, abs=1e-14)


# --------------------------------------------------------------------------------------------------
# Infinite divergences
# --------------------------------------------------------------------------------------------------


@given(p_arrays=hmms(), rest=st.lists(st.floats(0.05, 1.0), min_size=V - 1, max_size=V - 1), seed=seeds)
@example(p_arrays=iid([0.5, 0.5, 0.0]), rest=[1.0, 1.0], seed=0)
def test_kl_is_inf_when_one_side_rules_out_a_likely_first_token(p_arrays, rest, seed):
    """q lacking p's likeliest first token: F = inf (stderr 0, no NaN, off = P(Q=0)) exactly and by MC."""
    # Swapping the roles gives G = inf with off = Q(P = 0), again exactly and by Monte Carlo.
    first = hmm_conditional(*p_arrays, V)(())
    banned = int(np.argmax(first))  # probability >= 1/3 at the empty prefix, which every sample has
    probs = np.insert(np.asarray(rest) / np.sum(rest), banned, 0.0)
    p, q = process(p_arrays), process(iid(probs))
    cond_p, cond_q = hmm_conditional(*p_arrays, V), hmm_conditional(*iid(probs), V)
    key = jax.random.PRNGKey(seed)
    for result in (forward_kl(p, q, LENGTH), forward_kl(p, q, LENGTH, "monte_carlo", key=key, num_samples=NUM_SAMPLES)):
        assert result.value == np.inf and result.stderr == 0.0
        assert result.per_position[0] == np.inf and not np.isnan(result.per_position).any()
    exact = forward_kl(p, q, LENGTH)
    assert_kl_matches(exact, cond_p, cond_q, V, LENGTH)
    assert exact.off_support_fraction >= first[banned] - 1e-12
    # The same pair the other way round: the data never emit the banned token, the predictor does.
    back = generation_kl(q, p, LENGTH)
    assert back.value == np.inf and back.stderr == 0.0
    assert_kl_matches(back, cond_p, cond_q, V, LENGTH)
    monte_carlo = generation_kl(q, p, LENGTH, "monte_carlo", key=key, num_samples=NUM_SAMPLES)
    assert monte_carlo.value == np.inf and monte_carlo.stderr == 0.0
    assert_tv_matches(total_variation(q, p, LENGTH), cond_q, cond_p, V, LENGTH)


@pytest.mark.parametrize("dtype, tau", [(np.float32, 0.05), (np.float64, 0.005)])
def test_a_possible_token_whose_probability_underflows_still_makes_kl_infinite(dtype, tau):
    """q = a cold temperature on i.i.d. (0.999, 0.001) gives token 1 a finite log-probability below the
    dtype's underflow (about -138 in float32, -1382 in float64); the data p never emit it. Q(x) > 0 =
    P(x) for any x holding token 1, so G_n = inf by definition, by enumeration and by Monte Carlo (its
    exact next-token terms see the token at every prefix). F_n stays finite: by the closed form,
    n log(1 + r) with r = (0.001 / 0.999)^(1 / tau), q's odds of token 1."""
    p = HMMProcess(np.array([1.0, 0.0], dtype).reshape(2, 1, 1), np.ones(1, dtype))
    q = with_temperature(HMMProcess(np.array([0.999, 0.001], dtype).reshape(2, 1, 1), np.ones(1, dtype)), tau)
    log_q1 = float(q.log_conditionals(np.zeros((1, 1), np.int32))[0, 0, 1])
    assert np.isfinite(log_q1) and np.exp(np.asarray(log_q1, dtype)) == 0  # the case under test
    n = 3
    for result in (generation_kl(p, q, n), generation_kl(p, q, n, "monte_carlo", key=_KEY, num_samples=10)):
        assert result.value == math.inf and np.all(np.isposinf(result.per_position)), result
    forward = forward_kl(p, q, n)
    odds = (0.001 / 0.999) ** (1 / tau)
    assert math.isfinite(forward.value) and forward.value == pytest.approx(n * math.log1p(odds), abs=1e-6)


# --------------------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------------------


def weighted_sigma(weights, values, mean) -> float:
    """Exact standard deviation of `values` under the distribution `weights` (terms of weight 0 dropped)."""
    keep = weights > 0
    return math.sqrt(max(0.0, float(np.sum(weights[keep] * values[keep] ** 2)) - mean**2))


def assert_within_k_sigma(estimate, exact, sigma):
    assert estimate.method == "monte_carlo" and np.isfinite(estimate.value)
    scale = max(estimate.stderr, sigma / math.sqrt(NUM_SAMPLES))
    assert abs(estimate.value - exact) <= K_SIGMA * scale + 1e-10 * (1 + abs(exact)), (estimate.value, exact, estimate.stderr, sigma)


@given(
    p_arrays=hmms(),
    q_arrays=hmms(min_vocab=V, styles=FULL_SUPPORT),
    full_p=hmms(min_vocab=V, styles=FULL_SUPPORT),
    seed=seeds,
)
def test_monte_carlo_is_within_k_standard_errors_of_exact(p_arrays, q_arrays, full_p, seed):
    """Monte Carlo F (samples of p), G (samples of q) and TV lie within 5 standard errors of exact."""
    key_f, key_g, key_t = jax.random.split(jax.random.PRNGKey(seed), 3)
    # F: q has full support, so F is finite.
    p, q = process(p_arrays), process(q_arrays)
    cond_p, cond_q = hmm_conditional(*p_arrays, V), hmm_conditional(*q_arrays, V)
    exact = forward_kl(p, q, LENGTH).value
    totals = per_sequence_chain_totals(cond_p, cond_q, V, LENGTH)
    sigma = weighted_sigma(hmm_probs(*p_arrays, V, LENGTH), totals, exact)
    assert_within_k_sigma(forward_kl(p, q, LENGTH, "monte_carlo", key=key_f, num_samples=NUM_SAMPLES), exact, sigma)
    # G and TV: the data process has full support, so G is finite.
    p, cond_p = process(full_p), hmm_conditional(*full_p, V)
    exact = generation_kl(p, q, LENGTH).value
    totals = per_sequence_chain_totals(cond_q, cond_p, V, LENGTH)
    probs_q, probs_p = hmm_probs(*q_arrays, V, LENGTH), hmm_probs(*full_p, V, LENGTH)
    sigma = weighted_sigma(probs_q, totals, exact)
    # (q without `sample`, so that its generations come from toymodels.sampling; two chunks of 2000)
    estimate = generation_kl(p, ConditionalsOnly(q), LENGTH, "monte_carlo", key=key_g, num_samples=NUM_SAMPLES, chunk_size=2000)
    assert_within_k_sigma(estimate, exact, sigma)
    exact = total_variation(p, q, LENGTH).value
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(probs_q > 0, np.maximum(0.0, 1.0 - probs_p / probs_q), 0.0)
    sigma = weighted_sigma(probs_q, values, exact)
    assert_within_k_sigma(total_variation(p, q, LENGTH, "monte_carlo", key=key_t, num_samples=NUM_SAMPLES), exact, sigma)


RUNS, SMALL_N = 200, 64


@pytest.mark.parametrize("divergence", [forward_kl, generation_kl, total_variation])
def test_monte_carlo_standard_error_is_calibrated(divergence):
    """Across 200 Monte Carlo runs the spread of the estimates matches the reported standard errors."""
    # 200 runs of 64 samples on fixed, well-conditioned processes (dense, V = 3): the ratio spread /
    # mean stderr has a relative error of ~5%, so the band [0.8, 1.25] is about 5 of its deviations
    # wide; the mean of the runs must also lie within 5 of its standard errors of exact.
    rng = np.random.default_rng(7)
    from strategies import random_hmm

    p, q = (process(random_hmm(rng, V, 2, "dense")) for _ in range(2))
    exact = divergence(p, q, LENGTH).value
    runs = [
        divergence(p, q, LENGTH, "monte_carlo", key=jax.random.PRNGKey(run), num_samples=SMALL_N) for run in range(RUNS)
    ]
    values = np.array([r.value for r in runs])
    stderrs = np.array([r.stderr for r in runs])
    spread = values.std(ddof=1)
    assert 0.8 <= spread / stderrs.mean() <= 1.25, (spread, stderrs.mean())
    assert abs(values.mean() - exact) <= 5 * spread / math.sqrt(RUNS)


# --------------------------------------------------------------------------------------------------
# A large enumeration against a closed form
# --------------------------------------------------------------------------------------------------


def test_large_enumeration_matches_bernoulli_closed_forms():
    """2^20 sequences (V = 2, n = 20) of i.i.d. Bernoulli(a) vs (b): F = n KL(a||b), TV by a binomial sum."""
    # TV = 0.5 sum_k C(n,k) |a^k (1-a)^(n-k) - b^k (1-b)^(n-k)|. About 6-18 s on 2 CPU cores (under 20 s), so not marked slow.
    a, b, n = 0.3, 0.45, 20
    p, q = HMMProcess(*iid([1 - a, a])), HMMProcess(*iid([1 - b, b]))

    def bern_kl(x, y):
        return x * math.log(x / y) + (1 - x) * math.log((1 - x) / (1 - y))

    assert forward_kl(p, q, n).value == pytest.approx(n * bern_kl(a, b), rel=1e-9)
    tv = 0.5 * sum(math.comb(n, k) * abs(a**k * (1 - a) ** (n - k) - b**k * (1 - b) ** (n - k)) for k in range(n + 1))
    assert total_variation(p, q, n).value == pytest.approx(tv, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Errors at the boundary
# --------------------------------------------------------------------------------------------------


_P = process(iid([0.2, 0.3, 0.5]))
_P2 = HMMProcess(*embed_hmm(*iid([0.4, 0.6]), vocab_size=2))
_KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("divergence", [forward_kl, generation_kl, total_variation])
@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((_P, _P2, 2), {}, "vocab_size"),
        ((_P, _P, 0), {}, "length"),
        ((_P, _P, -1), {}, "length"),
        ((_P, _P, 2, "exact"), {}, "method"),
        ((_P, _P, 2, "monte_carlo"), dict(num_samples=10), "key"),
        ((_P, _P, 2, "monte_carlo"), dict(key=_KEY), "num_samples"),
        ((_P, _P, 2, "monte_carlo"), dict(key=_KEY, num_samples=1), "num_samples"),
        ((_P, _P, 2, "monte_carlo"), dict(key=_KEY, num_samples=1000.5), "num_samples"),
        ((_P, _P, LENGTH), dict(max_sequences=26), "max_sequences"),
        ((_P, _P, 2), dict(chunk_size=0), "chunk_size"),
        ((ConditionalsOnly(_P), _P, 2), {}, "Process"),
        ((_P, object(), 2), {}, "q"),
    ],
)
def test_divergence_arguments_are_validated(divergence, args, kwargs, match):
    """Each bad argument (vocab, length, method, MC key/num_samples, size, chunk, p, q) raises ValueError."""
    with pytest.raises(ValueError, match=match):
        divergence(*args, **kwargs)


def test_unnormalised_predictor_is_refused():
    """A predictor whose conditionals stop being a distribution after a prefix it can produce (here an
    override whose off-support branch is a process that rules out everything after its own impossible
    prefix) makes sequence probabilities sum to less than 1: enumeration raises instead of reporting."""
    always_zero = HMMProcess([[[1.0]], [[0.0]]], [1.0])
    fair_coin = HMMProcess([[[0.5]], [[0.5]]], [1.0])
    broken = override_off_support(fair_coin, always_zero, always_zero)  # Q sums to 1/2 over length 2
    for divergence in (generation_kl, total_variation):
        with pytest.raises(ValueError, match="sum to 0.5"):
            divergence(always_zero, broken, 2)


def test_monte_carlo_off_support_fraction_has_calibrated_stderr():
    """Monte Carlo off_support_fraction is the fraction of sampled generations the other side rules
    out, with its binomial standard error; here Q'(P = 0) = 1 - (1 - eps)^n for the sticky marker on a
    fair coin, and the estimate lies within 5 standard errors (one fixed example, so no union bound)."""
    fair_coin = HMMProcess([[[0.5]], [[0.5]]], [1.0])
    eps, n, samples = 0.01, 60, 4000
    result = generation_kl(fair_coin, sticky_marker(fair_coin, eps), n, "monte_carlo", key=_KEY, num_samples=samples)
    exact = 1 - (1 - eps) ** n
    assert result.value == math.inf
    assert result.off_support_stderr == pytest.approx(math.sqrt(exact * (1 - exact) / samples), rel=0.15)
    assert abs(result.off_support_fraction - exact) <= 5 * math.sqrt(exact * (1 - exact) / samples)
