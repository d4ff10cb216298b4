"""C12: training on one's own outputs closes a feedback loop (seeds 002 and 004).

The exactly fittable case: a model refitted by maximum likelihood on N samples of the previous model,
generation after generation. For a categorical model the MLE is the empirical frequency, so

- a token whose probability reaches 0 is never sampled again: lost support is never regained, and the
  number of surviving tokens never increases;
- E[p_{k+1} | p_k] = p_k: the refitted probabilities are a martingale (unbiased, yet they drift to a
  vertex of the simplex: with probability 1 a single token eventually survives);
- mixing a fraction alpha of fresh *samples* from the true p makes loss non-absorbing, but a lost
  token i stays lost in one generation with probability (1 - p_i)^(alpha N), so any generation can
  still miss a token (and then the forward KL to p is infinite);
- mixing at the *distribution* level, p_{k+1} = alpha p + (1 - alpha) p_hat_k, keeps full support with
  KL(p || p_{k+1}) <= log(1 / alpha), since p_{k+1} >= alpha p pointwise;
- additive smoothing p_hat = (counts + lambda) / (N + V lambda) keeps full support with
  KL(p || p_hat) <= log((N + V lambda) / lambda), since every p_hat_i >= lambda / (N + V lambda).

For a Markov chain the transition MLE is a ratio of counts; the row counts are random, so the MLE is
biased (no martingale), and support is absorbing only if rows never visited keep their old values.
Anchors: Shumailov et al. 2024 (model collapse); Gerstgrasser et al. 2024 (accumulating data).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

SAMPLES, DISTRIBUTION = "samples", "distribution"


def _check_distribution(probs, name: str) -> np.ndarray:
    array = np.asarray(probs, np.float64)
    if array.ndim != 1 or array.size == 0 or np.any(~np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be a non-empty vector of non-negative probabilities")
    if abs(array.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must sum to 1, got {array.sum()}")
    return array


def sample_counts(key, probs, num_samples: int):
    """Counts of each token among `num_samples` draws from the categorical `probs` (any batch shape)."""
    draws = jax.random.categorical(key, jnp.log(probs), shape=(num_samples,) + probs.shape[:-1])
    return jax.nn.one_hot(draws, probs.shape[-1], dtype=probs.dtype).sum(axis=0)


def smoothed_mle(counts, smoothing: float = 0.0):
    """(counts + lambda) / (N + V lambda); lambda = 0 is the maximum-likelihood estimate."""
    return (counts + smoothing) / (counts.sum(axis=-1, keepdims=True) + counts.shape[-1] * smoothing)


def smoothing_kl_bound(num_samples: int, vocab_size: int, smoothing: float) -> float:
    """Upper bound on KL(p || smoothed MLE) for any p: log((N + V lambda) / lambda)."""
    return float(np.log((num_samples + vocab_size * smoothing) / smoothing))


def lost_token_stays_lost(p_i: float, alpha: float, num_samples: int) -> float:
    """Chance that a token absent from the current model is also absent from round(alpha N) fresh samples."""
    return float((1.0 - p_i) ** round(alpha * num_samples))


@partial(jax.jit, static_argnames=("num_samples", "num_fresh", "generations", "mixing"))
def _loop(key, true_probs, smoothing, alpha, *, num_samples: int, num_fresh: int, generations: int, mixing: str):
    def generation(model, step_key):
        own_key, fresh_key = jax.random.split(step_key)
        counts = sample_counts(own_key, model, num_samples - num_fresh)
        if num_fresh:
            counts = counts + sample_counts(fresh_key, true_probs, num_fresh)
        fitted = smoothed_mle(counts, smoothing)
        new = alpha * true_probs + (1 - alpha) * fitted if mixing == DISTRIBUTION else fitted
        return new, new

    _, trajectory = jax.lax.scan(generation, true_probs, jax.random.split(key, generations))
    return jnp.concatenate([true_probs[None], trajectory])


def refit_loop(key, true_probs, num_samples: int, generations: int, *, alpha: float = 0.0,
               mixing: str = SAMPLES, smoothing: float = 0.0):
    """The categorical model after each of `generations` refits, [generations + 1, V] (row 0 is p).

    Each generation draws N samples: N - round(alpha N) from the current model and round(alpha N) fresh
    ones from p (mixing="samples"), or N from the model followed by p_{k+1} = alpha p + (1 - alpha) p_hat
    (mixing="distribution"); p_hat is the MLE, smoothed by `smoothing` (lambda) if positive.
    """
    probs = _check_distribution(true_probs, "true_probs")
    if int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples}")
    if int(generations) != generations or generations < 1:
        raise ValueError(f"generations must be a positive int, got {generations}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if mixing not in (SAMPLES, DISTRIBUTION):
        raise ValueError(f"mixing must be {SAMPLES!r} or {DISTRIBUTION!r}, got {mixing!r}")
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    num_fresh = int(round(alpha * num_samples)) if mixing == SAMPLES else 0  # a sample count: static
    return _loop(key, jnp.asarray(probs), jnp.asarray(float(smoothing)), jnp.asarray(float(alpha)),
                 num_samples=int(num_samples), num_fresh=num_fresh, generations=int(generations), mixing=mixing)


def forward_kl_categorical(p, q) -> np.ndarray:
    """KL(p || q) over the last axis in nats: inf where q misses a token p has (never NaN)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def markov_mle(sequences, vocab_size: int, previous=None) -> np.ndarray:
    """Transition MLE A_hat[i, j] = n_ij / n_i from the sequences' bigram counts [V, V].

    Rows never visited (n_i = 0) keep `previous`'s row if given (then support is absorbing), else
    become uniform (then a lost transition can come back).
    """
    tokens = np.asarray(sequences)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"sequences must have shape [num_sequences, length >= 2], got {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"sequences must hold token ids in [0, {vocab_size})")
    counts = np.zeros((vocab_size, vocab_size))
    np.add.at(counts, (tokens[:, :-1].ravel(), tokens[:, 1:].ravel()), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    fallback = np.full((vocab_size, vocab_size), 1.0 / vocab_size) if previous is None else np.asarray(previous, np.float64)
    return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), fallback)
