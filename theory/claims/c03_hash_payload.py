"""C3: verification can be easier than generation, shown with hash-then-payload documents (seed 001).

A document is (h, y, tail) with y uniform on V^m and h = H(y) in V^k written first
(`toymodels.processes.hashing`). The predictor Q0 (`non_inverting_predictor`) predicts the hash from
its marginal p(h) and the payload uniformly: it never inverts H. All of its prediction loss is the
hash's entropy, F = H(h) (k log V for a balanced hash), however long the payload is; yet it writes a
consistent document only with probability sum_h p(h)^2 (V^-k balanced), so its generation KL is
infinite and its total variation from the data is 1 - sum_h p(h)^2.

The general bound behind "little loss buys much divergence": for any Q,
F = -log Q(supp P) + KL(P || Q(. | supp P)) >= -log Q(supp P), with equality iff Q restricted to the
support is proportional to P. So putting mass tau off the support costs at least log(1 / (1 - tau))
nats of total loss, whatever the length (4.6 nats for tau = 0.99), and Q0 with a hash marginal that is
uniform on its support pays exactly that (TV = 1 - exp(-F)). What Q0 does after an inconsistency never
enters F: predictors that agree with it on every prefix the data can produce share its F exactly and
generate whatever they like (see `toymodels.predictors.override_off_support`).
"""

from __future__ import annotations

import math

import numpy as np

from toymodels.processes.hashing import hash_then_payload, non_inverting_predictor

__all__ = [
    "consistency_probability",
    "hash_entropy",
    "hash_marginal",
    "hash_then_payload",
    "min_loss_for_off_support",
    "non_inverting_predictor",
    "q0_forward_kl",
    "q0_generation_kl",
    "q0_per_position",
    "q0_support_gap",
    "q0_total_variation",
    "support_decomposition",
]


def _check_marginal(p_hash) -> np.ndarray:
    p = np.asarray(p_hash, np.float64)
    if p.ndim != 1 or p.size == 0 or np.any(~np.isfinite(p)) or np.any(p < 0):
        raise ValueError("p_hash must be a non-empty vector of non-negative probabilities (p(h) per hash value)")
    if abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"p_hash must sum to 1, got {p.sum()}")
    return p


def _check_table(table, vocab_size: int, payload_length: int, hash_length: int) -> np.ndarray:
    for name, value, low in (("vocab_size", vocab_size, 2), ("payload_length", payload_length, 1),
                             ("hash_length", hash_length, 1)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    array = np.asarray(table)
    if not np.issubdtype(array.dtype, np.integer) or array.shape != (vocab_size**payload_length,):
        raise ValueError(
            f"table must be an integer array of shape [V^m] = [{vocab_size**payload_length}] "
            f"(H(y) as a base-V index for every payload y), got {array.dtype}{array.shape}"
        )
    if array.min() < 0 or array.max() >= vocab_size**hash_length:
        raise ValueError(f"table values must lie in [0, V^k) = [0, {vocab_size**hash_length})")
    return array.astype(np.int64)


def _entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along `axis`, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, -probs * np.log(probs), 0.0)
    return terms.sum(axis=axis)


def hash_marginal(table, vocab_size: int, payload_length: int, hash_length: int) -> np.ndarray:
    """p(h) [V^k]: the fraction of the V^m payloads that hash to h."""
    table = _check_table(table, vocab_size, payload_length, hash_length)
    return np.bincount(table, minlength=vocab_size**hash_length) / table.size


def hash_entropy(p_hash) -> float:
    """H(h) = -sum_h p(h) log p(h), in nats."""
    return float(_entropy(_check_marginal(p_hash)))


def q0_forward_kl(p_hash) -> float:
    """F(Q0) over the hash and payload (and any tail, which Q0 predicts exactly): H(h) nats."""
    return hash_entropy(p_hash)


