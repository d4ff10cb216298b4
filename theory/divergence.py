"""Exact and Monte Carlo divergences between a data process P and any predictor Q, over length n.

    forward KL     F_n = KL(P_n || Q_n) = sum_t E_{x<t ~ P} KL(p(.|x<t) || q(.|x<t))   (prediction loss gap)
    generation KL  G_n = KL(Q_n || P_n) = sum_t E_{x<t ~ Q} KL(q(.|x<t) || p(.|x<t))
    total variation TV_n = sum_x (Q_n(x) - P_n(x))_+

Both KLs are computed through the chain rule: the expectation side A (P for F, Q for G) weights the
exact next-token KL at every prefix. `per_position[t]` is the chain-rule term for predicting x_t
(t = 0..n-1). `off_support_fraction` is A's mass on sequences the other side B gives probability zero
(P(Q = 0) for F, Q(P = 0) for G and TV). The KL is `inf` exactly when that mass is positive; never NaN.

Methods: "enumeration" sums over every sequence of A's vocabulary (batched on device, in chunks);
"monte_carlo" samples prefixes from A and adds the exact next-token KL at each (unbiased, with a
standard error). Q may have a larger vocabulary than P (tokens P never emits are impossible for P).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from toymodels.predictors import align_vocab, check_predictor, prefix_log_probs
from toymodels.sampling import generate

ENUMERATION, MONTE_CARLO = "enumeration", "monte_carlo"
DEFAULT_CHUNK = 8192
DEFAULT_MAX_SEQUENCES = 10**7


@dataclasses.dataclass(frozen=True)
class Divergence:
    """A divergence and its decomposition. `stderr` is 0 for exact (enumerated) values."""

    value: float
    stderr: float
    per_position: np.ndarray
    off_support_fraction: float
    method: str
    off_support_stderr: float = 0.0


# --------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------


def _check_pair(p, q, length) -> int:
    check_predictor(p, "p")
    check_predictor(q, "q")
    if not callable(getattr(p, "sample", None)):
        raise ValueError("p must be a Process (the data side, with sample and log_prob)")
    if q.vocab_size < p.vocab_size:
        raise ValueError(
            f"q.vocab_size={q.vocab_size} is smaller than p.vocab_size={p.vocab_size}; q must cover p's tokens"
        )
    if int(length) != length or length < 1:
        raise ValueError(f"length must be a positive int, got {length}")
    for name, x in (("p", p), ("q", q)):
        if x.max_length is not None and length > x.max_length:
            raise ValueError(f"length={length} exceeds {name}.max_length={x.max_length}")
    return int(length)


def _check_method(method, key, num_samples, vocab, length, max_sequences):
    if method == ENUMERATION:
        if vocab**length > max_sequences:
            raise ValueError(
                f"enumerating {vocab}^{length} sequences exceeds max_sequences={max_sequences}; "
                "use method='monte_carlo' or raise max_sequences"
            )
    elif method == MONTE_CARLO:
        if key is None:
            raise ValueError("method='monte_carlo' needs an explicit jax.random key")
        if num_samples is None or int(num_samples) != num_samples or num_samples < 2:
            raise ValueError(f"method='monte_carlo' needs an int num_samples >= 2, got {num_samples}")
    else:
        raise ValueError(f"method must be 'enumeration' or 'monte_carlo', got {method!r}")


def _check_chunk(chunk_size) -> int:
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size}")
    return int(chunk_size)


# --------------------------------------------------------------------------------------------------
# Building blocks, all jitted over (predictor pytrees, token chunk)
# --------------------------------------------------------------------------------------------------


def _enumerate_chunk(start, chunk: int, vocab: int, length: int):
    """Sequences start .. start+chunk-1 of vocab^length in lexicographic order, and which exist."""
    index = start + jnp.arange(chunk, dtype=jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    powers = vocab ** jnp.arange(length - 1, -1, -1, dtype=index.dtype)
    tokens = ((index[:, None] // powers) % vocab).astype(jnp.int32)
    return tokens, index < vocab**length


def _chain_terms(a, b, tokens):
    """Per-sequence chain-rule terms with the expectation taken under `a`.

    Returns (log A(x) [C], log B(x) [C], kl_t [C, L]) where kl_t = KL(a(.|x<t) || b(.|x<t)).
    """
    log_a = a.log_conditionals(tokens)
    log_b = align_vocab(b.log_conditionals(tokens), log_a.shape[-1])
    prob_a = jnp.exp(log_a)
    # Possible means log a > -inf, not exp(log a) > 0: a token whose probability underflows (a low
    # temperature, a long tail) is still possible, and b ruling it out makes the KL infinite.
    positive = jnp.isfinite(log_a)
    b_zero = jnp.isneginf(log_b)
    diff = jnp.where(positive & ~b_zero, log_a - jnp.where(b_zero, 0.0, log_b), 0.0)
    kl = jnp.sum(jnp.where(positive & b_zero, jnp.inf, prob_a * diff), axis=-1)
    return prefix_log_probs(log_a, tokens)[:, -1], prefix_log_probs(log_b, tokens)[:, -1], kl


def _weighted_sum(log_weights, terms):
    """sum_x w(x) terms(x, t) over sequences of log-weight > -inf (an impossible sequence contributes
    nothing, not 0 * inf). A possible sequence's infinite term stays infinite even when its weight
    underflows to zero."""
    possible = jnp.isfinite(log_weights)[:, None]
    weighted = jnp.where(jnp.isinf(terms), terms, jnp.exp(log_weights)[:, None] * terms)
    return jnp.sum(jnp.where(possible, weighted, 0.0), axis=0)


@partial(jax.jit, static_argnames=("chunk", "vocab", "length"))
def _kl_enumeration_chunk(a, b, start, *, chunk: int, vocab: int, length: int):
    tokens, valid = _enumerate_chunk(start, chunk, vocab, length)
    log_a, log_b, kl = _chain_terms(a, b, tokens)
    log_weights = jnp.where(valid, log_a, -jnp.inf)
    weights = jnp.exp(log_weights)
    off = jnp.sum(jnp.where(jnp.isneginf(log_b), weights, 0.0))
    return _weighted_sum(log_weights, kl), off, jnp.sum(weights)


@jax.jit
def _kl_sample_terms(a, b, tokens):
    _, log_b, kl = _chain_terms(a, b, tokens)
    return kl, jnp.isneginf(log_b)


def _sample_from(side, key, num, length):
    if callable(getattr(side, "sample", None)):
        return side.sample(key, num, length)
    return generate(side, key, num, length)


def _check_total_mass(total: float, side: str, dtype) -> None:
    """The enumerated masses of the expectation side must add up to 1: a predictor whose conditionals
    are not distributions (e.g. -inf everywhere after some prefix) would otherwise give wrong numbers."""
    tolerance = 1e-9 if dtype == np.float64 else 1e-4
    if abs(total - 1.0) > tolerance:
        raise ValueError(
            f"{side}'s sequence probabilities sum to {total:.12g}, not 1: its conditionals are not a "
            "distribution after some prefix it can produce (every token -inf?); fix that predictor"
        )


def _mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def _finish_kl(per_position, off_support, stderr, method, off_support_stderr=0.0) -> Divergence:
    per_position = np.asarray(per_position, dtype=np.float64)
    value = float(np.sum(per_position))
    if np.isinf(value):
        stderr = 0.0  # a certain infinity: some positive-probability prefix already forces it
    return Divergence(value, float(stderr), per_position, float(off_support), method, float(off_support_stderr))


def _chain_kl(a, b, length, vocab, method, key, num_samples, chunk_size, max_sequences, side) -> Divergence:
    _check_method(method, key, num_samples, vocab, length, max_sequences)
    chunk_size = _check_chunk(chunk_size)
    if method == ENUMERATION:
        total = vocab**length
        chunk = min(chunk_size, total)
        sums = [_kl_enumeration_chunk(a, b, start, chunk=chunk, vocab=vocab, length=length) for start in range(0, total, chunk)]
        _check_total_mass(sum(float(s[2]) for s in sums), side, np.asarray(sums[0][2]).dtype)
        per_position = sum(np.asarray(s[0], np.float64) for s in sums)
        off_support = sum(float(s[1]) for s in sums)
        return _finish_kl(per_position, off_support, 0.0, ENUMERATION)

    num_samples = int(num_samples)
    kl_parts, off_parts = [], []
    for index, start in enumerate(range(0, num_samples, chunk_size)):
        count = min(chunk_size, num_samples - start)
        tokens = _sample_from(a, jax.random.fold_in(key, index), count, length)
        kl, off = _kl_sample_terms(a, b, tokens)
        kl_parts.append(np.asarray(kl, np.float64))
        off_parts.append(np.asarray(off, np.float64))
    kl = np.concatenate(kl_parts)
    totals = kl.sum(axis=1)
    stderr = np.std(totals, ddof=1) / np.sqrt(num_samples) if np.all(np.isfinite(totals)) else 0.0
    off_support, off_stderr = _mean_and_stderr(np.concatenate(off_parts))
    return _finish_kl(kl.mean(axis=0), off_support, stderr, MONTE_CARLO, off_stderr)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def forward_kl(
    p,
    q,
    length: int,
    method: str = ENUMERATION,
    *,
    key=None,
    num_samples: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_sequences: int = DEFAULT_MAX_SEQUENCES,
) -> Divergence:
    """F_n = KL(P_n || Q_n), the prediction-loss gap of q on data from p, in nats.

    Enumeration runs over p's vocabulary (sequences with other tokens have P = 0); Monte Carlo samples
    `num_samples` sequences from p with `key`. off_support_fraction = P(Q(x) = 0).
    """
    length = _check_pair(p, q, length)
    return _chain_kl(p, q, length, p.vocab_size, method, key, num_samples, chunk_size, max_sequences, side="p")


def generation_kl(
    p,
    q,
    length: int,
    method: str = ENUMERATION,
    *,
    key=None,
    num_samples: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_sequences: int = DEFAULT_MAX_SEQUENCES,
) -> Divergence:
    """G_n = KL(Q_n || P_n): how far q's own generations are from the data, in nats.

    Enumeration runs over q's vocabulary; Monte Carlo samples q's generations at temperature 1 (wrap q
    with `with_temperature` for another). off_support_fraction = Q(P(x) = 0); G is inf when it is > 0.
    """
    length = _check_pair(p, q, length)
    return _chain_kl(q, p, length, q.vocab_size, method, key, num_samples, chunk_size, max_sequences, side="q")


@partial(jax.jit, static_argnames=("chunk", "vocab", "length"))
def _tv_enumeration_chunk(p, q, start, *, chunk: int, vocab: int, length: int):
    tokens, valid = _enumerate_chunk(start, chunk, vocab, length)
    log_p = prefix_log_probs(align_vocab(p.log_conditionals(tokens), vocab), tokens)[:, 1:]
    log_q = prefix_log_probs(q.log_conditionals(tokens), tokens)[:, 1:]
    gap = jnp.abs(jnp.exp(log_p) - jnp.exp(log_q))
    # Each length-t prefix appears vocab^(length - t) times among the full sequences.
    repeats = jnp.asarray(vocab, gap.dtype) ** jnp.arange(length - 1, -1, -1)
    per_position = 0.5 * jnp.sum(jnp.where(valid[:, None], gap / repeats, 0.0), axis=0)
    q_mass = jnp.where(valid, jnp.exp(log_q[:, -1]), 0.0)
    off = jnp.sum(jnp.where(jnp.isneginf(log_p[:, -1]), q_mass, 0.0))
    return per_position, off, jnp.sum(q_mass)


@jax.jit
def _tv_sample_terms(p, q, tokens):
    log_p = prefix_log_probs(align_vocab(p.log_conditionals(tokens), q.vocab_size), tokens)[:, 1:]
    log_q = prefix_log_probs(q.log_conditionals(tokens), tokens)[:, 1:]
    # TV = E_Q[(1 - P/Q)_+] over Q's samples (Q > 0 there).
    return jnp.maximum(0.0, 1.0 - jnp.exp(log_p - log_q)), jnp.isneginf(log_p[:, -1])


def total_variation(
    p,
    q,
    length: int,
    method: str = ENUMERATION,
    *,
    key=None,
    num_samples: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    max_sequences: int = DEFAULT_MAX_SEQUENCES,
) -> Divergence:
    """TV_n between P_n and Q_n; the best discriminator's accuracy is (1 + TV_n) / 2.

    per_position[t - 1] is the TV between the length-t prefix distributions (t = 1..n), so the last
    entry is `value`. Monte Carlo uses TV = E_Q[(1 - P/Q)_+] over q's generations.
    off_support_fraction = Q(P(x) = 0), a lower bound on TV.
    """
    length = _check_pair(p, q, length)
    vocab = q.vocab_size
    _check_method(method, key, num_samples, vocab, length, max_sequences)
    chunk_size = _check_chunk(chunk_size)
    if method == ENUMERATION:
        total = vocab**length
        chunk = min(chunk_size, total)
        sums = [_tv_enumeration_chunk(p, q, start, chunk=chunk, vocab=vocab, length=length) for start in range(0, total, chunk)]
        _check_total_mass(sum(float(s[2]) for s in sums), "q", np.asarray(sums[0][2]).dtype)
        per_position = sum(np.asarray(s[0], np.float64) for s in sums)
        off_support = sum(float(s[1]) for s in sums)
        return Divergence(float(per_position[-1]), 0.0, per_position, off_support, ENUMERATION)

    num_samples = int(num_samples)
    tv_parts, off_parts = [], []
    for index, start in enumerate(range(0, num_samples, chunk_size)):
        count = min(chunk_size, num_samples - start)
        tokens = _sample_from(q, jax.random.fold_in(key, index), count, length)
        tv, off = _tv_sample_terms(p, q, tokens)
        tv_parts.append(np.asarray(tv, np.float64))
        off_parts.append(np.asarray(off, np.float64))
    tv = np.concatenate(tv_parts)
    per_position = tv.mean(axis=0)
    _, stderr = _mean_and_stderr(tv[:, -1])
    off_support, off_stderr = _mean_and_stderr(np.concatenate(off_parts))
    return Divergence(float(per_position[-1]), stderr, per_position, off_support, MONTE_CARLO, off_stderr)
