"""C11: in a dialog of agents with independent types the posterior over each agent's type is kept
separately, as a product (seed 002).

In a dialog of two agents whose latent types a and b are independent a priori, and where each token
depends only on its speaker's type and the shared history (`toymodels.processes.dialog`), the
likelihood splits as P(x | a, b) = f_a(x) g_b(x): A's tokens carry all the evidence about a and B's all
the evidence about b. The joint posterior over (a, b) is then the product of two posteriors, each
computed from one speaker's turns alone, at every prefix: a predictor can track both minds side by
side. The factorisation needs the premise: when a token depends on both types (`coupled_dialog`) the
evidence couples them, and the joint posterior is generally not the product of its marginals, even
though the types are independent a priori. `agreement_dialog` is the smallest such counterexample: A
says only whether a == b.

Sequences are token arrays [B, L]; ids >= V are impossible, and after an impossible prefix the
posteriors stay at the last possible ones (the convention of every process).
"""

from __future__ import annotations

import math

import numpy as np

from toymodels.processes.dialog import coupled_dialog, dialog

__all__ = [
    "agreement_dialog",
    "agreement_posterior",
    "agreement_mutual_information",
    "coupled_dialog",
    "dialog",
    "mutual_information",
    "speaker_posteriors",
]


def _rows(value, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(value, np.float64)
    if array.ndim != ndim or np.any(~np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be an array of {ndim} dimensions of non-negative probabilities")
    if np.any(np.abs(array.sum(axis=-1) - 1.0) > 1e-9):
        raise ValueError(f"{name} must sum to 1 over its last axis")
    return array


def speaker_posteriors(types_a, types_b, prior_a, prior_b, turn_length: int, tokens, start=None):
    """(post_a [B, L+1, Ka], post_b [B, L+1, Kb]): the posterior over each agent's type after t tokens,
    each from that agent's own tokens only (entry 0 is the prior). With types_a [Ka, V, V] (row u: A's
    next-token distribution after token u), types_b [Kb, V, V], turns of `turn_length` tokens, A first,
    and the unobserved token before the document drawn from `start` (default uniform), so A's first
    token has probability sum_u start(u) types_a[a, u, x_1]. The claim: the joint posterior over (a, b)
    is post_a[..., :, None] * post_b[..., None, :]."""
    types_a, types_b = _rows(types_a, "types_a", 3), _rows(types_b, "types_b", 3)
    prior_a, prior_b = _rows(prior_a, "prior_a", 1), _rows(prior_b, "prior_b", 1)
    vocab = types_a.shape[1]
    if types_a.shape[1:] != (vocab, vocab) or types_b.shape[1:] != (vocab, vocab):
        raise ValueError(f"types_a and types_b must be [K, V, V] with one V, got {types_a.shape}, {types_b.shape}")
    if len(prior_a) != len(types_a) or len(prior_b) != len(types_b):
        raise ValueError("prior_a and prior_b must have one entry per type of types_a and types_b")
    if isinstance(turn_length, bool) or int(turn_length) != turn_length or turn_length < 1:
        raise ValueError(f"turn_length must be a positive int, got {turn_length!r}")
    start = np.full(vocab, 1.0 / vocab) if start is None else _rows(start, "start", 1)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or (tokens.size and (not np.issubdtype(tokens.dtype, np.integer) or tokens.min() < 0)):
        raise ValueError(f"tokens must be non-negative integer ids of shape [B, L], got {tokens.dtype}{tokens.shape}")
    batch, length = tokens.shape
    beliefs = [np.broadcast_to(prior_a, (batch, len(prior_a))).copy(), np.broadcast_to(prior_b, (batch, len(prior_b))).copy()]
    out = [np.zeros((batch, length + 1, len(prior_a))), np.zeros((batch, length + 1, len(prior_b)))]
    for agent in (0, 1):
        out[agent][:, 0] = beliefs[agent]
    alive = np.ones(batch, bool)
    previous = None
    for t in range(length):
        speaker = (t // int(turn_length)) % 2
        policy = (types_a, types_b)[speaker]
        token = tokens[:, t]
        valid = token < vocab
        safe = np.where(valid, token, 0)
        if previous is None:  # the unobserved token before the document
            likelihood = np.einsum("u,kub->bk", start, policy[:, :, safe])
        else:
            likelihood = policy[:, previous, safe].T  # [B, K]
        likelihood = np.where(valid[:, None], likelihood, 0.0)
        updated = beliefs[speaker] * likelihood
        mass = updated.sum(axis=1)
        alive = alive & (mass > 0)
        beliefs[speaker] = np.where(alive[:, None], updated / np.where(mass > 0, mass, 1.0)[:, None], beliefs[speaker])
        for agent in (0, 1):
            out[agent][:, t + 1] = beliefs[agent]
        previous = safe  # (a frozen row never updates again, so its previous token no longer matters)
    return out[0], out[1]


def mutual_information(joint) -> np.ndarray:
    """KL(joint || product of its marginals) in nats over the last two axes [..., Ka, Kb]: the mutual
    information between a and b under the posterior; 0 exactly when the joint factorises."""
    joint = np.asarray(joint, np.float64)
    product = joint.sum(axis=-1, keepdims=True) * joint.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * (np.log(joint) - np.log(np.where(joint > 0, product, 1.0))), 0.0)
    return np.maximum(terms.sum(axis=(-1, -2)), 0.0)  # (rounding: a KL is never negative)


def _check_unit(value, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def agreement_dialog(agree: float, differ: float, prior_a=(0.5, 0.5), prior_b=(0.5, 0.5)) -> dict:
    """Keyword arguments of `coupled_dialog` for the counterexample: two types each, V = 2, turns of
    one token. A emits token 0 with probability `agree` when a == b and `differ` otherwise (whatever
    came before); B is uniform. A's tokens depend on both types, so they carry evidence about whether
    the types agree, not about either alone."""
    agree, differ = _check_unit(agree, "agree"), _check_unit(differ, "differ")
    same, other = [[agree, 1 - agree]] * 2, [[differ, 1 - differ]] * 2
    uniform = [[0.5, 0.5]] * 2
    return dict(
        policies_a=np.array([[same, other], [other, same]]),
        policies_b=np.array([[uniform, uniform], [uniform, uniform]]),
        prior_a=np.asarray(prior_a, np.float64),
        prior_b=np.asarray(prior_b, np.float64),
        turn_length=1,
    )


def agreement_posterior(agree: float, differ: float, first_token: int, prior_a=(0.5, 0.5), prior_b=(0.5, 0.5)) -> np.ndarray:
    """[2, 2] joint posterior over (a, b) after A's first token of `agreement_dialog`:
    proportional to prior_a(a) prior_b(b) times lam if a == b, mu otherwise, with (lam, mu) =
    (agree, differ) after token 0 and (1 - agree, 1 - differ) after token 1. With positive priors it
    is a product of marginals iff lam == mu (the 2 x 2 weight matrix has rank 1)."""
    agree, differ = _check_unit(agree, "agree"), _check_unit(differ, "differ")
    if first_token not in (0, 1):
        raise ValueError(f"first_token must be 0 or 1, got {first_token!r}")
    lam, mu = (agree, differ) if first_token == 0 else (1 - agree, 1 - differ)
    weights = np.outer(_rows(prior_a, "prior_a", 1), _rows(prior_b, "prior_b", 1)) * np.array([[lam, mu], [mu, lam]])
    if weights.sum() == 0:
        raise ValueError(f"first_token={first_token} is impossible with agree={agree}, differ={differ}")
    return weights / weights.sum()


def agreement_mutual_information(agree: float, differ: float, first_token: int = 0) -> float:
    """With uniform priors: both marginals stay uniform and the mutual information between a and b
    after A's first token is log 2 - h(lam / (lam + mu)) nats (h the binary entropy), 0 iff lam == mu."""
    joint = agreement_posterior(agree, differ, first_token)
    share = 2 * joint[0, 0]  # lam / (lam + mu)
    return math.log(2) - sum(-x * math.log(x) for x in (share, 1 - share) if x > 0)
