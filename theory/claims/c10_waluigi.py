"""C10: a persona that imitates another until it reveals itself collapses the posterior onto it exactly
as often as its prior allows (seed essay 002).

The claim in our words: a well-behaved persona G and a persona W that behaves exactly like G except
that at every step it may drop the act (emit a "reveal" token r) with probability rho. A predictor of
text from the mixture never knows which one is speaking until a reveal; the persona posterior moves
in a fully predictable way:

- Exact imitation (W's non-reveal conditional is exactly (1 - rho) times G's): after any n tokens
  without a reveal, P(W | x) = pi_W (1-rho)^n / (pi_G + pi_W (1-rho)^n), whatever the tokens were
  (`collapse_posterior`); after a reveal P(W) = 1 forever. Under exact generation the posterior is a
  martingale: its mean stays pi_W at every length and P(revealed by n) = pi_W (1 - (1-rho)^n)
  (`revealed_by`), which tends to pi_W, not to 1: a reveal happens at most as often as W was there.
- Imperfect imitation (W's non-reveal distribution w~ differs from G's g): the expected one-token
  change of the log-odds lambda = log P(W | x) / P(G | x), given the previous token u, is
  log(1-rho) - KL(g[u] || w~[u]) while G generates and log(1-rho) + KL(w~[u] || g[u]) while W generates
  without revealing (`log_odds_drift`). The second can be positive: an unrevealed W whose imitation is
  poor makes W *more* likely with every well-behaved token. `expected_log_odds` sums the drifts into the
  exact expected log-odds after t tokens (the first token follows the unobserved start token, so its
  drift uses the start-averaged rows).

The process is `toymodels.processes.waluigi.waluigi` (latents "persona" and "revealed", reveal token
info["reveal_token"] = N, the last id). `*_by_enumeration` functions compute the same quantities from
the process's exact posteriors over all of V^n.
"""

from __future__ import annotations

import numpy as np

from theory.claims.enumeration import all_sequences
from toymodels.processes.authors import single_author_predictor
from toymodels.processes.hmm import HMMProcess

G, W = 0, 1  # persona indices of the "persona" latent


