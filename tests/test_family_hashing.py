"""The hash-then-payload family (claim C3) against independent oracles, and C3's exact facts.

Oracles, none sharing code with the library:
- a brute force over "worlds": a list of weighted documents heads (H(y), y) (the data: weight 1/V^m
  each; the hash-blind world of Q0: every (h, y) with weight p(h)/V^m), with H recomputed from each
  hash's definition (both in hashing_worlds.py); prefix probabilities are sums of matching weights
  times the tail's path-sum probability (tests/brute_force.py), conditionals are ratios of those sums;
- the generic HMM filter on the HMM form of the same process (`hash_then_payload_hmm`);
- C3's closed forms: F(Q0) = H(h) (k log V balanced), Q0(consistent) = sum_h p(h)^2, G = inf,
  TV = 1 - sum_h p(h)^2, and F >= -log Q(supp P) with equality iff Q restricted to supp P is
  proportional to P.

Jit caches: instances come from a few fixed (V, m, k, tail) combinations and probe batches of one
shape per combination, so Hypothesis examples (hash kind, seed) reuse compiled code. Divergence tests
use explicit hash tables, so every instance of a combination shares one pytree structure. Corners, long
sequences, sampling and bad arguments: test_family_hashing_corners.py.
"""

from __future__ import annotations

import math

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hashing_worlds import (
    ROWS,
    blind_world,
    data_world,
    instances,
    probe_sequences,
)
from hypothesis import given, note, settings
from hypothesis import strategies as st
from log_checks import LOG_ATOL, assert_log_matches
from wrappers import Constant

from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import override_off_support, sequence_log_prob
from toymodels.processes import TableProcess
from toymodels.processes.hashing import (
    hash_then_payload,
    hash_then_payload_hmm,
    non_inverting_predictor,
)

# --------------------------------------------------------------------------------------------------
# Exactness: brute force and the HMM form
# --------------------------------------------------------------------------------------------------


