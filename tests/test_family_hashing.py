"""The hash-then-payload family (claim C3) against independent oracles, and C3's exact facts.

Oracles, none sharing code with the library:
- a brute force over "worlds": a list of weighted documents heads (H(y), y) (the data: weight 1/V^m
  each; the hash-blind world of Q0: every (h, y) with weight p(h)/V^m), with H recomputed in this file
  from each hash's definition; prefix probabilities are sums of matching weights times the tail's
  path-sum probability (tests/brute_force.py), conditionals are ratios of those sums;
- the generic HMM filter on the HMM form of the same process (`hash_then_payload_hmm`);
- C3's closed forms: F(Q0) = H(h) (k log V balanced), Q0(consistent) = sum_h p(h)^2, G = inf,
  TV = 1 - sum_h p(h)^2, and F >= -log Q(supp P) with equality iff Q restricted to supp P is
  proportional to P.

Jit caches: instances come from a few fixed (V, m, k, tail) combinations and probe batches of one
shape per combination, so Hypothesis examples (hash kind, seed) reuse compiled code. Divergence tests
use explicit hash tables, so every instance of a combination shares one pytree structure.
"""

from __future__ import annotations

import itertools
import math

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from wrappers import Constant

from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import Process, override_off_support, sequence_log_prob
from toymodels.processes import HMMProcess, TableProcess
from toymodels.processes.hash_functions import modular_coefficients
from toymodels.processes.hashing import (
    hash_then_payload,
    hash_then_payload_hmm,
    non_inverting_predictor,
)
from toymodels.processes.registry import catalog, make_process
from toymodels.sampling import generate

LOG_ATOL = 1e-9
ROWS = 512
# (V, m, k, custom tail): V = 2 with a two-digit hash over a four-digit payload, and V = 3 with an
# HMM tail.
COMBOS = ((2, 4, 2, False), (3, 2, 1, True))
HASH_KINDS = ("balanced", "modular", "mix", "random_table")


# --------------------------------------------------------------------------------------------------
# Instances and hash definitions
# --------------------------------------------------------------------------------------------------


def digits(index, vocab: int, length: int) -> np.ndarray:
    """[len(index), length] base-V digits, most significant first (written here, not imported)."""
    out = np.zeros((len(index), length), np.int64)
    rest = np.array(index, np.int64)
    for position in range(length - 1, -1, -1):
        out[:, position], rest = rest % vocab, rest // vocab
    return out


def random_tail(rng: np.random.Generator, vocab: int) -> HMMProcess:
    """A two-state HMM over tokens 0..vocab-1 with some impossible (token, move) pairs."""
    joint = rng.dirichlet(np.ones(vocab * 2), size=2) * (rng.random((2, vocab * 2)) < 0.7)
    joint[:, 0] += 0.05  # each row keeps a possible edge
    joint /= joint.sum(axis=1, keepdims=True)
    return HMMProcess(joint.reshape(2, vocab, 2).transpose(1, 0, 2), rng.dirichlet(np.ones(2)))


def mix_by_definition(vocab: int, payload_length: int, hash_length: int, seed: int) -> np.ndarray:
    """The "mix" hash of hash_functions' docstring, one payload at a time with Python integers."""
    start = int(np.random.default_rng(seed).integers(0, 2**32))
    out = []
    for y in itertools.product(range(vocab), repeat=payload_length):
        z = start
        for digit in y:
            z = ((z ^ (digit + 1)) * 0x9E3779B1) % 2**32
            z ^= z >> 15
            z = (z * 0x85EBCA77) % 2**32
            z ^= z >> 13
        out.append(z * vocab**hash_length >> 32)
    return np.array(out)


def modular_by_definition(vocab: int, payload_length: int, hash_length: int, seed: int) -> np.ndarray:
    """h_j = (c_j + sum_i a_{j,i} y_i^3) mod V, hash digits read as a base-V number."""
    a, c = modular_coefficients(vocab, payload_length, hash_length, seed)
    out = []
    for y in itertools.product(range(vocab), repeat=payload_length):
        h = [(int(c[j]) + sum(int(a[j, i]) * y[i] ** 3 for i in range(payload_length))) % vocab for j in range(hash_length)]
        out.append(sum(d * vocab ** (hash_length - 1 - j) for j, d in enumerate(h)))
    return np.array(out)