def _unit(value, name: str) -> float:
    value = float(value)
    if not (np.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def _lengths(length) -> np.ndarray:
    array = np.asarray(length)
    if not np.issubdtype(array.dtype, np.integer) or np.any(array < 0):
        raise ValueError(f"length must be a non-negative int (or array of them), got {length!r}")
    return array


def collapse_posterior(prior_w: float, reveal_prob: float, length) -> np.ndarray:
    """P(W | n non-reveal tokens) = pi_W (1-rho)^n / (pi_G + pi_W (1-rho)^n), for each n in `length`,
    computed as a sigmoid of the log-odds so that it stays exact for huge n."""
    prior_w, rho = _unit(prior_w, "prior_w"), _unit(reveal_prob, "reveal_prob")
    n = _lengths(length).astype(np.float64)
    if prior_w in (0.0, 1.0):
        return np.full(n.shape, prior_w)
    with np.errstate(divide="ignore"):
        shrink = np.where(n > 0, n * np.log1p(-rho), 0.0)  # 0 * log 0 = 0 at n = 0
    log_odds = np.log(prior_w) - np.log1p(-prior_w) + shrink
    return 1.0 / (1.0 + np.exp(-log_odds))


def revealed_by(prior_w: float, reveal_prob: float, length) -> np.ndarray:
    """P(a reveal among the first n tokens) = pi_W (1 - (1-rho)^n) under exact generation."""
    prior_w, rho = _unit(prior_w, "prior_w"), _unit(reveal_prob, "reveal_prob")
    n = _lengths(length).astype(np.float64)
    with np.errstate(divide="ignore"):
        log_stay = np.where(n > 0, n * np.log1p(-rho), 0.0)  # log (1-rho)^n, with 0 * log 0 = 0
    return prior_w * -np.expm1(log_stay)


def _rows(matrix, name: str) -> np.ndarray:
    array = np.asarray(matrix, np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or not np.allclose(array.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError(f"{name} must be a square row-stochastic [N, N] matrix over the normal tokens")
    return array


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


def log_odds_drift(good, imitation, reveal_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """([N], [N]): the expected change of the log-odds of W over one token given the previous normal
    token u, (log(1-rho) - KL(g[u] || w~[u]), log(1-rho) + KL(w~[u] || g[u])), while G generates and
    while W generates without revealing."""
    g, w = _rows(good, "good"), _rows(imitation, "imitation")
    with np.errstate(divide="ignore"):
        step = np.log1p(-_unit(reveal_prob, "reveal_prob"))
    return step - _kl_rows(g, w), step + _kl_rows(w, g)


def expected_log_odds(prior_w, reveal_prob, good, imitation, start, length: int, persona: int) -> np.ndarray:
    """[n + 1]: E[lambda_t] for t = 0..n, lambda_t = log P(W | x_<=t) / P(G | x_<=t), when persona G
    (persona=0) generates, or W (persona=1) generates and has not revealed by n.

    lambda_0 = log(pi_W / pi_G). The first token follows the unobserved start token, so its expected
    change uses the rows averaged over `start` (log(1-rho) -+ KL between start @ g and start @ w~); every
    later token adds the drift of `log_odds_drift` averaged over the generating chain's marginal of the
    previous token.
    """
    prior_w = _unit(prior_w, "prior_w")
    if not 0.0 < prior_w < 1.0:
        raise ValueError(f"prior_w must lie in (0, 1) for finite log-odds, got {prior_w}")
    if persona not in (G, W):
        raise ValueError(f"persona must be 0 (G) or 1 (W), got {persona!r}")
    g, w = _rows(good, "good"), _rows(imitation, "imitation")
    start = np.asarray(start, np.float64)
    if start.shape != (g.shape[0],) or np.any(start < 0) or abs(start.sum() - 1.0) > 1e-9:
        raise ValueError(f"start must be a distribution over the {g.shape[0]} normal tokens, got {start}")
    if isinstance(length, bool) or int(length) != length or length < 0:
        raise ValueError(f"length must be a non-negative int, got {length!r}")
    drift_g, drift_w = log_odds_drift(g, w, reveal_prob)
    with np.errstate(divide="ignore"):
        step = np.log1p(-_unit(reveal_prob, "reveal_prob"))
    chain, drift = (g, drift_g) if persona == G else (w, drift_w)
    first_g, first_w = start @ g, start @ w
    first = step - _kl_rows(first_g, first_w) if persona == G else step + _kl_rows(first_w, first_g)
    out = [np.log(prior_w) - np.log1p(-prior_w)]
    marginal = start @ chain  # distribution of x_1
    for t in range(int(length)):
        change = first if t == 0 else float(np.sum(np.where(marginal > 0, marginal * drift, 0.0)))
        if t > 0:
            marginal = marginal @ chain
        out.append(out[-1] + change)
    return np.asarray(out)


# --------------------------------------------------------------------------------------------------
# The same quantities from the process's exact posteriors, by enumeration of V^n
# --------------------------------------------------------------------------------------------------


def _check_process(process) -> int:
    if not isinstance(process, HMMProcess) or "reveal_token" not in process.info:
        raise ValueError("process must be a waluigi HMMProcess (with info['reveal_token'])")
    return int(process.info["reveal_token"])


def posterior_means(process: HMMProcess, length: int) -> dict[str, np.ndarray]:
    """{"persona": [n + 1], "revealed": [n + 1]}: E_{x ~ P}[P(W | x_<=t)] and E[P(revealed | x_<=t)]
    (= P(a reveal among the first t tokens), the reveal being observed) for t = 0..n."""
    _check_process(process)
    seqs = all_sequences(process.vocab_size, length)
    weight = np.exp(np.asarray(process.log_prob(seqs), np.float64))
    return {
        name: weight @ np.asarray(process.posterior(seqs, name), np.float64)[..., 1]
        for name in ("persona", "revealed")
    }


def expected_log_odds_by_enumeration(process: HMMProcess, length: int, persona: int) -> np.ndarray:
    """[n + 1]: E[lambda_t] from the process's persona posterior over every normal-token sequence of
    length n, weighted by G's probabilities (persona=0) or by W's conditioned on no reveal (persona=1)."""
    reveal = _check_process(process)
    seqs = all_sequences(reveal, length)  # the normal tokens are 0..N-1, N = the reveal token
    own = single_author_predictor(process, persona, latent="persona")
    weight = np.exp(np.asarray(own.log_prob(seqs), np.float64))
    if not weight.sum() > 0:
        raise ValueError("this persona reveals with certainty (reveal_prob = 1); nothing to condition on")
    weight = weight / weight.sum()  # for W: condition on no reveal in n tokens
    posterior = np.asarray(process.posterior(seqs, "persona"), np.float64)
    with np.errstate(divide="ignore"):
        log_odds = np.log(posterior[..., W]) - np.log(posterior[..., G])
    return np.sum(np.where(weight[:, None] > 0, weight[:, None] * log_odds, 0.0), axis=0)
