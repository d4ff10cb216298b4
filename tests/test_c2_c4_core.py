"""Exact checks of claims C2 and C4 (CLAIMS.md) with the library's divergences and transforms.

C2: a predictor can pay a tiny, fixed prediction cost per token and still make every long generation
impossible. Extending any Q with a marker token g that it emits with probability eps until g appears
(and forever after) raises the forward KL by exactly -log(1-eps) per token, while its length-n
generations contain g with probability 1-(1-eps)^n, so the generation KL is infinite and the total
variation is at least 1-(1-eps)^n.

C4: prediction loss constrains a predictor only where the data go. The forward and generation KLs
split into per-position expected next-token KLs (chain rule); a predictor whose conditionals are
perfect on every prefix the data can produce generates exactly the data distribution, whatever it does
elsewhere, and the forward KL cannot see what it does elsewhere; Pinsker bounds TV by either KL, but
nothing bounds a KL by TV: TV can vanish while a KL stays infinite.

Closed forms and brute-force sums over V^n (tests/brute_force.py, tests/brute_force_pq.py) are the
oracles; random HMMs are embedded in one array shape (`embed_hmm`) so examples share compilations.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from brute_force import all_sequences, kl
from brute_force import total_variation as tv_oracle
from brute_force_pq import (
    chain_rule_terms,
    hmm_conditional,
    hmm_probs,
    off_support_mass,
)
from hypothesis import given
from hypothesis import strategies as st
from strategies import embed_hmm, hmms
from wrappers import Constant

from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import override_off_support, sequence_log_prob, sticky_marker
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


probability_vectors = (
    st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0]), min_size=V, max_size=V)
    .filter(lambda w: sum(w) > 0)
    .map(lambda w: np.asarray(w) / np.sum(w))
)


def same_or_both_inf(a, b, tol):
    return (np.isinf(a) and np.isinf(b)) or abs(a - b) <= tol


# --------------------------------------------------------------------------------------------------
# C2
# --------------------------------------------------------------------------------------------------


@given(p_arrays=hmms(), q_arrays=hmms(min_vocab=V, styles=FULL_SUPPORT), q_is_p=st.booleans(), eps=epsilons, n=lengths)
def test_c2_marker_costs_exactly_minus_log_one_minus_eps_per_token(p_arrays, q_arrays, q_is_p, eps, n):
    """F_n(Q') - F_n(Q) = -n log(1-eps) exactly, and every chain-rule term rises by -log(1-eps)."""
    p = process(p_arrays)
    q = p if q_is_p else process(q_arrays)  # both give a finite F_n(Q)
    base, marked = forward_kl(p, q, n), forward_kl(p, sticky_marker(q, eps), n)
    assert np.isfinite(base.value)
    assert marked.value - base.value == pytest.approx(-n * math.log1p(-eps), abs=1e-9)
    np.testing.assert_allclose(marked.per_position - base.per_position, -math.log1p(-eps), atol=1e-9)
    assert marked.off_support_fraction == base.off_support_fraction == 0.0


@given(q_arrays=hmms(), eps=epsilons, n=lengths)
def test_c2_marker_appears_with_probability_one_minus_one_minus_eps_to_the_n(q_arrays, eps, n):
    """Q'(g among the first n tokens) = 1-(1-eps)^n, summing exp(sequence_log_prob) over (V+1)^n."""
    sequences = all_sequences(V + 1, n)
    probs = np.exp(np.asarray(sequence_log_prob(sticky_marker(process(q_arrays), eps), sequences)))
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    with_marker = probs[(sequences == V).any(axis=1)].sum()
    assert with_marker == pytest.approx(-math.expm1(n * math.log1p(-eps)), abs=1e-12)


@given(p_arrays=hmms(), q_arrays=hmms(), eps=epsilons)
def test_c2_generation_kl_is_infinite_and_tv_is_at_least_the_marker_probability(p_arrays, q_arrays, eps):
    """G_n(Q') = inf with Q'(P = 0) = 1-(1-eps)^n + (1-eps)^n Q(P = 0) >= 1-(1-eps)^n, and TV_n >= it."""
    p, q = process(p_arrays), sticky_marker(process(q_arrays), eps)
    marker = -math.expm1(LENGTH * math.log1p(-eps))
    generation = generation_kl(p, q, LENGTH)
    assert generation.value == np.inf and generation.stderr == 0.0 and not np.isnan(generation.per_position).any()
    base_off = off_support_mass(hmm_probs(*q_arrays, V, LENGTH), hmm_probs(*p_arrays, V, LENGTH))  # Q(P = 0)
    expected_off = marker + (1 - marker) * base_off
    assert generation.off_support_fraction == pytest.approx(expected_off, abs=1e-12)
    assert generation.off_support_fraction >= marker - 1e-12
    tv = total_variation(p, q, LENGTH)
    assert tv.value >= tv.off_support_fraction - 1e-12 >= marker - 2e-12


def test_c2_published_numbers():
    """The library gives -log(1-0.01) = 0.01005 nats (not the essay's 0.101) and 1-0.99^1000 = 0.99996."""
    # Computed on the one-token process: P = Q = the point mass on 0^n.
    one = HMMProcess(*iid([1.0]))
    marked = sticky_marker(one, 0.01)
    per_token = forward_kl(one, marked, 1).value - forward_kl(one, one, 1).value
    assert per_token == pytest.approx(-math.log(0.99), abs=1e-12)
    assert f"{per_token:.4g}" == "0.01005" and f"{per_token / math.log(2):.3g}" == "0.0145"
    assert abs(per_token - 0.101) > 0.09  # the essay's printed value is off by a factor of ten
    # n = 1000: P is the point mass on 0^1000, so F_1000(Q') = -log Q'(0^1000) and
    # Q'(g appears) = 1 - exp(-F) (one sequence to enumerate; the same number from sequence_log_prob).
    big = forward_kl(one, marked, 1000)
    assert big.value == pytest.approx(-1000 * math.log(0.99), rel=1e-12)
    appears = -math.expm1(-big.value)
    assert appears == pytest.approx(1 - 0.99**1000, abs=1e-12)
    assert round(appears, 5) == 0.99996
    log_no_marker = float(sequence_log_prob(marked, np.zeros((1, 1000), np.int32))[0])
    assert -math.expm1(log_no_marker) == pytest.approx(appears, abs=1e-12)
    sampled = generation_kl(one, marked, 1000, "monte_carlo", key=jax.random.PRNGKey(0), num_samples=64)
    assert sampled.value == np.inf and sampled.stderr == 0.0


# --------------------------------------------------------------------------------------------------
# C4
# --------------------------------------------------------------------------------------------------


@given(p_arrays=hmms(), q_arrays=hmms())
def test_c4_chain_rule_for_forward_and_generation_kl(p_arrays, q_arrays):
    """F_n and G_n split into per-position expected next-token KLs that add up to the sequence KL."""
    p, q = process(p_arrays), process(q_arrays)
    cond_p, cond_q = hmm_conditional(*p_arrays, V), hmm_conditional(*q_arrays, V)
    probs_p, probs_q = hmm_probs(*p_arrays, V, LENGTH), hmm_probs(*q_arrays, V, LENGTH)
    for result, cond_a, cond_b, sequence_kl in (
        (forward_kl(p, q, LENGTH), cond_p, cond_q, kl(probs_p, probs_q)),
        (generation_kl(p, q, LENGTH), cond_q, cond_p, kl(probs_q, probs_p)),
    ):
        terms = chain_rule_terms(cond_a, cond_b, V, LENGTH)
        assert not np.isnan(result.per_position).any()
        np.testing.assert_array_equal(np.isinf(result.per_position), np.isinf(terms))
        finite = np.isfinite(terms)
        np.testing.assert_allclose(result.per_position[finite], terms[finite], rtol=1e-9, atol=1e-11)
        assert same_or_both_inf(float(np.sum(result.per_position)), sequence_kl, 1e-9 * (1 + abs(sequence_kl)))
        assert same_or_both_inf(result.value, sequence_kl, 1e-9 * (1 + abs(sequence_kl)))


@given(p_arrays=hmms(styles=("sparse", "deterministic", "emit_then_move", "dense")), r_arrays=hmms())
def test_c4_perfect_conditionals_on_the_support_give_the_data_distribution(p_arrays, r_arrays):
    """q = override_off_support(p, p, r) has Q_n = P_n, hence F_n = G_n = TV_n = 0, whatever r does."""
    p = process(p_arrays)
    q = override_off_support(p, p, process(r_arrays))
    sequences = all_sequences(V, LENGTH)
    np.testing.assert_allclose(np.exp(np.asarray(sequence_log_prob(q, sequences))), hmm_probs(*p_arrays, V, LENGTH), atol=1e-12)
    for divergence in (forward_kl, generation_kl, total_variation):
        result = divergence(p, q, LENGTH)
        assert result.value == pytest.approx(0.0, abs=1e-12)
        assert result.off_support_fraction == 0.0


@given(
    p_arrays=hmms(styles=("sparse", "deterministic", "emit_then_move")),
    q_arrays=hmms(),
    r1=probability_vectors,
    r2=probability_vectors,
)
def test_c4_forward_kl_does_not_see_off_support_behaviour(p_arrays, q_arrays, r1, r2):
    """q on supp P, r1 or r2 elsewhere: identical F (1e-12, per term); generations differ by <= Q(P=0)."""
    # r must be normalised after every prefix (Constant is): G and TV against P then agree as well, because
    # Q1 = Q2 on supp P; G is inf for both as soon as they differ at all.
    p, q = process(p_arrays), process(q_arrays)
    q1, q2 = (override_off_support(q, p, Constant(r)) for r in (r1, r2))
    f1, f2 = forward_kl(p, q1, LENGTH), forward_kl(p, q2, LENGTH)
    np.testing.assert_array_equal(np.isinf(f1.per_position), np.isinf(f2.per_position))
    np.testing.assert_allclose(f1.per_position, f2.per_position, rtol=0, atol=1e-12)
    assert f1.value == f2.value or abs(f1.value - f2.value) <= 1e-12
    # What P can see is fixed by the on-support conditionals: G and TV against P agree as well...
    g1, g2 = generation_kl(p, q1, LENGTH), generation_kl(p, q2, LENGTH)
    assert same_or_both_inf(g1.value, g2.value, 1e-12)
    assert g1.off_support_fraction == pytest.approx(g2.off_support_fraction, abs=1e-12)
    assert total_variation(p, q1, LENGTH).value == pytest.approx(total_variation(p, q2, LENGTH).value, abs=1e-12)
    # ...but the generations themselves differ only off the support, by at most Q(P = 0).
    sequences = all_sequences(V, LENGTH)
    probs1, probs2 = (np.exp(np.asarray(sequence_log_prob(x, sequences))) for x in (q1, q2))
    probs_p = hmm_probs(*p_arrays, V, LENGTH)
    np.testing.assert_allclose(probs1[probs_p > 0], probs2[probs_p > 0], atol=1e-12)
    assert tv_oracle(probs1, probs2) <= g1.off_support_fraction + 1e-12


def test_c4_off_support_freedom_example():
    """Same F = 3 log 1.5 for two predictors whose generations differ with TV(Q1, Q2) = 5/9."""
    # P uniform on {0,1}^3, q uniform on {0,1,2}, r1 = always 0, r2 = always 1: the generations differ when
    # a 2 comes at position 1 or 2 (1/3 + 2/9 = 5/9), inside Q(P = 0) = 19/27.
    p = process(iid([0.5, 0.5]))
    q = process(iid([1 / 3, 1 / 3, 1 / 3]))
    q1, q2 = (override_off_support(q, p, Constant(r)) for r in ([1.0, 0, 0], [0, 1.0, 0]))
    for x in (q1, q2):
        assert forward_kl(p, x, LENGTH).value == pytest.approx(3 * math.log(1.5), abs=1e-12)
        g = generation_kl(p, x, LENGTH)
        assert g.value == np.inf and g.off_support_fraction == pytest.approx(19 / 27, abs=1e-12)
    sequences = all_sequences(V, LENGTH)
    probs1, probs2 = (np.exp(np.asarray(sequence_log_prob(x, sequences))) for x in (q1, q2))
    assert tv_oracle(probs1, probs2) == pytest.approx(5 / 9, abs=1e-12)


@given(p_arrays=hmms(), q_arrays=hmms())
def test_c4_pinsker_holds_with_either_kl(p_arrays, q_arrays):
    """TV_t <= sqrt(F_t / 2) and TV_t <= sqrt(G_t / 2) for every prefix length t <= n."""
    p, q = process(p_arrays), process(q_arrays)
    tv = total_variation(p, q, LENGTH).per_position
    for result in (forward_kl(p, q, LENGTH), generation_kl(p, q, LENGTH)):
        prefix_kl = np.cumsum(result.per_position)  # KL of the length-t prefix marginals (chain rule)
        assert np.all(tv <= np.sqrt(np.maximum(prefix_kl, 0.0) / 2) + 1e-12)  # (rounding: -1e-17)


@pytest.mark.parametrize("data_has_rare_token", [True, False])
def test_c4_no_reverse_bound_tv_vanishes_while_a_kl_stays_infinite(data_has_rare_token):
    """A token of probability delta on one side only: TV_n = 1-(1-delta)^n -> 0 while one KL stays inf."""
    # The KL towards the side that lacks the token is inf for every delta; the other is -n log(1-delta).
    tvs = []
    for delta in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        rare, never = process(iid([1 - delta, delta])), process(iid([1.0, 0.0]))
        p, q = (rare, never) if data_has_rare_token else (never, rare)
        infinite, finite = (forward_kl, generation_kl) if data_has_rare_token else (generation_kl, forward_kl)
        tv = total_variation(p, q, LENGTH).value
        expected_tv = -math.expm1(LENGTH * math.log1p(-delta))
        assert tv == pytest.approx(expected_tv, rel=1e-9, abs=1e-15)
        result = infinite(p, q, LENGTH)
        assert result.value == np.inf and result.off_support_fraction == pytest.approx(expected_tv, rel=1e-9)
        assert finite(p, q, LENGTH).value == pytest.approx(-LENGTH * math.log1p(-delta), rel=1e-9)
        tvs.append(tv)
    assert all(later < earlier for earlier, later in zip(tvs, tvs[1:])) and tvs[-1] < 1e-5
