"""C4: prediction loss pins down a predictor only on the prefixes the data can produce (seed 001).

Prediction loss constrains a predictor only where the data go. The forward KL F_n and the generation
KL G_n both split by the chain rule into per-position expected next-token KLs, each taken over the
prefixes of its own expectation side; so conditionals that are perfect on every prefix the data can
produce make Q_n = P_n (G_n = 0), and what Q does on other prefixes never enters F_n. Pinsker bounds
the total variation by either KL (TV <= sqrt(KL / 2), vacuous once KL >= 2; Bretagnolle-Huber's
sqrt(1 - exp(-KL)) never is), but nothing bounds a KL by TV unless probabilities have a floor: with
Q(x) >= f everywhere, KL(P || Q) <= log(1 + 2 TV^2 / f). Without a floor, a token of probability
delta on one side only keeps one KL infinite while TV = 1 - (1 - delta)^n -> 0, and a token whose
probability ratio is exp(M) with M = 1 / delta^2 keeps both KLs finite yet growing like 1 / delta.
F finite with G infinite is C2's and C3's situation.

Distributions over V^n are explicit tables here: arrays of shape [V] * n (x_1 first), or flat [V^n]
with the vocabulary given, in lexicographic order.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "bretagnolle_huber_bound",
    "chain_rule_terms",
    "floor_reverse_bound",
    "pinsker_bound",
    "rare_token_pair",
    "rare_token_tv",
    "tilted_pair",
    "tilted_pair_kl",
    "tilted_pair_tv",
]


KL_ROUNDING = 1e-12  # a numerically computed KL of two equal distributions can come out -1e-16


def _check_kl(kl) -> float:
    kl = float(kl)
    if math.isnan(kl) or kl < -KL_ROUNDING:
        raise ValueError(f"kl must be a KL divergence (>= 0, possibly inf), got {kl}")
    return max(kl, 0.0)


def _check_unit(value, name: str, *, open_low: bool = True, open_high: bool = False) -> float:
    value = float(value)
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    if not (math.isfinite(value) and low_ok and high_ok):
        interval = ("(" if open_low else "[") + "0, 1" + (")" if open_high else "]")
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def pinsker_bound(kl: float) -> float:
    """sqrt(KL / 2) >= TV for either direction of the KL; >= 1 (says nothing) once KL >= 2."""
    return math.sqrt(_check_kl(kl) / 2)


def bretagnolle_huber_bound(kl: float) -> float:
    """sqrt(1 - exp(-KL)) >= TV for either direction; below 1 for every finite KL."""
    return math.sqrt(-math.expm1(-_check_kl(kl)))


def floor_reverse_bound(tv: float, floor: float) -> float:
    """log(1 + 2 TV^2 / f) >= KL(P || Q) whenever Q(x) >= f > 0 for every x (a floor on Q).

    Why: KL <= log(1 + chi^2) by Jensen, and chi^2 = sum (p - q)^2 / q <= max|p - q| sum|p - q| / f
    <= 2 TV^2 / f. Without a floor (f -> 0) the bound is lost, and no other takes its place."""
    tv = _check_unit(tv, "tv", open_low=False)
    floor = _check_unit(floor, "floor")
    return math.log1p(2 * tv**2 / floor)


def _as_table(probs, vocab_size: int | None, name: str) -> np.ndarray:
    array = np.asarray(probs, np.float64)
    if array.ndim == 1 and vocab_size is not None:
        length = round(math.log(array.size) / math.log(vocab_size)) if array.size > 1 else 1
        if vocab_size**length != array.size:
            raise ValueError(f"{name} has {array.size} entries, not a power of vocab_size={vocab_size}")
        array = array.reshape((vocab_size,) * length)
    if array.ndim < 1 or len(set(array.shape)) != 1:
        raise ValueError(f"{name} must have shape [V] * n (or be flat with vocab_size), got {array.shape}")
    if np.any(~np.isfinite(array)) or np.any(array < 0) or abs(array.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must hold non-negative probabilities summing to 1")
    return array


def chain_rule_terms(p_table, q_table, vocab_size: int | None = None) -> np.ndarray:
    """[n]: term t = sum over x_<t with P(x_<t) > 0 of P(x_<t) KL(p(. | x_<t) || q(. | x_<t)), the
    expected next-token KL at position t under P. Their sum is KL(P_n || Q_n) (the chain rule); a
    term is inf when q misses a token p gives positive probability after a prefix P can produce.
    Swap the arguments for G_n's terms. q's conditionals after a prefix Q cannot produce are never
    needed: P(x_<t) > 0 = Q(x_<t) already makes an earlier term infinite."""
    p = _as_table(p_table, vocab_size, "p_table")
    q = _as_table(q_table, vocab_size, "q_table")
    if p.shape != q.shape:
        raise ValueError(f"p_table and q_table must have the same shape, got {p.shape} and {q.shape}")
    vocab, length = p.shape[0], p.ndim
    terms = np.zeros(length)
    for t in range(length):
        # Marginals of the first t and t + 1 tokens, as [V^t, V].
        p_next = p.reshape(vocab ** (t + 1), -1).sum(axis=1).reshape(vocab**t, vocab)
        q_next = q.reshape(vocab ** (t + 1), -1).sum(axis=1).reshape(vocab**t, vocab)
        p_prefix, q_prefix = p_next.sum(axis=1), q_next.sum(axis=1)
        seen = p_prefix > 0
        if np.any(q_prefix[seen] == 0):
            terms[t] = math.inf
            continue
        cond_p = p_next[seen] / p_prefix[seen, None]
        cond_q = q_next[seen] / q_prefix[seen, None]
        positive = cond_p > 0
        if np.any(positive & (cond_q == 0)):
            terms[t] = math.inf
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(positive, cond_p * (np.log(cond_p) - np.log(np.where(positive, cond_q, 1.0))), 0.0)
        terms[t] = float(np.sum(p_prefix[seen] * kl.sum(axis=1)))
    return terms


# --------------------------------------------------------------------------------------------------
# Constructions without a reverse bound: i.i.d. token distributions over {0, 1}
# --------------------------------------------------------------------------------------------------


def rare_token_pair(delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(with, without): token 1 has probability delta on one side and 0 on the other. Over n i.i.d.
    tokens TV_n = 1 - (1 - delta)^n, KL(with || without) = inf and KL(without || with) =
    -n log(1 - delta): TV -> 0 as delta -> 0 while one KL stays infinite."""
    delta = _check_unit(delta, "delta", open_high=True)
    return np.array([1.0 - delta, delta]), np.array([1.0, 0.0])