def table_by_definition(process, kind: str, seed: int, explicit=None) -> np.ndarray:
    """H as a table [V^m], from the hash's definition (a balanced table is only defined by its counts)."""
    vocab, m, k = process.alphabet, process.payload_length, process.hash_length
    if kind == "modular":
        return modular_by_definition(vocab, m, k, seed)
    if kind == "mix":
        return mix_by_definition(vocab, m, k, seed)
    if kind == "random_table":
        return np.asarray(explicit)
    table = np.asarray(process.hash_of)
    assert np.all(np.bincount(table, minlength=vocab**k) == vocab ** (m - k)), "balanced hash is not balanced"
    return table


@st.composite
def instances(draw, combos=COMBOS, kinds=HASH_KINDS):
    """(process, hash table by definition, rng) for one combination and hash kind."""
    vocab, m, k, with_tail = draw(st.sampled_from(combos), label="combo")
    kind = draw(st.sampled_from(kinds), label="hash")
    seed = draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    explicit = rng.integers(0, vocab**k, size=vocab**m) if kind == "random_table" else None
    tail = random_tail(rng, vocab + 1) if with_tail else None
    process = hash_then_payload(vocab, m, k, hash=kind if explicit is None else explicit, tail=tail, seed=seed)
    return process, table_by_definition(process, kind, seed, explicit), rng


# --------------------------------------------------------------------------------------------------
# The brute-force oracle
# --------------------------------------------------------------------------------------------------


class World:
    """Documents (head, tail): weighted heads [E, k+m] with a flag each, then the process's tail."""

    def __init__(self, process, heads, weights, flags):
        self.process, self.heads, self.weights, self.flags = process, heads, weights, flags
        self.head_length = heads.shape[1]
        if process.custom_tail:
            self.tail_arrays = (np.asarray(process.tail.transitions, np.float64), np.asarray(process.tail.initial))
        else:  # the end-of-document token forever: one state that emits it
            eod = process.alphabet
            self.tail_arrays = (np.eye(eod + 1)[:, eod].reshape(eod + 1, 1, 1), np.ones(1))

    def tail_prob(self, tokens) -> np.ndarray:
        return bf.hmm_sequence_probs(*self.tail_arrays, tokens)

    def matches(self, seqs) -> np.ndarray:
        """[R, E]: weight of every head that agrees with each row's (possibly partial) head, times the
        tail's probability of the row's tail."""
        seqs = np.asarray(seqs, np.int64)
        length = min(seqs.shape[1], self.head_length)
        agree = np.all(seqs[:, None, :length] == self.heads[None, :, :length], axis=2)
        tail = self.tail_prob(seqs[:, self.head_length :]) if seqs.shape[1] > self.head_length else 1.0
        return agree * self.weights[None, :] * np.asarray(tail).reshape(-1, 1)

    def prob(self, seqs) -> np.ndarray:
        return self.matches(seqs).sum(axis=1)

    def conditionals(self, seqs, vocab) -> np.ndarray:
        """[R, L, vocab] P(x_t = v | x_<t); all 0 after a prefix of probability 0."""
        rows, length = seqs.shape
        out = np.zeros((rows, length, vocab))
        for t in range(length):
            here = self.prob(seqs[:, :t])
            for v in range(vocab):
                extended = np.concatenate([seqs[:, :t], np.full((rows, 1), v)], axis=1)
                out[:, t, v] = np.divide(self.prob(extended), here, out=np.zeros(rows), where=here > 0)
        return out

    def posterior(self, seqs, values, num_values) -> np.ndarray:
        """[R, L+1, K] posterior over a function `values` [E] of the document head; it stays at its last
        value after a prefix of probability zero."""
        rows, length = seqs.shape
        out = np.zeros((rows, length + 1, num_values))
        one_hot = np.eye(num_values)[values]  # [E, K]
        for t in range(length + 1):
            weight = self.matches(seqs[:, :t])
            total = weight.sum(axis=1, keepdims=True)
            here = np.divide(weight @ one_hot, total, out=np.zeros((rows, num_values)), where=total > 0)
            out[:, t] = np.where(total > 0, here, out[:, t - 1] if t else here)
        return out


def data_world(process, table) -> World:
    """P: y uniform on V^m, head (H(y), y)."""
    vocab, m, k = process.alphabet, process.payload_length, process.hash_length
    n = vocab**m
    heads = np.concatenate([digits(table, vocab, k), digits(range(n), vocab, m)], axis=1)
    return World(process, heads, np.full(n, 1.0 / n), np.arange(n))


