"""Waluigi collapse (C10): a good persona G and a persona W that imitates G until it reveals itself.

Tokens 0..N-1 are normal, token r = N (the last id, info["reveal_token"]) is the reveal; V = N + 1.
The persona is drawn once per document: W with probability pi_W (`prior_w`), G otherwise.

    G                 a Markov chain on the normal tokens: g[u, v] = P(next v | previous u); never emits r.
    W, unrevealed     emits r with probability rho (`reveal_prob`) at every step, and otherwise the normal
                      token v with probability (1 - rho) w~[u, v]. Exact imitation (the default): w~ = g,
                      so W's non-reveal conditional is exactly (1 - rho) times G's at every prefix.
    W, revealed       from the reveal on, W follows its own policy after[u, v] over all V tokens (u may be
                      r; it may reveal again).

The token before the document, x_0, is unobserved and drawn from `start` (over the normal tokens,
default uniform), the same for both personas, so imitation holds from the first token on.

Exact consequences (CLAIMS.md C10), with exact imitation: for any n non-reveal tokens
P(W | x_1..x_n) = pi_W (1-rho)^n / (pi_G + pi_W (1-rho)^n); after a reveal P(W) = 1 forever;
P(revealed by n) = pi_W (1 - (1-rho)^n). With imperfect imitation, given the previous token u the
expected change of the log-odds of W over one token is log(1-rho) - KL(g[u] || w~[u]) when G generates and
log(1-rho) + KL(w~[u] || g[u]) when W generates without revealing.

Hidden states: G_u (u normal, the previous token), W_u (unrevealed), R_u (revealed, u any token):
S = 3N + 1. Latents: "persona" (G or W; R states count as W) and "revealed" (no or yes).
"""

from __future__ import annotations

import numpy as np

from toymodels.processes._validation import as_probabilities, device_dtype, sum_tolerance
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import register_family

# G's default chain: stay on the previous token with this probability, else move uniformly.
_DEFAULT_STAY = 0.7


def _policy(value, name: str, shape: tuple[int, int]) -> np.ndarray:
    """A row-stochastic matrix of the given shape (never renormalised here)."""
    array = as_probabilities(value, name, ndim=len(shape))
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    sums = array.sum(axis=-1)
    tolerance = sum_tolerance(device_dtype(array))
    if np.any(np.abs(sums - 1.0) > tolerance):
        worst = sums.flat[np.argmax(np.abs(sums - 1.0))]
        raise ValueError(
            f"{name}: each row must sum to 1 (within {tolerance:g}), one sums to {worst:.12g}"
        )
    return array.astype(np.float64)


def _unit_interval(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not (np.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def default_good(num_normal: int) -> np.ndarray:
    """G's default chain on N normal tokens: stay with probability 0.7, else move uniformly."""
    if num_normal == 1:
        return np.ones((1, 1))
    off = (1.0 - _DEFAULT_STAY) / (num_normal - 1)
    return np.where(np.eye(num_normal, dtype=bool), _DEFAULT_STAY, off)


@register_family("waluigi", example=dict(prior_w=0.2, reveal_prob=0.1))
def waluigi(
    prior_w: float,
    reveal_prob: float,
    good=None,
    imitation=None,
    after_reveal=None,
    start=None,
    vocab_size: int | None = None,
) -> HMMProcess:
    """The Waluigi process of the module docstring.

    Args:
        prior_w: pi_W in [0, 1], the prior probability of persona W.
        reveal_prob: rho in [0, 1], W's probability of revealing at each step before its reveal.
        good: g, [N, N] row-stochastic (default `default_good(N)`); N = vocab_size - 1.
        imitation: W's non-reveal policy w~. None: exact imitation (w~ = g). A float eps in [0, 1]:
            w~ = (1 - eps) g + eps * uniform over the normal tokens. An [N, N] row-stochastic matrix: w~
            itself.
        after_reveal: [V, V] row-stochastic, W's policy once revealed, over all tokens given the previous
            one (row r: right after a reveal). Default: uniform over all V tokens.
        start: [N], the distribution of the unobserved token before the document (default uniform).
        vocab_size: V = N + 1 (default 3, or implied by `good`).

    Info: reveal_token (= N), token_labels ("n0", ..., "reveal"). Latents: "persona" (G, W) and
    "revealed" (no, yes).
    """
    prior_w = _unit_interval(prior_w, "prior_w")
    rho = _unit_interval(reveal_prob, "reveal_prob")
    if vocab_size is not None and (
        isinstance(vocab_size, bool) or int(vocab_size) != vocab_size or vocab_size < 2
    ):
        raise ValueError(
            f"vocab_size must be an int >= 2 (at least one normal token and the reveal), got {vocab_size}"
        )
    if good is None:
        vocab = 3 if vocab_size is None else int(vocab_size)
        g = default_good(vocab - 1)
    else:
        g = as_probabilities(good, "good", ndim=2)
        vocab = g.shape[0] + 1
        if vocab_size is not None and int(vocab_size) != vocab:
            raise ValueError(
                f"good has {g.shape[0]} normal tokens, so vocab_size must be {vocab}, got {vocab_size}"
            )
        g = _policy(g, "good", (vocab - 1, vocab - 1))
    normal = vocab - 1
    if imitation is None:
        w = g
    elif np.ndim(imitation) == 0:
        eps = _unit_interval(imitation, "imitation")
        w = (1.0 - eps) * g + eps / normal
    else:
        w = _policy(imitation, "imitation", (normal, normal))
    after = (
        np.full((vocab, vocab), 1.0 / vocab)
        if after_reveal is None
        else _policy(after_reveal, "after_reveal", (vocab, vocab))
    )
    if start is None:
        start = np.full(normal, 1.0 / normal)
    else:
        start = as_probabilities(start, "start", ndim=1)
        if start.shape != (normal,):
            raise ValueError(
                f"start must have shape ({normal},) (a distribution over the normal tokens), got {start.shape}"
            )
        if abs(start.sum() - 1.0) > sum_tolerance(device_dtype(start)):
            raise ValueError(f"start must sum to 1, got {start.sum():.12g}")
        start = start.astype(np.float64)

    # State ids: G_u = u, W_u = N + u (u normal), R_u = 2N + u (u any token, R_N: just revealed).
    reveal = normal
    num_states = 3 * normal + 1
    g_states, w_states, r_states = (
        np.arange(normal),
        normal + np.arange(normal),
        2 * normal + np.arange(vocab),
    )
    transitions = np.zeros((vocab, num_states, num_states))
    u, v = np.meshgrid(np.arange(normal), np.arange(normal), indexing="ij")
    transitions[v, g_states[u], g_states[v]] = g
    transitions[v, w_states[u], w_states[v]] = (1.0 - rho) * w
    transitions[reveal, w_states, r_states[reveal]] = rho
    u, v = np.meshgrid(np.arange(vocab), np.arange(vocab), indexing="ij")
    transitions[v, r_states[u], r_states[v]] = after

    initial = np.zeros(num_states)
    initial[g_states] = (1.0 - prior_w) * start
    initial[w_states] = prior_w * start
    persona = np.r_[np.zeros(normal, np.int64), np.ones(normal + vocab, np.int64)]
    revealed = np.r_[np.zeros(2 * normal, np.int64), np.ones(vocab, np.int64)]
    return HMMProcess(
        transitions,
        initial,
        latents={"persona": (("G", "W"), persona), "revealed": (("no", "yes"), revealed)},
        info={
            "family": "waluigi",
            "reveal_token": reveal,
            "token_labels": tuple(f"n{i}" for i in range(normal)) + ("reveal",),
        },
    )
