"""The hash-then-payload family's test oracles: instances and each named hash recomputed from its
definition, and a brute force over "worlds" (weighted documents (H(y), y) with an HMM tail; the data
world and the hash-blind world of Q0). Shared by test_family_hashing.py and
test_family_hashing_corners.py; none of it shares code with the library.
"""


from __future__ import annotations

import itertools

import brute_force as bf
import numpy as np
from hypothesis import strategies as st

from toymodels.processes import HMMProcess
from toymodels.processes.hash_functions import modular_coefficients
from toymodels.processes.hashing import (
    hash_then_payload,
)

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