def blind_world(process, table) -> World:
    """Q0's world: h ~ p(h) and y uniform, independently; flag = whether H(y) = h."""
    vocab, m, k = process.alphabet, process.payload_length, process.hash_length
    n, num_hashes = vocab**m, vocab**k
    p_hash = np.bincount(table, minlength=num_hashes) / n
    h, y = (a.reshape(-1) for a in np.meshgrid(np.arange(num_hashes), np.arange(n), indexing="ij"))
    heads = np.concatenate([digits(h, vocab, k), digits(y, vocab, m)], axis=1)
    return World(process, heads, p_hash[h] / n, (table[y] == h).astype(int))


def probe_sequences(world: World, vocab: int, rng, rows: int = ROWS) -> np.ndarray:
    """[rows, k+m+2]: documents of the world (consistent for P's world, mostly not for the blind one's),
    the same with one token replaced (by any id up to vocab, which is impossible), and noise."""
    length = world.head_length + 2
    count = rows // 4
    pick = rng.choice(len(world.weights), size=2 * count, p=world.weights / world.weights.sum())
    tails = bf.hmm_sample(*world.tail_arrays, 2 * count, 2, rng)
    documents = np.concatenate([world.heads[pick], tails], axis=1)
    mutated = documents[:count].copy()
    mutated[np.arange(count), rng.integers(0, length, count)] = rng.integers(0, vocab + 1, count)
    noise = rng.integers(0, vocab + 1, size=(rows - 3 * count, length))
    return np.concatenate([documents, mutated, noise])


def assert_log_matches(log_lib, prob_ref, atol=LOG_ATOL):
    """log_lib == log(prob_ref): never NaN, exactly -inf where prob_ref is 0, close elsewhere."""
    log_lib, prob_ref = np.asarray(log_lib, np.float64), np.asarray(prob_ref, np.float64)
    assert log_lib.shape == prob_ref.shape and not np.any(np.isnan(log_lib))
    zero = prob_ref == 0
    assert np.all(np.isneginf(log_lib[zero])), "a zero-probability event has a finite log-probability"
    assert np.all(np.isfinite(log_lib[~zero])), "a possible event has log-probability -inf"
    np.testing.assert_allclose(log_lib[~zero], np.log(prob_ref[~zero]), rtol=0, atol=atol)


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


# --------------------------------------------------------------------------------------------------
# Deterministic corners, long sequences, sampling, errors
# --------------------------------------------------------------------------------------------------


def test_deterministic_zeros_are_exact():
    """End of document inside the hash or payload, ids >= vocab and anything but the end of document
    after the payload are exactly impossible; the end of document after the payload is exactly certain.
    (V, m, k) = (2, 4, 2) and rows padded to ROWS, the shapes of COMBOS[0]: no new compilation.)"""
    process = hash_then_payload(2, 4, 2, seed=3)
    eod = process.info["eod_token"]
    h = list(digits([int(process.hash_of[5])], 2, 2)[0])
    wrong = list(digits([(int(process.hash_of[5]) + 1) % 4], 2, 2)[0])
    y = [0, 1, 0, 1]  # payload 5
    rows = np.array(
        [h + y + [eod, eod], wrong + y + [eod, eod], [eod] + h[1:] + y + [eod, eod],
         h + [0, eod, 0, 1] + [eod, eod], h + y + [0, eod], h + y + [7, eod]]
    )  # fmt: skip
    padded = np.resize(rows, (ROWS, rows.shape[1]))
    log_prob = np.asarray(process.log_prob(padded))[: len(rows)]
    assert log_prob[0] == pytest.approx(-4 * math.log(2), abs=1e-14) and np.all(np.isneginf(log_prob[1:]))
    cond = np.asarray(process.log_conditionals(padded))[: len(rows)]
    assert not np.any(np.isnan(cond))
    assert np.all(np.isneginf(cond[:, 0, eod])) and np.all(np.isneginf(cond[0, 1:6, eod]))
    assert np.all(cond[0, 6:, eod] == 0.0) and np.all(np.isneginf(cond[0, 6:, :eod]))
    assert np.all(np.isneginf(cond[2, 1:])) and np.all(np.isneginf(cond[3, 4:])) and np.all(np.isneginf(cond[5, 7:]))
    chance = np.asarray(process.posterior(padded))[: len(rows), :, 1]
    assert chance[0, 0] == pytest.approx(0.25, abs=1e-15)  # sum_h p(h)^2 = V^-k
    assert chance[0, 6] == 1.0 and chance[1, 6] == 0.0  # decided once the payload is complete
    assert np.all(chance[2] == chance[2, 0])  # end of document as the first token: frozen at the prior


