"""C2: a small prediction cost can make every long generation impossible (seed 001).

The construction is `toymodels.predictors.sticky_marker` (re-exported here, not duplicated): from any
predictor Q on V it builds Q' on V + {g} that gives the marker g probability eps until g has appeared,
scales every other token by (1 - eps), and emits g forever once it has appeared. The data never contain
g, so on data Q' pays exactly -log(1 - eps) extra per token, a fixed and small cost, while its own
length-n generations contain g with probability 1 - (1 - eps)^n, which tends to 1: the generation KL is
infinite from the first token on, and a discriminator that looks for g tells Q' from the data with
total variation at least 1 - (1 - eps)^n.

The closed forms below hold for every base process and every Q with finite F_n(Q). One identity ties
them together: P_Q'(g in n tokens) = 1 - exp(-(F_n(Q') - F_n(Q))), so the marker probability is fixed
by the extra loss alone. Numbers quoted in CLAIMS.md: eps = 0.01 costs -log(0.99) = 0.01005 nats
(0.0145 bits) per token (seed 001 prints 0.101, a factor of ten too large), and 1 - 0.99^1000 =
0.99996.
"""

from __future__ import annotations

import math

from toymodels.predictors import StickyMarker, sticky_marker

__all__ = [
    "StickyMarker",
    "generation_kl",
    "generation_off_support_mass",
    "loss_increase",
    "marker_probability",
    "marker_probability_from_loss",
    "per_token_loss",
    "sticky_marker",
    "tv_lower_bound",
]


PROBABILITY_ROUNDING = 1e-12  # how far outside [0, 1] a numerically summed probability may land


def _check_eps(eps) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number in (0, 1), got {eps!r}") from None
    if not (0.0 < eps < 1.0):
        raise ValueError(f"eps must lie in the open interval (0, 1), got {eps}")
    return eps


def _check_length(n) -> int:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative int (a number of tokens), got {n!r}")
    return int(n)


def per_token_loss(eps: float, unit: str = "nats") -> float:
    """-log(1 - eps): the extra prediction loss of Q' over Q on every data token ("nats" or "bits")."""
    nats = -math.log1p(-_check_eps(eps))  # log1p: exact for the tiny eps the claim is about
    if unit == "nats":
        return nats
    if unit == "bits":
        return nats / math.log(2)
    raise ValueError(f"unit must be 'nats' or 'bits', got {unit!r}")


def loss_increase(eps: float, n: int) -> float:
    """F_n(Q') - F_n(Q) = -n log(1 - eps), exactly, whenever F_n(Q) is finite."""
    return _check_length(n) * per_token_loss(eps)


def marker_probability(eps: float, n: int) -> float:
    """P_Q'(g among the first n tokens) = 1 - (1 - eps)^n (in a form accurate for tiny eps)."""
    return -math.expm1(_check_length(n) * math.log1p(-_check_eps(eps)))


def marker_probability_from_loss(extra_loss: float) -> float:
    """1 - exp(-(F_n(Q') - F_n(Q))): the marker probability written through the extra loss alone."""
    extra_loss = float(extra_loss)
    if not (math.isfinite(extra_loss) and extra_loss >= 0):
        raise ValueError(f"extra_loss must be a finite number >= 0 (nats), got {extra_loss}")
    return -math.expm1(-extra_loss)


def generation_off_support_mass(eps: float, n: int, base_off_support: float = 0.0) -> float:
    """Q'_n(P = 0) = m + (1 - m) Q_n(P = 0) with m = 1 - (1 - eps)^n: every generation that contains g
    is impossible data, and a generation without g is Q's own, scaled by (1 - eps)^n."""
    base = float(base_off_support)
    if not (-PROBABILITY_ROUNDING <= base <= 1.0 + PROBABILITY_ROUNDING):
        raise ValueError(f"base_off_support must lie in [0, 1] (a probability, Q_n(P = 0)), got {base}")
    base = min(max(base, 0.0), 1.0)  # a summed probability can land 1 ulp outside [0, 1]
    marker = marker_probability(eps, n)
    return marker + (1.0 - marker) * base


def tv_lower_bound(eps: float, n: int) -> float:
    """TV_n(P, Q') >= Q'_n(P = 0) >= 1 - (1 - eps)^n: the test "did g appear?" separates them."""
    return marker_probability(eps, n)


def generation_kl(eps: float, n: int) -> float:
    """G_n(Q') = KL(Q'_n || P_n): infinite for every n >= 1 (g has positive probability under Q'
    and probability zero under P), 0 for n = 0."""
    _check_eps(eps)
    return math.inf if _check_length(n) >= 1 else 0.0
