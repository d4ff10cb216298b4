"""The hash-then-payload family: deterministic zeros, 10^4-token sequences, sampling, the protocol and
registry, and bad arguments (oracles in hashing_worlds.py)."""

from __future__ import annotations

import math

import brute_force as bf
import jax
import numpy as np
import pytest
from hashing_worlds import ROWS, digits, random_tail
from wrappers import Constant

from toymodels.predictors import Process
from toymodels.processes import HMMProcess
from toymodels.processes.hashing import (
    hash_then_payload,
    hash_then_payload_hmm,
    non_inverting_predictor,
)
from toymodels.processes.registry import catalog, make_process
from toymodels.sampling import generate

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


def test_float32_consistent_posterior_of_a_small_block_beside_large_ones():
    """float32: hash values 0 and 1 hold about half of V^m = 2^20 payloads each, 2 holds a few, 6 and 7
    one each. Given the hash prefix (1, 1) the hash-blind world's P(H(y) = hash of the payload) is
    sum over h in {6, 7} of count(h)^2 / (n (count(6) + count(7))) = 1 / n: a block of size 2 after
    sums of about 5e11 > 2^24. From differences of float32 running sums of count^2 it came out 0 or
    16,000 times too large; from per-node sums it is right to float32 rounding."""
    n = 2**20
    for small in (1, 3, 117):  # count of hash value 2
        counts = np.array([n // 2, n // 2 - 2 - small, small, 0, 0, 0, 1, 1])
        table = np.repeat(np.arange(8), counts)
        with jax.enable_x64(False):
            process = hash_then_payload(2, 20, 3, hash=table)
            chance = np.asarray(process.posterior(np.array([[1, 1, 0]]), "consistent"))[0, :, 1]
        expected = [(counts.astype(float) ** 2).sum() / n**2, 2 / (n * 2), 2 / (n * 2), counts[6] / n]
        np.testing.assert_allclose(chance, expected, rtol=1e-5)


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
        (dict(vocab_size=None), "vocab_size"),
        (dict(vocab_size=float("nan")), "vocab_size"),
        (dict(payload_length=2.5), "payload_length"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    arguments = dict(vocab_size=2, payload_length=3, hash_length=2) | kwargs
    with pytest.raises(ValueError, match=name):
        hash_then_payload(**arguments)


def test_preimage_labels_are_distinct_with_two_digit_tokens():
    """V = 12: payloads (1, 10) and (11, 0) once shared the label '110'; every latent's labels are distinct."""
    labels = hash_then_payload(12, 2, 1).latents["preimage"]
    assert len(labels) == 144 and len(set(labels)) == 144 and labels[22] == "1,10"


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
