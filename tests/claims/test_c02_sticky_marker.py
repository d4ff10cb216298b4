"""C2: a small, fixed prediction cost per token can make every long generation impossible.

Extending any predictor Q with a marker token g that it emits with probability eps until g appears
(and forever after) raises the forward KL by exactly -log(1 - eps) per token, while its length-n
generations contain g with probability 1 - (1 - eps)^n: the generation KL is infinite and the total
variation is at least 1 - (1 - eps)^n. A forward KL this small says nothing about generations.

Oracles: closed forms written with `math` in the tests, the C2 closed forms of
theory.claims.c02_sticky_marker checked against them, and brute-force sums over V^n
(tests/brute_force.py, tests/brute_force_pq.py, with the sticky marker written from its definition).
Random HMMs are embedded in one array shape (`embed_hmm`) so examples share compilations.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from brute_force import all_sequences, sequence_probs_from_conditionals
from brute_force_pq import hmm_conditional, hmm_probs, off_support_mass, sticky_definition
from hypothesis import find, given, settings
from hypothesis import strategies as st
from strategies import embed_hmm, hmms

from theory.claims import c02_sticky_marker as c02
from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import sequence_log_prob, sticky_marker
from toymodels.processes import HMMProcess

V = 3
LENGTH = 3
lengths = st.sampled_from([1, 3])
epsilons = st.one_of(st.sampled_from([0.01, 0.5]), st.floats(1e-6, 0.999))
FULL_SUPPORT = ("dense", "near_deterministic", "move_then_emit")  # with V = 3: every token possible everywhere


def process(arrays, vocab_size: int = V) -> HMMProcess:
    return HMMProcess(*embed_hmm(*arrays, vocab_size=vocab_size))


def iid(probs):
    """Arrays of the one-state HMM emitting i.i.d. tokens with `probs`."""
    return np.asarray(probs, np.float64).reshape(-1, 1, 1), np.ones(1)


@given(p_arrays=hmms(), q_arrays=hmms(min_vocab=V, styles=FULL_SUPPORT), q_is_p=st.booleans(), eps=epsilons, n=lengths)
def test_marker_costs_exactly_minus_log_one_minus_eps_per_token(p_arrays, q_arrays, q_is_p, eps, n):
    """F_n(Q') - F_n(Q) = -n log(1-eps) exactly, and every chain-rule term rises by -log(1-eps)."""
    p = process(p_arrays)
    q = p if q_is_p else process(q_arrays)  # both give a finite F_n(Q)
    base, marked = forward_kl(p, q, n), forward_kl(p, sticky_marker(q, eps), n)
    assert np.isfinite(base.value)
    assert marked.value - base.value == pytest.approx(-n * math.log1p(-eps), abs=1e-9)
    np.testing.assert_allclose(marked.per_position - base.per_position, -math.log1p(-eps), atol=1e-9)
    assert marked.off_support_fraction == base.off_support_fraction == 0.0
    # The claim module's closed forms are the same numbers as the math above.
    assert c02.loss_increase(eps, n) == pytest.approx(-n * math.log(1 - eps), rel=1e-9)
    assert c02.per_token_loss(eps) == pytest.approx(-math.log(1 - eps), rel=1e-9)


@given(q_arrays=hmms(), eps=epsilons, n=lengths)
def test_marker_appears_with_probability_one_minus_one_minus_eps_to_the_n(q_arrays, eps, n):
    """Q'(g among the first n tokens) = 1-(1-eps)^n, summing exp(sequence_log_prob) over (V+1)^n and
    summing the sticky marker's definition over the same sequences (path enumeration of Q)."""
    sequences = all_sequences(V + 1, n)
    probs = np.exp(np.asarray(sequence_log_prob(sticky_marker(process(q_arrays), eps), sequences)))
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    with_marker = probs[(sequences == V).any(axis=1)].sum()
    assert with_marker == pytest.approx(-math.expm1(n * math.log1p(-eps)), abs=1e-12)
    definition = sticky_definition(hmm_conditional(*q_arrays, V), eps, V)
    oracle = sequence_probs_from_conditionals(definition, V + 1, n)
    np.testing.assert_allclose(probs, oracle, atol=1e-12)
    assert c02.marker_probability(eps, n) == pytest.approx(1 - (1 - eps) ** n, abs=1e-12)
    assert c02.marker_probability(eps, n) == pytest.approx(oracle[(sequences == V).any(axis=1)].sum(), abs=1e-12)


@given(p_arrays=hmms(), eps=epsilons, n=lengths)
def test_marker_probability_is_fixed_by_the_extra_loss_alone(p_arrays, eps, n):
    """P_Q'(g in n tokens) = 1 - exp(-(F_n(Q') - F_n(Q))): the library's loss gap, pushed through the
    identity, equals the marker probability summed from the sticky marker's definition."""
    p = process(p_arrays)
    extra = forward_kl(p, sticky_marker(p, eps), n).value - forward_kl(p, p, n).value
    sequences = all_sequences(V + 1, n)
    oracle = sequence_probs_from_conditionals(sticky_definition(hmm_conditional(*p_arrays, V), eps, V), V + 1, n)
    assert c02.marker_probability_from_loss(extra) == pytest.approx(oracle[(sequences == V).any(axis=1)].sum(), abs=1e-9)


@given(p_arrays=hmms(), q_arrays=hmms(), eps=epsilons)
def test_generation_kl_is_infinite_and_tv_is_at_least_the_marker_probability(p_arrays, q_arrays, eps):
    """G_n(Q') = inf with Q'(P = 0) = 1-(1-eps)^n + (1-eps)^n Q(P = 0) >= 1-(1-eps)^n, and TV_n >= it."""
    p, q = process(p_arrays), sticky_marker(process(q_arrays), eps)
    marker = -math.expm1(LENGTH * math.log1p(-eps))
    generation = generation_kl(p, q, LENGTH)
    assert generation.value == np.inf and generation.stderr == 0.0 and not np.isnan(generation.per_position).any()
    assert c02.generation_kl(eps, LENGTH) == math.inf
    base_off = off_support_mass(hmm_probs(*q_arrays, V, LENGTH), hmm_probs(*p_arrays, V, LENGTH))  # Q(P = 0)
    expected_off = marker + (1 - marker) * base_off
    assert generation.off_support_fraction == pytest.approx(expected_off, abs=1e-12)
    assert c02.generation_off_support_mass(eps, LENGTH, base_off) == pytest.approx(expected_off, abs=1e-12)
    assert generation.off_support_fraction >= marker - 1e-12
    tv = total_variation(p, q, LENGTH)
    assert tv.value >= tv.off_support_fraction - 1e-12 >= marker - 2e-12
    assert c02.tv_lower_bound(eps, LENGTH) == pytest.approx(marker, abs=1e-15)


def test_published_numbers():
    """The library gives -log(1-0.01) = 0.01005 nats (not the essay's 0.101) and 1-0.99^1000 = 0.99996.

    Correction: seed 001 prints "approximately 0.101" for the per-token cost of eps = 0.01; the
    correct value is -log(0.99) = 0.01005 nats (0.0145 bits), a factor of ten smaller."""
    # Computed on the one-token process: P = Q = the point mass on 0^n.
    one = HMMProcess(*iid([1.0]))
    marked = sticky_marker(one, 0.01)
    per_token = forward_kl(one, marked, 1).value - forward_kl(one, one, 1).value
    assert per_token == pytest.approx(-math.log(0.99), abs=1e-12)
    assert f"{per_token:.4g}" == "0.01005" and f"{per_token / math.log(2):.3g}" == "0.0145"
    assert abs(per_token - 0.101) > 0.09  # the essay's printed value is off by a factor of ten
    assert c02.per_token_loss(0.01) == pytest.approx(-math.log(0.99), rel=1e-12)
    assert round(c02.per_token_loss(0.01), 5) == 0.01005
    assert c02.per_token_loss(0.01, "bits") == pytest.approx(-math.log2(0.99), rel=1e-12)
    # n = 1000: P is the point mass on 0^1000, so F_1000(Q') = -log Q'(0^1000) and
    # Q'(g appears) = 1 - exp(-F) (one sequence to enumerate; the same number from sequence_log_prob).
    big = forward_kl(one, marked, 1000)
    assert big.value == pytest.approx(-1000 * math.log(0.99), rel=1e-12)
    appears = -math.expm1(-big.value)
    assert appears == pytest.approx(1 - 0.99**1000, abs=1e-12)
    assert round(appears, 5) == 0.99996
    assert round(c02.marker_probability(0.01, 1000), 5) == 0.99996
    assert c02.marker_probability(0.01, 1000) == pytest.approx(1 - 0.99**1000, abs=1e-12)
    log_no_marker = float(sequence_log_prob(marked, np.zeros((1, 1000), np.int32))[0])
    assert -math.expm1(log_no_marker) == pytest.approx(appears, abs=1e-12)
    sampled = generation_kl(one, marked, 1000, "monte_carlo", key=jax.random.PRNGKey(0), num_samples=64)
    assert sampled.value == np.inf and sampled.stderr == 0.0


# --------------------------------------------------------------------------------------------------
# Intuition falsification
# --------------------------------------------------------------------------------------------------


def small_forward_kl_bounds_generation_kl(example) -> bool:
    """The intuition under test: forward KL below 0.1 nats implies generation KL below 1 nat, here
    for the sticky marker Q' of the data process itself (F_n(Q) = 0)."""
    eps, n = example
    forward, generation = c02.loss_increase(eps, n), c02.generation_kl(eps, n)
    return not (forward < 0.1) or generation < 1.0


def test_hypothesis_falsifies_small_forward_kl_implies_small_generation_kl():
    """"F_n < 0.1 nats implies G_n < 1 nat" is false: Hypothesis finds (and shrinks) a sticky marker
    with a tiny loss gap and infinite generation KL; the library confirms it by enumeration."""
    examples = st.tuples(st.floats(1e-6, 0.999), st.integers(1, 12))
    eps, n = find(examples, lambda ex: not small_forward_kl_bounds_generation_kl(ex), settings=settings(database=None))
    one = HMMProcess(*iid([1.0]))  # P = Q = the point mass on 0^n: 2^n sequences for Q'
    forward = forward_kl(one, sticky_marker(one, eps), n)
    generation = generation_kl(one, sticky_marker(one, eps), n)
    print(f"counterexample: eps={eps!r}, n={n}: F_n = {forward.value:.4g} nats, G_n = {generation.value}")
    assert forward.value < 0.1 and generation.value == math.inf


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: c02.per_token_loss(0.0), "eps"),
        (lambda: c02.per_token_loss(1.0), "eps"),
        (lambda: c02.per_token_loss("x"), "eps"),
        (lambda: c02.per_token_loss(0.1, "dB"), "unit"),
        (lambda: c02.loss_increase(0.1, -1), "n"),
        (lambda: c02.marker_probability(0.1, 2.5), "n"),
        (lambda: c02.marker_probability_from_loss(-1.0), "extra_loss"),
        (lambda: c02.generation_off_support_mass(0.1, 3, 1.5), "base_off_support"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