def rare_token_tv(delta: float, n: int) -> float:
    """TV_n of `rare_token_pair(delta)`: the probability of at least one rare token in n."""
    delta = _check_unit(delta, "delta", open_high=True)
    return -math.expm1(int(n) * math.log1p(-delta))


def tilted_pair(delta: float, log_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) with P = (1 - delta, delta) and Q = (1 - delta e^-M, delta e^-M), M = log_ratio >= 0:
    both have full support, so both KLs are finite, yet TV = delta (1 - e^-M) <= delta while
    KL(P || Q) >= delta (M - 1) grows without bound as M -> inf (with M = 1 / delta^2 it is about
    1 / delta while TV -> 0). (The bound: (1 - delta) log(1 - delta) >= -delta.)"""
    delta = _check_unit(delta, "delta", open_high=True)
    log_ratio = float(log_ratio)
    if not (math.isfinite(log_ratio) and log_ratio >= 0):
        raise ValueError(f"log_ratio must be a finite number >= 0, got {log_ratio}")
    rare = delta * math.exp(-log_ratio)
    return np.array([1.0 - delta, delta]), np.array([1.0 - rare, rare])


def tilted_pair_kl(delta: float, log_ratio: float, n: int = 1) -> tuple[float, float]:
    """(KL(P_n || Q_n), KL(Q_n || P_n)) of `tilted_pair` over n i.i.d. tokens (n times one token's)."""
    p, q = tilted_pair(delta, log_ratio)
    forward = p[1] * log_ratio + p[0] * (math.log1p(-p[1]) - math.log1p(-q[1]))
    backward = -q[1] * log_ratio + q[0] * (math.log1p(-q[1]) - math.log1p(-p[1]))
    return int(n) * forward, int(n) * backward


def tilted_pair_tv(delta: float, log_ratio: float) -> float:
    """TV of `tilted_pair` for one token: delta (1 - e^-M) (over n tokens it is at most n times that)."""
    p, q = tilted_pair(delta, log_ratio)
    return float(p[1] - q[1])
