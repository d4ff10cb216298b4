"""C4: prediction loss constrains a predictor only where the data go.

The forward and generation KLs split into per-position expected next-token KLs (chain rule); a
predictor whose conditionals are perfect on every prefix the data can produce generates exactly the
data distribution, whatever it does elsewhere, and the forward KL cannot see what it does elsewhere.
Pinsker bounds TV by either KL, but nothing bounds a KL by TV without a floor on probabilities: TV can
vanish while a KL stays infinite, or finite but arbitrarily large.

Oracles: closed forms and brute-force sums over V^n (tests/brute_force.py, tests/brute_force_pq.py);
random HMMs are embedded in one array shape (`embed_hmm`) so examples share compilations. The closed
forms and table identities of theory.claims.c04_loss_pins are checked against the same oracles.
"""

from __future__ import annotations

import math

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
from hypothesis import find, given, settings
from hypothesis import strategies as st
from strategies import embed_hmm, hmms
from wrappers import Constant

from theory.claims import c04_loss_pins as c04
from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import override_off_support, sequence_log_prob, sticky_marker
from toymodels.processes import HMMProcess

V = 3
LENGTH = 3


def process(arrays, vocab_size: int = V) -> HMMProcess:
    return HMMProcess(*embed_hmm(*arrays, vocab_size=vocab_size))


def iid(probs):
    """Arrays of the one-state HMM emitting i.i.d. tokens with `probs`."""
    return np.asarray(probs, np.float64).reshape(-1, 1, 1), np.ones(1)


def iid_table(probs, n: int) -> np.ndarray:
    """[2^n] the product distribution of n i.i.d. tokens, by enumeration."""
    probs = np.asarray(probs, np.float64)
    return np.array([np.prod(probs[list(x)]) for x in all_sequences(len(probs), n)])


probability_vectors = (
    st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0]), min_size=V, max_size=V)
    .filter(lambda w: sum(w) > 0)
    .map(lambda w: np.asarray(w) / np.sum(w))
)


def same_or_both_inf(a, b, tol):
    return (np.isinf(a) and np.isinf(b)) or abs(a - b) <= tol


# --------------------------------------------------------------------------------------------------
# The identities
# --------------------------------------------------------------------------------------------------


@given(p_arrays=hmms(), q_arrays=hmms())
def test_chain_rule_for_forward_and_generation_kl(p_arrays, q_arrays):
    """F_n and G_n split into per-position expected next-token KLs that add up to the sequence KL; the
    claim module's table form of the chain rule gives the same terms."""
    p, q = process(p_arrays), process(q_arrays)
    cond_p, cond_q = hmm_conditional(*p_arrays, V), hmm_conditional(*q_arrays, V)
    probs_p, probs_q = hmm_probs(*p_arrays, V, LENGTH), hmm_probs(*q_arrays, V, LENGTH)
    for result, cond_a, cond_b, probs_a, probs_b in (
        (forward_kl(p, q, LENGTH), cond_p, cond_q, probs_p, probs_q),
        (generation_kl(p, q, LENGTH), cond_q, cond_p, probs_q, probs_p),
    ):
        sequence_kl = kl(probs_a, probs_b)
        terms = chain_rule_terms(cond_a, cond_b, V, LENGTH)
        assert not np.isnan(result.per_position).any()
        np.testing.assert_array_equal(np.isinf(result.per_position), np.isinf(terms))
        finite = np.isfinite(terms)
        np.testing.assert_allclose(result.per_position[finite], terms[finite], rtol=1e-9, atol=1e-11)
        assert same_or_both_inf(float(np.sum(result.per_position)), sequence_kl, 1e-9 * (1 + abs(sequence_kl)))
        assert same_or_both_inf(result.value, sequence_kl, 1e-9 * (1 + abs(sequence_kl)))
        table_terms = c04.chain_rule_terms(probs_a, probs_b, V)
        np.testing.assert_array_equal(np.isinf(table_terms), np.isinf(terms))
        np.testing.assert_allclose(table_terms[finite], terms[finite], rtol=1e-9, atol=1e-11)


@given(p_arrays=hmms(styles=("sparse", "deterministic", "emit_then_move", "dense")), r_arrays=hmms())
def test_perfect_conditionals_on_the_support_give_the_data_distribution(p_arrays, r_arrays):
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
def test_forward_kl_does_not_see_off_support_behaviour(p_arrays, q_arrays, r1, r2):
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


def test_off_support_freedom_example():
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


