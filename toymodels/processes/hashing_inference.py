"""Exact inference for the hash-then-payload process (see `hashing`), on its precomputed tables.

Sort the payloads by (H(y), y). Every prefix of the hash and payload is then one contiguous range
[lo, hi) of that order, the payloads it is consistent with, so

    P(prefix) = (hi - lo) / V^m,   p(v | prefix) = (size of the child range of v) / (hi - lo),

and the posterior over the payload is uniform on the range. During the hash, the child ranges are read
from the block offsets of the hash values (a gather). During the payload, the payloads in the range are
sorted, so each child boundary is a binary search inside the range (log2 of the range's size gathers).
Memory is O(V^m + V^k) whatever k is; a dense count table over (hash, payload prefix) would be
O(V^(k+m)). The tail's own process does the rest.

Jitted functions take `HashTables`, not the process, so processes that differ only in metadata (the
hash's name, latents) share compiled code.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from toymodels.predictors import PytreeNode, align_vocab


class HashTables(PytreeNode):
    """The arrays exact inference reads, from a hash table [V^m] of hash indices in [0, V^k)."""

    _data_fields = ("sorted_payloads", "sorted_position", "offsets", "node_squares", "hash_of", "tail")
    _static_fields = ("alphabet", "payload_length", "hash_length", "dtype_name")

    def __init__(self, table: np.ndarray, alphabet: int, payload_length: int, hash_length: int, tail, dtype):
        order = np.lexsort((np.arange(table.size), table))  # by hash, then payload
        counts = np.bincount(table, minlength=alphabet**hash_length)
        position = np.empty(table.size, np.int64)
        position[order] = np.arange(table.size)
        self.sorted_payloads = jnp.asarray(order, jnp.int32)  # payload indices in (hash, payload) order
        self.sorted_position = jnp.asarray(position, jnp.int32)  # where each payload sits in that order
        self.offsets = jnp.asarray(np.concatenate([[0], np.cumsum(counts)]), jnp.int32)  # hash h: [o_h, o_h+1)
        # Sum of count(h)^2 over the hash values h under each node of the hash trie, level by level
        # (level t: V^t nodes, one per t-token hash prefix; see _node_index), summed in float64 here and
        # rounded once: differences of float32 running sums lost whole small blocks past 2^24.
        levels = [counts.astype(np.float64) ** 2]
        for _ in range(hash_length):
            levels.append(levels[-1].reshape(-1, alphabet).sum(axis=1))
        self.node_squares = jnp.asarray(np.concatenate(levels[::-1]), dtype)
        self.hash_of = jnp.asarray(table, jnp.int32)
        self.tail = tail
        self.alphabet, self.payload_length, self.hash_length = alphabet, payload_length, hash_length
        self.dtype_name = np.dtype(dtype).name

    @property
    def vocab_size(self) -> int:
        return max(self.alphabet, self.tail.vocab_size)

    @property
    def num_payloads(self) -> int:
        return self.alphabet**self.payload_length

    @property
    def head_length(self) -> int:
        return self.hash_length + self.payload_length


# --------------------------------------------------------------------------------------------------
# The head (hash, then payload). The carry after t tokens is (node, lo, hi, alive, blind_alive): node
# is the hash prefix (t < k) or the payload prefix (t >= k) as a base-V number; [lo, hi) the range of
# consistent payloads in (hash, payload) order; alive whether P can produce the prefix; blind_alive
# whether the hash-blind world of Q0 (h ~ p(h), y uniform, independently) can.
# --------------------------------------------------------------------------------------------------


def _powers(proc: HashTables):
    return jnp.asarray(proc.alphabet ** np.arange(max(proc.hash_length, proc.payload_length) + 1), jnp.int32)


def _lower_bound(sorted_values, targets, lo, hi):
    """First index i in [lo, hi) with sorted_values[i] >= target (hi if none), elementwise."""
    last = sorted_values.shape[0] - 1

    def halve(bounds):  # the invariant: the answer lies in [lo, hi]
        lo, hi = bounds
        mid = (lo + hi) // 2
        below = (mid < hi) & (sorted_values[jnp.minimum(mid, last)] < targets)
        return jnp.where(below, mid + 1, lo), jnp.where(below, hi, mid)

    # A while loop rather than a fixed count: as many halvings as the largest range needs, and no
    # compile-time constant that would differ between hashes of the same shape.
    bounds = (jnp.broadcast_to(lo, targets.shape), jnp.broadcast_to(hi, targets.shape))
    return jax.lax.while_loop(lambda b: jnp.any(b[0] < b[1]), halve, bounds)[0]


def _bounds(proc: HashTables, carry, t):
    """[B, V + 1]: the consistent range splits into the child ranges [b_v, b_{v+1}) of next tokens v."""
    node, lo, hi = carry[:3]
    k, m, vocab = proc.hash_length, proc.payload_length, proc.alphabet
    powers, digits = _powers(proc), jnp.arange(vocab + 1)
    in_hash = t < k
    hash_node = jnp.where(in_hash, node, 0)
    hash_bounds = proc.offsets[(hash_node[:, None] * vocab + digits) * powers[k - 1 - jnp.clip(t, 0, k - 1)]]
    payload_node = jnp.where(in_hash, 0, node)
    width = powers[m - 1 - jnp.clip(t - k, 0, m - 1)]  # payloads under one child of the node
    targets = (payload_node[:, None] * vocab + digits[1:-1]) * width
    inner = _lower_bound(proc.sorted_payloads, targets, lo[:, None], hi[:, None])
    payload_bounds = jnp.concatenate([lo[:, None], inner, hi[:, None]], axis=1)
    return jnp.where(in_hash, hash_bounds, payload_bounds)


def _head_start(proc: HashTables, batch: int):
    zeros = jnp.zeros((batch,), jnp.int32)
    true = jnp.ones((batch,), bool)
    return (zeros, zeros, zeros + proc.num_payloads, true, true)


def _head_log_next(proc: HashTables, carry, bounds, t, blind):
    """[B, vocab] log p(next token | prefix of t tokens) for t < k + m (or Q0's, when blind). `blind` is
    a traced bool, so that P and Q0 share compiled code."""
    _, lo, hi, alive, blind_alive = carry
    counts = jnp.diff(bounds, axis=1).astype(proc.dtype_name)
    total = jnp.maximum(hi - lo, 1).astype(proc.dtype_name)[:, None]
    exact = jnp.where(alive[:, None] & (counts > 0), jnp.log(counts) - jnp.log(total), -jnp.inf)
    # Q0: the same hash marginal, then every payload token with probability 1/V
    uniform = jnp.where(blind_alive[:, None], -jnp.log(jnp.asarray(proc.alphabet, proc.dtype_name)), -jnp.inf)
    exact = jnp.where(blind & (t >= proc.hash_length), jnp.broadcast_to(uniform, exact.shape), exact)
    return align_vocab(exact, proc.vocab_size)


def _int32(tokens):
    """Token ids as int32 (ids beyond int32 are as impossible as any id >= V, so clip them first)."""
    if jnp.iinfo(tokens.dtype).max > np.iinfo(np.int32).max:
        tokens = jnp.minimum(tokens, np.iinfo(np.int32).max)
    return tokens.astype(jnp.int32)


def _head_advance(proc: HashTables, carry, bounds, token, t):
    """The carry after `token` at position t; impossible tokens leave the payload range where it was."""
    token = _int32(token)
    node, lo, hi, alive, blind_alive = carry
    in_alphabet = token < proc.alphabet
    safe = jnp.where(in_alphabet, token, 0)
    new_lo = jnp.take_along_axis(bounds, safe[:, None], axis=1)[:, 0]
    new_hi = jnp.take_along_axis(bounds, safe[:, None] + 1, axis=1)[:, 0]
    ok = alive & in_alphabet & (new_hi > new_lo)
    blind_ok = blind_alive & in_alphabet & ((t >= proc.hash_length) | (new_hi > new_lo))
    new_node = jnp.where(t == proc.hash_length - 1, 0, node * proc.alphabet + safe)
    node, lo, hi = (jnp.where(ok, a, b) for a, b in ((new_node, node), (new_lo, lo), (new_hi, hi)))
    return (node, lo, hi, ok, blind_ok)


def _head_scan(proc: HashTables, tokens, blind, want_next: bool, want_carries: bool):
    """Scan the first min(L, k + m) tokens: (final carry, (per-step log_next, per-step carries))."""
    head = _int32(tokens[:, : proc.head_length])

    def body(carry, inputs):
        t, token = inputs
        bounds = _bounds(proc, carry, t)
        log_next = _head_log_next(proc, carry, bounds, t, blind) if want_next else None
        carry = _head_advance(proc, carry, bounds, token, t)
        return carry, (log_next, carry if want_carries else None)

    steps = (jnp.arange(head.shape[1]), head.T)
    return jax.lax.scan(body, _head_start(proc, tokens.shape[0]), steps)


def _tail_tokens(proc: HashTables, tokens):
    return tokens[:, proc.head_length :]


@jax.jit
def log_conditionals(proc: HashTables, tokens, blind):
    carry, (log_next, _) = _head_scan(proc, tokens, blind, want_next=True, want_carries=False)
    out = jnp.swapaxes(log_next, 0, 1).reshape(tokens.shape[0], -1, proc.vocab_size)
    if tokens.shape[1] > proc.head_length:
        tail = align_vocab(proc.tail.log_conditionals(_tail_tokens(proc, tokens)), proc.vocab_size)
        alive = jnp.where(blind, carry[4], carry[3])
        out = jnp.concatenate([out, jnp.where(alive[:, None, None], tail.astype(out.dtype), -jnp.inf)], axis=1)
    return out


@jax.jit
def log_prob(proc: HashTables, tokens):
    (_, lo, hi, alive, _), _ = _head_scan(proc, tokens, False, want_next=False, want_carries=False)
    count = jnp.maximum(hi - lo, 1).astype(proc.dtype_name)
    out = jnp.where(alive, jnp.log(count) - jnp.log(jnp.asarray(proc.num_payloads, proc.dtype_name)), -jnp.inf)
    if tokens.shape[1] > proc.head_length:
        out = out + proc.tail.log_prob(_tail_tokens(proc, tokens)).astype(out.dtype)
    return out


def _hold_after_head(values, length: int):
    """Extend per-prefix values [B, H+1, ...] (prefixes up to the head) to all L+1 prefixes."""
    missing = length + 1 - values.shape[1]
    return jnp.concatenate([values, jnp.repeat(values[:, -1:], missing, axis=1)], axis=1) if missing else values


def _node_index(proc: HashTables, depth, node):
    """Where the hash-trie node `node` (a depth-token hash prefix as an integer) sits in node_squares:
    after the (V^depth - 1) / (V - 1) nodes of the levels above it."""
    return (_powers(proc)[depth] - 1) // (proc.alphabet - 1) + node


def _consistent_chance(proc: HashTables, node, lo, hi, alive, blind_alive):
    """[B, H+1] P(H(y) = h | prefix of t tokens) in the hash-blind world; frozen after a prefix that
    world cannot produce (blind_alive is monotone, so its running count finds the last one it can)."""
    k, m, n = proc.hash_length, proc.payload_length, proc.num_payloads
    t = jnp.arange(node.shape[1])
    in_hash = t < k
    squares = proc.node_squares[_node_index(proc, jnp.clip(t, 0, k), jnp.where(in_hash, node, 0))]
    size = (hi - lo).astype(proc.dtype_name)
    hash_phase = squares / (jnp.maximum(size, 1.0) * n)
    payload_phase = size / _powers(proc).astype(proc.dtype_name)[m - jnp.clip(t - k, 0, m)]
    raw = jnp.where(alive, jnp.where(in_hash, hash_phase, payload_phase), 0.0)
    last_possible = jnp.cumsum(blind_alive, axis=1) - 1
    return jnp.take_along_axis(raw, last_possible, axis=1)


@jax.jit
def prefix_states(proc: HashTables, tokens):
    """(lo, hi, chance) after every prefix [B, L+1], and whether P can produce the head [B].

    [lo, hi) is the range of payloads consistent with the prefix, frozen after an impossible token;
    chance is the "consistent" posterior (see `hashing`)."""
    batch, length = tokens.shape
    start = _head_start(proc, batch)
    carry, (_, steps) = _head_scan(proc, tokens, False, want_next=False, want_carries=True)
    node, lo, hi, alive, blind_alive = (
        jnp.concatenate([s0[:, None], jnp.swapaxes(s, 0, 1)], axis=1) for s0, s in zip(start, steps)
    )
    chance = _consistent_chance(proc, node, lo, hi, alive, blind_alive)
    return _hold_after_head(lo, length), _hold_after_head(hi, length), _hold_after_head(chance, length), carry[3]


@jax.jit
def uniform_on_ranges(sorted_position, lo, hi):
    """[B, L+1, V^m]: the uniform distribution on the payloads whose sorted position is in [lo, hi)."""
    inside = (sorted_position >= lo[..., None]) & (sorted_position < hi[..., None])
    return inside / (hi - lo)[..., None]


@partial(jax.jit, static_argnames=("name",))
def tail_posterior(proc: HashTables, tokens, head_alive, name: str):
    """The tail's prior until the tail starts, then its posterior; the prior after an impossible head."""
    length = tokens.shape[1]
    prior = proc.tail.posterior(tokens[:, :0], name)  # [B, 1, K]
    before = jnp.repeat(prior, min(length, proc.head_length) + 1, axis=1)
    if length <= proc.head_length:
        return before.astype(proc.dtype_name)
    after = proc.tail.posterior(_tail_tokens(proc, tokens), name)[:, 1:]
    after = jnp.where(head_alive[:, None, None], after, prior)
    return jnp.concatenate([before, after], axis=1).astype(proc.dtype_name)


# --------------------------------------------------------------------------------------------------
# Incremental interface and sampling
# --------------------------------------------------------------------------------------------------


def _next(proc: HashTables, carry, bounds, t, tail_next, blind):
    head = _head_log_next(proc, carry, bounds, t, blind)
    alive = jnp.where(blind, carry[4], carry[3])
    tail = jnp.where(alive[:, None], align_vocab(tail_next, proc.vocab_size).astype(head.dtype), -jnp.inf)
    return jnp.where(t < proc.head_length, head, tail)


def init(proc: HashTables, batch: int, blind):
    carry = _head_start(proc, batch)
    t = jnp.zeros((), jnp.int32)
    bounds = _bounds(proc, carry, t)
    tail_state, tail_next = proc.tail.init_state(batch)
    state = (carry, bounds, t, tail_state, tail_next)
    return state, _next(proc, carry, bounds, t, tail_next, blind)


def step(proc: HashTables, state, token, blind):
    carry, bounds, t, tail_state, tail_next = state
    in_head = t < proc.head_length
    advanced = _head_advance(proc, carry, bounds, token, t)
    carry = jax.tree_util.tree_map(lambda a, b: jnp.where(in_head, a, b), advanced, carry)
    stepped_state, stepped_next = proc.tail.step(tail_state, token)
    tail_state, tail_next = jax.tree_util.tree_map(
        lambda a, b: jnp.where(in_head, b, a), (stepped_state, stepped_next), (tail_state, tail_next)
    )
    t = t + 1
    bounds = _bounds(proc, carry, t)
    return (carry, bounds, t, tail_state, tail_next), _next(proc, carry, bounds, t, tail_next, blind)


@partial(jax.jit, static_argnames=("num_sequences",))
def sample_head(proc: HashTables, key, num_sequences: int):
    payload = jax.random.randint(key, (num_sequences,), 0, proc.num_payloads)
    def digits(index, length):
        return (index[:, None] // proc.alphabet ** np.arange(length - 1, -1, -1)) % proc.alphabet

    head = [digits(proc.hash_of[payload], proc.hash_length), digits(payload, proc.payload_length)]
    return jnp.concatenate(head, axis=1).astype(jnp.int32)