def q0_per_position(table, vocab_size: int, payload_length: int, hash_length: int) -> np.ndarray:
    """[k + m] chain-rule terms of F(Q0): 0 at every hash position (Q0 knows the hash marginal), and
    H(h | y_<s) - H(h | y_<=s) at payload position s, the information that payload token reveals
    about the hash. They add up to H(h) (the conditional entropies telescope from H(h) to 0).

    Why: y is uniform and h = H(y), so p(y_s | h, y_<s) against Q0's uniform 1/V has expected KL
    log V - H(y_s | h, y_<s) = H(h | y_<s) - H(h | y_<=s)."""
    table = _check_table(table, vocab_size, payload_length, hash_length)
    num_hashes, n = vocab_size**hash_length, table.size
    conditional = np.zeros(payload_length + 1)  # H(h | y_<s) for s = 0..m
    for s in range(payload_length + 1):
        prefix = np.arange(n) // vocab_size ** (payload_length - s)  # y_<s as a base-V number
        _, counts = np.unique(prefix * num_hashes + table, return_counts=True)
        # H(h | y_<s) = H(h, y_<s) - H(y_<s), and y_<s is uniform on V^s
        conditional[s] = float(_entropy(counts / n)) - s * math.log(vocab_size)
    return np.concatenate([np.zeros(hash_length), conditional[:-1] - conditional[1:]])


def consistency_probability(p_hash) -> float:
    """Q0(H(y) = h) = sum_h p(h)^2: Q0 draws h and y independently (V^-k for a balanced hash)."""
    p = _check_marginal(p_hash)
    return float(np.sum(p**2))


def q0_total_variation(p_hash) -> float:
    """TV(P, Q0) = 1 - sum_h p(h)^2: Q0 gives each consistent document p(h) times what P gives it,
    and every other document has P = 0."""
    return 1.0 - consistency_probability(p_hash)


def q0_generation_kl(p_hash) -> float:
    """G(Q0) = inf as soon as two hash values have preimages (Q0 then writes inconsistent documents);
    0 when a single hash value takes all payloads (then Q0 = P)."""
    return math.inf if consistency_probability(p_hash) < 1.0 else 0.0


def q0_support_gap(p_hash) -> float:
    """F(Q0) - (-log Q0(supp P)) = H(h) - H_2(h) >= 0 (Shannon minus Renyi-2 entropy): zero exactly
    when p(h) is uniform on the hash values that occur, i.e. when Q0 restricted to supp P is
    proportional to P."""
    return hash_entropy(p_hash) + math.log(consistency_probability(p_hash))


def support_decomposition(p_probs, q_probs) -> tuple[float, float]:
    """(bound, gap) with KL(P || Q) = bound + gap, for two explicit distributions over one finite set:

        bound = -log Q(supp P),   gap = KL(P || Q(. | supp P)) >= 0,

    gap = 0 iff Q restricted to supp P is proportional to P. When Q(supp P) = 0 the bound is already
    infinite and gap is reported as 0."""
    p, q = (np.asarray(x, np.float64).reshape(-1) for x in (p_probs, q_probs))
    for name, x in (("p_probs", p), ("q_probs", q)):
        if np.any(~np.isfinite(x)) or np.any(x < 0) or abs(x.sum() - 1.0) > 1e-9:
            raise ValueError(f"{name} must hold non-negative probabilities summing to 1")
    if p.shape != q.shape:
        raise ValueError(f"p_probs and q_probs must have the same size, got {p.size} and {q.size}")
    support = p > 0
    mass = float(q[support].sum())
    if mass == 0.0:
        return math.inf, 0.0
    restricted = q[support] / mass
    with np.errstate(divide="ignore"):
        gap = float(np.sum(p[support] * (np.log(p[support]) - np.log(restricted))))
    return -math.log(mass), max(gap, 0.0)  # (a KL: only rounding can make it negative)


def min_loss_for_off_support(mass: float) -> float:
    """log(1 / (1 - tau)): the least total forward KL of any Q that puts mass tau off supp P (from
    F >= -log Q(supp P)); independent of the sequence length. 4.6 nats for tau = 0.99."""
    mass = float(mass)
    if not (0.0 <= mass < 1.0):
        raise ValueError(f"mass must lie in [0, 1) (Q's probability off the data's support), got {mass}")
    return -math.log1p(-mass)