@given(p_arrays=hmms(), q_arrays=hmms(), eps=st.floats(1e-3, 0.5))
def test_finite_forward_kl_with_infinite_generation_kl_is_possible(p_arrays, q_arrays, eps):
    """C2's construction from C4's side: whenever F_n(Q) is finite, Q' = sticky_marker(Q, eps) has
    finite F_n (= F_n(Q) - n log(1 - eps), by path enumeration) and infinite G_n."""
    p = process(p_arrays)
    probs_p, probs_q = hmm_probs(*p_arrays, V, LENGTH), hmm_probs(*q_arrays, V, LENGTH)
    if off_support_mass(probs_p, probs_q) > 0:  # F_n(Q) = inf: use Q = P, which always has F_n = 0
        q_arrays, probs_q = p_arrays, probs_p
    marked = sticky_marker(process(q_arrays), eps)
    assert forward_kl(p, marked, LENGTH).value == pytest.approx(kl(probs_p, probs_q) - LENGTH * math.log1p(-eps), abs=1e-9)
    assert generation_kl(p, marked, LENGTH).value == math.inf


# --------------------------------------------------------------------------------------------------
# Pinsker, and no reverse bound without a floor
# --------------------------------------------------------------------------------------------------


@given(p_arrays=hmms(), q_arrays=hmms())
def test_pinsker_holds_with_either_kl(p_arrays, q_arrays):
    """TV_t <= sqrt(F_t / 2) and TV_t <= sqrt(G_t / 2) for every prefix length t <= n."""
    p, q = process(p_arrays), process(q_arrays)
    tv = total_variation(p, q, LENGTH).per_position
    for result in (forward_kl(p, q, LENGTH), generation_kl(p, q, LENGTH)):
        prefix_kl = np.cumsum(result.per_position)  # KL of the length-t prefix marginals (chain rule)
        assert np.all(tv <= np.sqrt(np.maximum(prefix_kl, 0.0) / 2) + 1e-12)  # (rounding: -1e-17)


@given(p_arrays=hmms(), q_arrays=hmms())
def test_pinsker_and_bretagnolle_huber_bounds_by_enumeration(p_arrays, q_arrays):
    """On the brute-force length-n distributions: TV <= pinsker_bound(KL) and TV <=
    bretagnolle_huber_bound(KL) for both directions; Pinsker's bound reaches 1 (says nothing)
    exactly when KL >= 2, Bretagnolle-Huber's stays below 1 for every finite KL."""
    probs_p, probs_q = hmm_probs(*p_arrays, V, LENGTH), hmm_probs(*q_arrays, V, LENGTH)
    tv = tv_oracle(probs_p, probs_q)
    for divergence in (kl(probs_p, probs_q), kl(probs_q, probs_p)):
        assert tv <= c04.pinsker_bound(divergence) + 1e-12
        assert tv <= c04.bretagnolle_huber_bound(divergence) + 1e-12
        if np.isfinite(divergence):
            assert (c04.pinsker_bound(divergence) >= 1) == (divergence >= 2)
            assert c04.bretagnolle_huber_bound(divergence) < 1 or divergence > 36  # (1 - e^-36 rounds to 1)
            exact = math.sqrt(max(divergence, 0.0) / 2)  # (a KL of equal tables can round to -1e-16)
            assert c04.pinsker_bound(divergence) == pytest.approx(exact, rel=1e-12, abs=1e-15)


@given(
    p_weights=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6).filter(lambda w: sum(w) > 0),
    q_seed=st.integers(0, 2**32 - 1),
    floor_share=st.floats(1e-4, 1.0),
)
def test_a_floor_on_probabilities_gives_a_reverse_bound(p_weights, q_seed, floor_share):
    """With Q(x) >= f for every x: KL(P || Q) <= log(1 + 2 TV^2 / f), for any P (brute-force KL/TV).
    Q is a random distribution mixed with the uniform one, so that f = min Q is what the bound uses."""
    p = np.asarray(p_weights) / np.sum(p_weights)
    size = len(p)
    q = floor_share * np.full(size, 1 / size) + (1 - floor_share) * np.random.default_rng(q_seed).dirichlet(np.ones(size))
    assert kl(p, q) <= c04.floor_reverse_bound(tv_oracle(p, q), q.min()) + 1e-12


@pytest.mark.parametrize("data_has_rare_token", [True, False])
def test_no_reverse_bound_tv_vanishes_while_a_kl_stays_infinite(data_has_rare_token):
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
        assert c04.rare_token_tv(delta, LENGTH) == pytest.approx(expected_tv, rel=1e-12)
        np.testing.assert_allclose(np.concatenate(c04.rare_token_pair(delta)), [1 - delta, delta, 1.0, 0.0], rtol=1e-15)
        result = infinite(p, q, LENGTH)
        assert result.value == np.inf and result.off_support_fraction == pytest.approx(expected_tv, rel=1e-9)
        assert finite(p, q, LENGTH).value == pytest.approx(-LENGTH * math.log1p(-delta), rel=1e-9)
        tvs.append(tv)
    assert all(later < earlier for earlier, later in zip(tvs, tvs[1:])) and tvs[-1] < 1e-5