@given(instances())
def test_probabilities_and_posteriors_match_brute_force(instance):
    """log_prob, conditionals, the "preimage" and "consistent" posteriors of P, and Q0's conditionals,
    on documents, one-token corruptions and noise, against sums over the worlds."""
    process, table, rng = instance
    note(f"V={process.alphabet} m={process.payload_length} k={process.hash_length} hash={process.info['hash']}")
    data, blind = data_world(process, table), blind_world(process, table)
    vocab = process.vocab_size
    seqs = np.concatenate([probe_sequences(data, vocab, rng, ROWS // 2), probe_sequences(blind, vocab, rng, ROWS // 2)])
    assert_log_matches(process.log_prob(seqs), data.prob(seqs))
    assert_log_matches(process.log_conditionals(seqs), data.conditionals(seqs, vocab))
    q0 = non_inverting_predictor(process)
    assert_log_matches(q0.log_conditionals(seqs), blind.conditionals(seqs, vocab))
    np.testing.assert_allclose(
        process.posterior(seqs, "preimage"), data.posterior(seqs, data.flags, len(data.flags)), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(process.posterior(seqs, "consistent"), blind.posterior(seqs, blind.flags, 2), rtol=0, atol=1e-12)


@given(instances())
def test_direct_form_equals_the_hmm_form(instance):
    """The direct implementation and the generic HMM filter on the HMM form agree everywhere. (The HMM's
    sequence log-probabilities are taken from its conditionals by the chain rule, which saves a
    compilation of its filter and is the same number.)"""
    process, _, rng = instance
    hmm = hash_then_payload_hmm(process)
    seqs = probe_sequences(data_world(process, np.asarray(process.hash_of)), process.vocab_size, rng)
    cond_p, cond_h = np.asarray(process.log_conditionals(seqs)), np.asarray(hmm.log_conditionals(seqs))
    log_p = np.asarray(process.log_prob(seqs))
    vocab = process.vocab_size
    picked = np.take_along_axis(cond_h, np.minimum(seqs, vocab - 1)[..., None], axis=-1)[..., 0]
    log_h = np.where(seqs < vocab, picked, -np.inf).sum(axis=1)  # ids >= vocab are impossible
    assert np.array_equal(np.isneginf(log_p), np.isneginf(log_h))
    np.testing.assert_allclose(log_p[np.isfinite(log_h)], log_h[np.isfinite(log_h)], rtol=0, atol=LOG_ATOL)
    assert np.array_equal(np.isneginf(cond_p), np.isneginf(cond_h))
    np.testing.assert_allclose(cond_p[np.isfinite(cond_h)], cond_h[np.isfinite(cond_h)], rtol=0, atol=LOG_ATOL)
    for latent in hmm.latents:  # "preimage" and, with a custom tail, the tail's latents
        np.testing.assert_allclose(process.posterior(seqs, latent), hmm.posterior(seqs, latent), rtol=0, atol=1e-12)


@given(instances(kinds=("random_table",)))
def test_incremental_interface_matches_log_conditionals(instance):
    """init_state/step give the same conditionals as log_conditionals, for P and for Q0. (One hash kind:
    the kind is in the process's static metadata, and this jit takes the whole process.)"""
    process, table, rng = instance
    worlds = (data_world(process, table), blind_world(process, table))
    seqs = jnp.asarray(np.concatenate([probe_sequences(w, process.vocab_size, rng, ROWS // 2) for w in worlds]))
    q0 = non_inverting_predictor(process)
    for predictor, stepped in zip((process, q0), _stepped(process, seqs)):
        stepped, batch = np.asarray(stepped), np.asarray(predictor.log_conditionals(seqs))
        assert np.array_equal(np.isneginf(stepped), np.isneginf(batch))
        np.testing.assert_allclose(stepped[np.isfinite(batch)], batch[np.isfinite(batch)], rtol=0, atol=1e-12)


@jax.jit
def _stepped(process, seqs):
    """[B, L, V] conditionals from init_state/step, for P and for Q0 (one compilation for both)."""
    out = []
    for predictor in (process, non_inverting_predictor(process)):
        state, first = predictor.init_state(seqs.shape[0])
        _, rest = jax.lax.scan(lambda s, token, q=predictor: q.step(s, token), state, seqs.T[:-1])
        out.append(jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1))
    return out


@settings(max_examples=max(3, settings().max_examples // 5))
@given(instances(kinds=("balanced", "modular", "mix")))
def test_named_hashes_follow_their_definitions(instance):
    """Balanced tables have V^(m-k) preimages per hash; "modular" is balanced for prime V with k <= m."""
    process, table, _ = instance
    np.testing.assert_array_equal(np.asarray(process.hash_of), table)
    counts = np.bincount(table, minlength=process.alphabet**process.hash_length)
    assert process.is_balanced == bool(np.all(counts == counts[0]))
    np.testing.assert_allclose(process.hash_marginal(), counts / table.size, rtol=0, atol=1e-15)
    if process.info["hash"] in ("balanced", "modular"):  # V in {2, 3} is prime, k <= m
        assert process.is_balanced


# --------------------------------------------------------------------------------------------------
# C3's exact facts
# --------------------------------------------------------------------------------------------------


@st.composite
def c3_instances(draw, vocab=2, m=4, k=2):
    """A process with an explicit table: balanced (a shuffled block table) or random."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    if draw(st.booleans(), label="balanced"):
        table = rng.permutation(np.repeat(np.arange(vocab**k), vocab ** (m - k)))
    else:
        table = rng.integers(0, vocab**k, size=vocab**m)
    return hash_then_payload(vocab, m, k, hash=table), table, rng


@given(c3_instances())
def test_c3_non_inverting_predictor(instance):
    """F(Q0) = H(h) (k log V balanced) whatever m; Q0 generates a consistent document with probability
    sum_h p(h)^2, so G = inf and TV = 1 - sum_h p(h)^2; F >= -log Q0(supp P), with equality when
    balanced (then TV = 1 - exp(-F))."""
    process, table, _ = instance
    q0 = non_inverting_predictor(process)
    length = process.head_length + 1
    counts = np.bincount(table, minlength=process.alphabet**process.hash_length)
    p_hash = counts / table.size
    entropy = -np.sum(p_hash[p_hash > 0] * np.log(p_hash[p_hash > 0]))
    collision = np.sum(p_hash**2)
    forward = forward_kl(process, q0, length)
    assert forward.value == pytest.approx(entropy, abs=1e-9) and forward.off_support_fraction == 0.0
    generation = generation_kl(process, q0, length)
    assert generation.value == np.inf and generation.off_support_fraction == pytest.approx(1 - collision, abs=1e-12)
    assert total_variation(process, q0, length).value == pytest.approx(1 - collision, abs=1e-12)
    assert forward.value >= -math.log(collision) - 1e-9  # Shannon entropy >= Renyi-2 entropy
    if np.all(counts == counts[0]):
        k, vocab = process.hash_length, process.alphabet
        assert forward.value == pytest.approx(k * math.log(vocab), abs=1e-9)
        assert forward.value == pytest.approx(-math.log(collision), abs=1e-9)
        assert 1 - collision == pytest.approx(1 - math.exp(-forward.value), abs=1e-12)


def test_c3_loss_of_q0_does_not_grow_with_the_payload():
    """F(Q0) = k log V for a balanced hash whatever m: 2 log 2 with m = k = 2 here, as with m = 4 above."""
    process = hash_then_payload(2, 2, 2, seed=5)
    length = process.head_length + 1
    assert forward_kl(process, non_inverting_predictor(process), length).value == pytest.approx(2 * math.log(2), abs=1e-9)


@given(c3_instances())
def test_c3_off_support_freedom(instance):
    """Predictors that follow Q0 on every prefix P can produce and anything else elsewhere have the same
    F to 1e-9, yet generate differently: two that emit different fixed tokens after an inconsistency
    are at TV exactly 1 - sum_h p(h)^2 from each other."""
    process, table, rng = instance
    q0, vocab = non_inverting_predictor(process), process.vocab_size
    length = process.head_length + 1
    others = [np.full(vocab, 1 / vocab), rng.dirichlet(np.ones(vocab)), np.eye(vocab)[0], np.eye(vocab)[vocab - 1]]
    overrides = [override_off_support(q0, process, Constant(r)) for r in others]
    base = forward_kl(process, q0, length).value
    for q in overrides:
        assert forward_kl(process, q, length).value == pytest.approx(base, abs=1e-9)
    seqs = bf.all_sequences(vocab, length)
    first, last = (np.exp(np.asarray(sequence_log_prob(q, seqs))) for q in overrides[2:])
    p_hash = np.bincount(table, minlength=process.alphabet**process.hash_length) / table.size
    assert bf.total_variation(first, last) == pytest.approx(1 - np.sum(p_hash**2), abs=1e-12)


@settings(max_examples=max(5, settings().max_examples // 3))
@given(c3_instances(), st.floats(0.01, 0.99))
def test_c3_loss_bound_on_the_support(instance, mass):
    """For any Q, F >= -log Q(supp P); equality iff Q restricted to supp P is proportional to P: the
    mixture mass * P + (1 - mass) * R with R off the support has F = -log(mass) exactly, while a random
    Q with full support has F > -log Q(supp P)."""
    process, table, rng = instance
    vocab, length = process.vocab_size, process.head_length + 1
    seqs = bf.all_sequences(vocab, length)
    p = data_world(process, table).prob(seqs)
    assert_log_matches(process.log_prob(seqs), p)  # every sequence of V^(k+m+1), against brute force
    off = rng.random(len(p)) * (p == 0)
    proportional = TableProcess(mass * p + (1 - mass) * off / off.sum(), vocab_size=vocab)
    assert forward_kl(process, proportional, length).value == pytest.approx(-math.log(mass), abs=1e-9)
    q = rng.dirichlet(np.ones(len(p)))
    bound = -math.log(q[p > 0].sum())
    assert forward_kl(process, TableProcess(q, vocab_size=vocab), length).value > bound
