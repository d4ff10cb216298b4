"""C3: verification can be easier than generation (hash-then-payload documents).

The predictor Q0 that predicts the hash from its marginal and the payload uniformly never inverts the
hash: it pays only H(h) nats of prediction loss, however long the payload, yet writes a consistent
document only with probability sum_h p(h)^2, so its generation KL is infinite. Every Q pays at least
-log Q(supp P), with equality iff Q is proportional to P on the support, and what a predictor does
after an inconsistency never enters its loss.

Oracles (tests/claims/_oracles_b.py, no library code): the documents of the data and of Q0's
hash-blind world listed one by one, their KLs and TVs by brute force, and Q0's per-position terms by
counting the preimages that continue each payload prefix. Hash tables are explicit arrays, so every
instance of one (V, m, k) shares compiled code; the hash kinds cover balanced tables, tables uniform
on a subset of hash values, skewed random tables and the structured "modular" and "mix" hashes.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from _oracles_b import dense, hash_documents, q0_payload_terms
from brute_force import all_sequences, kl
from brute_force import total_variation as tv_oracle
from hypothesis import find, given, settings
from hypothesis import strategies as st
from wrappers import Constant

from theory.claims import c03_hash_payload as c03
from theory.claims.c04_loss_pins import pinsker_bound
from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import override_off_support, sequence_log_prob
from toymodels.processes.hash_functions import mix_table, modular_table
from toymodels.processes.hashing import hash_then_payload, non_inverting_predictor
from toymodels.sampling import generate

# (V, m, k): one hash length with two payload lengths (F must not depend on m). Each combination
# compiles the divergences anew, so there are few of them.
COMBOS = ((2, 3, 2), (2, 5, 2))
KINDS = ("balanced", "uniform_on_subset", "skewed", "modular", "mix")


def make_table(kind: str, vocab: int, m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A hash table [V^m] of hash indices in [0, V^k) of the given kind."""
    n, hashes = vocab**m, vocab**k
    if kind == "balanced":
        return rng.permutation(np.repeat(np.arange(hashes), n // hashes))
    if kind == "uniform_on_subset":  # d hash values with n / d preimages each, the rest none
        d = int(rng.choice([d for d in range(1, hashes + 1) if n % d == 0]))
        return rng.permutation(np.repeat(rng.choice(hashes, size=d, replace=False), n // d))
    if kind == "skewed":
        return rng.choice(hashes, size=n, p=rng.dirichlet(np.full(hashes, 0.5)))
    seed = int(rng.integers(0, 2**16))
    return (modular_table if kind == "modular" else mix_table)(vocab, m, k, seed)


@st.composite
def instances(draw, combos=COMBOS, kinds=KINDS):
    """(V, m, k, table, rng): a hash-then-payload instance with an explicit hash table."""
    vocab, m, k = draw(st.sampled_from(combos))
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return vocab, m, k, make_table(kind, vocab, m, k, rng).astype(np.int64), rng


def build(vocab, m, k, table):
    """The process, Q0, the enumeration length k + m + 1 (one end-of-document token), and p(h)."""
    process = hash_then_payload(vocab, m, k, hash=table)
    p_hash = np.bincount(table, minlength=vocab**k) / table.size
    return process, non_inverting_predictor(process), k + m + 1, p_hash


def oracle_tables(vocab, m, k, table, length):
    """P and Q0 as dense vectors over (V + 1)^length, from the listed documents."""
    data, blind = hash_documents(table, vocab, m, k, length)
    return dense(data, vocab + 1, length), dense(blind, vocab + 1, length)


@given(instances())
def test_q0_loss_is_the_hash_entropy_whatever_the_payload_length(instance):
    """F(Q0) = H(h) (k log V when balanced, the same for m = 3 and m = 5), by the library and by brute
    force; all of it is paid on the payload, H(h | y_<s) - H(h | y_<=s) at payload position s (the
    information that token reveals about the hash) and nothing on the hash or the tail."""
    vocab, m, k, table, _ = instance
    process, q0, length, p_hash = build(vocab, m, k, table)
    np.testing.assert_allclose(c03.hash_marginal(table, vocab, m, k), p_hash, rtol=0, atol=1e-15)
    probs_p, probs_q0 = oracle_tables(vocab, m, k, table, length)
    forward = forward_kl(process, q0, length)
    entropy = -sum(x * math.log(x) for x in p_hash if x > 0)
    assert forward.value == pytest.approx(entropy, abs=1e-9)
    assert kl(probs_p, probs_q0) == pytest.approx(entropy, abs=1e-9)
    assert c03.q0_forward_kl(p_hash) == pytest.approx(entropy, abs=1e-12)
    if np.all(p_hash == p_hash[0]):
        assert forward.value == pytest.approx(k * math.log(vocab), abs=1e-9)
    terms = np.concatenate([np.zeros(k), q0_payload_terms(table, vocab, m), [0.0]])
    np.testing.assert_allclose(forward.per_position, terms, rtol=0, atol=1e-9)
    np.testing.assert_allclose(c03.q0_per_position(table, vocab, m, k), terms[:-1], rtol=0, atol=1e-9)


@given(instances())
def test_q0_writes_a_consistent_document_with_the_collision_probability(instance):
    """Q0's documents (library probabilities of every sequence, equal to the listed hash-blind world)
    are consistent with probability sum_h p(h)^2; the rest have P = 0, so G = inf (unless one hash
    value takes every payload) and TV = 1 - sum_h p(h)^2."""
    vocab, m, k, table, _ = instance
    process, q0, length, p_hash = build(vocab, m, k, table)
    probs_p, probs_q0 = oracle_tables(vocab, m, k, table, length)
    sequences = all_sequences(vocab + 1, length)
    library_q0 = np.exp(np.asarray(sequence_log_prob(q0, sequences)))
    np.testing.assert_allclose(library_q0, probs_q0, rtol=0, atol=1e-12)
    collision = float(np.sum(p_hash**2))
    assert probs_q0[probs_p > 0].sum() == pytest.approx(collision, abs=1e-12)
    assert c03.consistency_probability(p_hash) == pytest.approx(collision, abs=1e-12)
    generation = generation_kl(process, q0, length)
    assert generation.off_support_fraction == pytest.approx(1 - collision, abs=1e-12)
    if collision < 1:
        assert generation.value == c03.q0_generation_kl(p_hash) == math.inf
    else:  # a constant hash: Q0 = P
        assert c03.q0_generation_kl(p_hash) == 0.0 and generation.value == pytest.approx(0.0, abs=1e-12)
    tv = total_variation(process, q0, length).value
    assert tv == pytest.approx(tv_oracle(probs_p, probs_q0), abs=1e-12)
    assert c03.q0_total_variation(p_hash) == pytest.approx(tv, abs=1e-12)


@given(instances(combos=COMBOS[:1]), st.integers(0, 2**32 - 1))
def test_off_support_freedom(instance, seed):
    """Predictors that follow Q0 on every prefix P can produce and anything at all after an
    inconsistency have F identical to Q0's (1e-9), the same TV to the data, and the same probability
    of every consistent document; yet their generations differ: two that continue with disjoint
    token sets are exactly 1 - sum_h p(h)^2 apart in TV (brute force over the library's sequence
    probabilities), the most any two such predictors can differ."""
    vocab, m, k, table, _ = instance
    process, q0, length, p_hash = build(vocab, m, k, table)
    rng = np.random.default_rng(seed)
    tokens = rng.permutation(vocab + 1)
    cut = int(rng.integers(1, vocab + 1))
    r1, r2 = np.zeros(vocab + 1), np.zeros(vocab + 1)
    r1[tokens[:cut]] = rng.dirichlet(np.ones(cut))
    r2[tokens[cut:]] = rng.dirichlet(np.ones(vocab + 1 - cut))
    r3 = rng.dirichlet(np.ones(vocab + 1))
    overrides = [override_off_support(q0, process, Constant(r)) for r in (r1, r2, r3)]
    base = forward_kl(process, q0, length).value
    sequences = all_sequences(vocab + 1, length)
    probs_p, _ = oracle_tables(vocab, m, k, table, length)
    generations = []
    for q in overrides:
        assert forward_kl(process, q, length).value == pytest.approx(base, abs=1e-9)
        assert total_variation(process, q, length).value == pytest.approx(1 - np.sum(p_hash**2), abs=1e-12)
        generations.append(np.exp(np.asarray(sequence_log_prob(q, sequences))))
    for probs in generations[1:]:
        np.testing.assert_allclose(probs[probs_p > 0], generations[0][probs_p > 0], rtol=0, atol=1e-12)
    off = 1 - np.sum(p_hash**2)
    assert tv_oracle(generations[0], generations[1]) == pytest.approx(off, abs=1e-12)
    assert tv_oracle(generations[0], generations[2]) <= off + 1e-12


@given(instances(), st.floats(0.01, 0.99))
def test_loss_is_at_least_minus_log_of_the_support_mass(instance, mass):
    """F = -log Q(supp P) + KL(P || Q(. | supp P)) for any Q (explicit tables, brute-force KL): a Q
    proportional to P on the support (mass * P + (1 - mass) * R off it) attains the bound,
    F = -log(mass) = log(1 / (1 - tau)) with tau its off-support mass, while a random Q with full
    support exceeds it. Q0 attains it (library F) exactly when p(h) is uniform on the hash values that
    occur (gap H(h) - H_2(h)); then TV = 1 - exp(-F)."""
    vocab, m, k, table, rng = instance
    process, q0, length, p_hash = build(vocab, m, k, table)
    probs_p, probs_q0 = oracle_tables(vocab, m, k, table, length)
    off = rng.random(len(probs_p)) * (probs_p == 0)
    proportional = mass * probs_p + (1 - mass) * off / off.sum()
    random_q = rng.dirichlet(np.ones(len(probs_p)))
    for q, attains in ((proportional, True), (random_q, False)):
        bound, gap = c03.support_decomposition(probs_p, q)
        assert bound == pytest.approx(-math.log(q[probs_p > 0].sum()), abs=1e-12)
        assert kl(probs_p, q) == pytest.approx(bound + gap, abs=1e-9)
        assert (gap < 1e-12) == attains
        assert kl(probs_p, q) >= c03.min_loss_for_off_support(q[probs_p == 0].sum()) - 1e-9
    assert c03.min_loss_for_off_support(1 - mass) == pytest.approx(-math.log(mass), rel=1e-12)
    # Q0: bound -log sum p^2, gap H(h) - H_2(h), zero iff p(h) is uniform on its support
    bound, gap = c03.support_decomposition(probs_p, probs_q0)
    forward = forward_kl(process, q0, length).value
    assert forward == pytest.approx(bound + gap, abs=1e-9)
    assert bound == pytest.approx(-math.log(c03.consistency_probability(p_hash)), abs=1e-12)
    assert gap == pytest.approx(c03.q0_support_gap(p_hash), abs=1e-9)
    used = p_hash[p_hash > 0]
    assert (c03.q0_support_gap(p_hash) < 1e-12) == bool(np.all(used == used[0]))
    if np.all(used == used[0]):
        assert c03.q0_total_variation(p_hash) == pytest.approx(-math.expm1(-forward), abs=1e-12)


def test_little_loss_buys_much_divergence_numbers():
    """4.6 nats of total loss buy TV = 0.99 (log 100, from math directly), at any length. With V = 3 and
    a bijective hash on two digits, Q0 pays F = 2 log 3 > 2, where Pinsker's sqrt(F / 2) > 1 says
    nothing, while TV = 1 - exp(-F) = 8/9 (brute force over the listed documents)."""
    assert c03.min_loss_for_off_support(0.99) == pytest.approx(math.log(100), rel=1e-12)
    assert round(c03.min_loss_for_off_support(0.99), 1) == 4.6
    vocab, m, k = 3, 2, 2
    table = np.random.default_rng(0).permutation(9)
    probs_p, probs_q0 = oracle_tables(vocab, m, k, table, k + m + 1)
    forward, tv = kl(probs_p, probs_q0), tv_oracle(probs_p, probs_q0)
    assert forward == pytest.approx(2 * math.log(3), abs=1e-12) and forward > 2
    assert pinsker_bound(forward) > 1
    assert tv == pytest.approx(8 / 9, abs=1e-12) and tv == pytest.approx(-math.expm1(-forward), abs=1e-12)
    p_hash = c03.hash_marginal(table, vocab, m, k)
    assert c03.q0_forward_kl(p_hash) == pytest.approx(forward, abs=1e-12)
    assert c03.q0_total_variation(p_hash) == pytest.approx(tv, abs=1e-12)


def test_q0_generations_are_consistent_at_the_collision_rate():
    """Sampling Q0 through its incremental interface: the fraction of consistent documents among 4000
    generations (those the data can produce) is within 5 standard errors of 1 / V^k = 1/4."""
    vocab, m, k = 2, 5, 2
    process, q0, length, _ = build(vocab, m, k, np.random.default_rng(1).permutation(np.repeat(np.arange(4), 8)))
    samples = generate(q0, jax.random.key(0), 4000, length)
    consistent = np.isfinite(np.asarray(process.log_prob(samples)))
    stderr = math.sqrt(0.25 * 0.75 / len(consistent))
    assert abs(consistent.mean() - 0.25) <= 5 * stderr


# --------------------------------------------------------------------------------------------------
# Intuition falsification
# --------------------------------------------------------------------------------------------------

FALSIFY = (2, 6, 1)  # m = 6: one payload of 64 with its own hash gives H(h) = 0.08 nats


def small_forward_kl_bounds_generation_kl(table) -> bool:
    """The intuition under test: Q0's forward KL below 0.1 nats implies its generation KL below 1 nat."""
    vocab, m, k = FALSIFY
    p_hash = np.bincount(table, minlength=vocab**k) / len(table)
    return not (c03.q0_forward_kl(p_hash) < 0.1) or c03.q0_generation_kl(p_hash) < 1.0


def test_hypothesis_falsifies_small_forward_kl_implies_small_generation_kl():
    """"F < 0.1 nats implies G < 1 nat" is false for hash-then-payload: Hypothesis finds (and shrinks)
    a hash table with a nearly constant hash, so Q0 loses almost nothing yet writes inconsistent
    documents; the library confirms F < 0.1 and G = inf on that table."""
    vocab, m, k = FALSIFY
    tables = st.lists(st.integers(0, vocab**k - 1), min_size=vocab**m, max_size=vocab**m).map(np.array)
    table = find(tables, lambda t: not small_forward_kl_bounds_generation_kl(t), settings=settings(database=None))
    process, q0, length, _ = build(vocab, m, k, table)
    forward, generation = forward_kl(process, q0, length), generation_kl(process, q0, length)
    print(f"counterexample: hash counts {np.bincount(table).tolist()}: F = {forward.value:.4g} nats, "
          f"G = {generation.value}, Q0 inconsistent with probability {generation.off_support_fraction:.4g}")
    assert forward.value < 0.1 and generation.value == math.inf


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: c03.hash_entropy([0.5, 0.6]), "p_hash"),
        (lambda: c03.consistency_probability([-0.5, 1.5]), "p_hash"),
        (lambda: c03.hash_marginal(np.zeros(4, int), 2, 3, 1), "table"),
        (lambda: c03.hash_marginal(np.full(8, 2), 2, 3, 1), "table"),
        (lambda: c03.q0_per_position(np.zeros(8, int), 1, 3, 1), "vocab_size"),
        (lambda: c03.support_decomposition([0.5, 0.5], [1.0]), "same size"),
        (lambda: c03.support_decomposition([0.5, 0.5], [0.7, 0.7]), "q_probs"),
        (lambda: c03.min_loss_for_off_support(1.0), "mass"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