@given(delta=st.floats(1e-4, 0.5), log_ratio=st.floats(0.0, 50.0))
def test_tilted_pair_closed_forms(delta, log_ratio):
    """tilted_pair (full support on both sides): the library's F_n, G_n on i.i.d. processes and the
    brute-force KLs of the product tables equal tilted_pair_kl (n times one token's), TV_1 equals
    tilted_pair_tv <= delta, TV_n <= n TV_1 (brute force), and KL(P || Q) >= delta (M - 1)."""
    p_probs, q_probs = c04.tilted_pair(delta, log_ratio)
    forward, backward = c04.tilted_pair_kl(delta, log_ratio, LENGTH)
    table_p, table_q = iid_table(p_probs, LENGTH), iid_table(q_probs, LENGTH)
    assert kl(table_p, table_q) == pytest.approx(forward, rel=1e-9, abs=1e-12)
    assert kl(table_q, table_p) == pytest.approx(backward, rel=1e-9, abs=1e-12)
    p, q = process(iid(p_probs)), process(iid(q_probs))
    assert forward_kl(p, q, LENGTH).value == pytest.approx(forward, rel=1e-9, abs=1e-12)
    assert generation_kl(p, q, LENGTH).value == pytest.approx(backward, rel=1e-9, abs=1e-12)
    assert c04.tilted_pair_tv(delta, log_ratio) == pytest.approx(tv_oracle(p_probs, q_probs), abs=1e-15)
    assert c04.tilted_pair_tv(delta, log_ratio) <= delta
    assert tv_oracle(table_p, table_q) <= LENGTH * c04.tilted_pair_tv(delta, log_ratio) + 1e-15
    assert forward / LENGTH >= delta * (log_ratio - 1) - 1e-12


def test_tv_vanishes_while_both_kls_stay_finite_and_grow():
    """With M = 1 / delta^2 and delta -> 0: TV_1 <= delta -> 0 while KL(P || Q) >= (1 - delta) / delta
    -> inf, both KLs finite (checked by the library on i.i.d. processes). (delta >= 0.04 keeps
    delta e^-M above float64's smallest normal number, so Q's rare token stays representable.)"""
    previous = 0.0
    for delta in (0.3, 0.1, 0.05, 0.04):
        p_probs, q_probs = c04.tilted_pair(delta, 1 / delta**2)
        p, q = process(iid(p_probs)), process(iid(q_probs))
        forward, backward = forward_kl(p, q, 1).value, generation_kl(p, q, 1).value
        assert np.isfinite(forward) and np.isfinite(backward)
        assert total_variation(p, q, 1).value <= delta + 1e-15  # delta (1 - e^-M), up to rounding
        assert forward >= (1 - delta) / delta - 1e-9 and forward > previous
        previous = forward
    assert previous > 20


# --------------------------------------------------------------------------------------------------
# Intuition falsification
# --------------------------------------------------------------------------------------------------


@st.composite
def close_iid_pairs(draw):
    """Two i.i.d. token distributions that agree except on a rare token 1: P gives it delta, Q gives
    it delta times a factor in [0, 1]; and a length n."""
    delta = draw(st.floats(1e-12, 0.5))
    factor = draw(st.floats(0.0, 1.0))
    n = draw(st.integers(1, 4))
    return np.array([1 - delta, delta]), np.array([1 - delta * factor, delta * factor]), n


def small_tv_bounds_kl(example) -> bool:
    """The intuition under test: TV_n below 0.01 implies KL(P_n || Q_n) below 1 nat (brute force)."""
    p, q, n = example
    table_p, table_q = iid_table(p, n), iid_table(q, n)
    return not (tv_oracle(table_p, table_q) < 0.01) or kl(table_p, table_q) < 1.0


def test_hypothesis_falsifies_small_tv_implies_small_kl():
    """"TV_n < 0.01 implies KL < 1" is false: Hypothesis finds (and shrinks) a pair of i.i.d. processes
    with tiny TV and a large (here infinite) forward KL; the library confirms it."""
    p_probs, q_probs, n = find(close_iid_pairs(), lambda ex: not small_tv_bounds_kl(ex), settings=settings(database=None))
    p, q = process(iid(p_probs)), process(iid(q_probs))
    tv, forward = total_variation(p, q, n).value, forward_kl(p, q, n).value
    print(f"counterexample: p={p_probs.tolist()}, q={q_probs.tolist()}, n={n}: TV = {tv:.3g}, F = {forward}")
    assert tv < 0.01 and forward >= 1.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: c04.pinsker_bound(-1.0), "kl"),
        (lambda: c04.bretagnolle_huber_bound(float("nan")), "kl"),
        (lambda: c04.floor_reverse_bound(0.5, 0.0), "floor"),
        (lambda: c04.floor_reverse_bound(1.5, 0.1), "tv"),
        (lambda: c04.rare_token_pair(1.0), "delta"),
        (lambda: c04.tilted_pair(0.1, -1.0), "log_ratio"),
        (lambda: c04.chain_rule_terms(np.ones(4) / 4, np.ones(3) / 3, 2), "q_table"),
        (lambda: c04.chain_rule_terms(np.ones((2, 2)) / 4, np.ones((3, 3)) / 9), "same shape"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