def test_ten_thousand_tokens_stay_finite():
    """10^4-token documents with an HMM tail: finite log-probabilities and no NaN, for documents drawn
    here and for Q0's generations (through its incremental interface)."""
    rng = np.random.default_rng(1)
    tail = random_tail(rng, 4)
    process = hash_then_payload(3, 2, 1, hash="modular", tail=tail, seed=2)
    length, payloads = 10_000, np.array([4, 7])
    heads = np.concatenate([digits(np.asarray(process.hash_of)[payloads], 3, 1), digits(payloads, 3, 2)], axis=1)
    tails = bf.hmm_sample(np.asarray(tail.transitions), np.asarray(tail.initial), 2, length - 3, rng)
    seqs = np.concatenate([heads, tails], axis=1)
    assert np.all(np.isfinite(np.asarray(process.log_prob(seqs))))
    cond = np.asarray(process.log_conditionals(seqs))
    assert not np.any(np.isnan(cond))
    assert np.all(np.isfinite(np.take_along_axis(cond, seqs[..., None], axis=-1)))
    generated = generate(non_inverting_predictor(process), jax.random.PRNGKey(1), 2, length)
    assert not np.any(np.isnan(np.asarray(process.log_prob(generated))))


def test_samples_are_uniform_over_consistent_documents():
    """Each of the V^m documents (H(y), y) has frequency 1/V^m (exact binomial tests) and nothing else
    appears. Bonferroni: alpha = 1e-6 per cell over 27 cells, so a false alarm has probability below
    3e-5 (the draw is fixed by its key, so the test is deterministic anyway)."""
    vocab, m, k = 3, 3, 2
    process = hash_then_payload(vocab, m, k, hash="mix", seed=7)
    seqs = np.asarray(process.sample(jax.random.PRNGKey(0), 20_000, k + m + 1))
    assert np.all(seqs[:, -1] == process.info["eod_token"])
    payload = seqs[:, k : k + m] @ (vocab ** np.arange(m - 1, -1, -1))
    hashed = seqs[:, :k] @ (vocab ** np.arange(k - 1, -1, -1))
    np.testing.assert_array_equal(hashed, np.asarray(process.hash_of)[payload])
    counts = np.bincount(payload, minlength=vocab**m)
    assert np.all(bf.binomial_pvalues(counts, np.full(vocab**m, vocab**-m)) > 1e-6)


def test_protocol_registry_and_metadata():
    process = make_process("hash_then_payload", vocab_size=2, payload_length=3, hash_length=2)
    assert isinstance(process, Process) and "hash_then_payload" in catalog()
    assert process.vocab_size == 3 and process.max_length is None
    assert process.info == dict(eod_token=2, hash_length=2, payload_length=3, alphabet_size=2, hash="balanced")
    assert process.latents["consistent"] == ("no", "yes") and len(process.latents["preimage"]) == 8


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(vocab_size=1), "vocab_size"),
        (dict(vocab_size=2.5), "vocab_size"),
        (dict(payload_length=0), "payload_length"),
        (dict(payload_length=21), "payload_length"),
        (dict(hash_length=0), "hash_length"),
        (dict(hash_length=4), "hash_length"),  # balanced needs k <= m
        (dict(hash_length=21, hash="mix"), "hash_length"),
        (dict(hash="sha256"), "hash"),
        (dict(hash=np.zeros(7, int)), "hash"),
        (dict(hash=np.full(8, 4)), "hash"),
        (dict(hash=np.zeros(8)), "hash"),
        (dict(tail="eod"), "tail"),
        (dict(tail=Constant(np.ones(3) / 3)), "tail"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    arguments = dict(vocab_size=2, payload_length=3, hash_length=2) | kwargs
    with pytest.raises(ValueError, match=name):
        hash_then_payload(**arguments)


def test_bad_uses_raise():
    process = hash_then_payload(2, 3, 1)
    with pytest.raises(ValueError, match="latent"):
        process.posterior(np.zeros((1, 2), np.int32), "author")
    with pytest.raises(ValueError, match="tokens"):
        process.log_prob(np.array([[0, -1]]))
    with pytest.raises(ValueError, match="process"):
        non_inverting_predictor(HMMProcess(np.ones((1, 1, 1)), np.ones(1)))
    with pytest.raises(ValueError, match="tail"):
        hash_then_payload_hmm(hash_then_payload(2, 2, 1, tail=hash_then_payload(2, 1, 1)))
