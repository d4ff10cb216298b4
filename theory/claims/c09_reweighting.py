"""C9: fine-tuning by likelihood reweights a fixed population of personas, while KL-regularised RL
tilts the base towards whatever the reward pays for, however rare.

Seed 002 pictures a pretrained model as a stage on which many personas can appear, and fine-tuning as
changing who appears. Two exactly solvable cases make that precise (Korbak, Perez, Buckley 2022 for the
RL view of fine-tuning).

Likelihood fitting of the mixture weights only. With personas P_1..P_K fixed (their distributions over
V^L), fitting w on the simplex to fine-tuning data from p_ft in the infinite-data limit maximises
L(w) = sum_x p_ft(x) log sum_k w_k P_k(x). By Gibbs' inequality L(w) <= -H(p_ft) with equality iff
sum_k w_k P_k = p_ft, so whenever p_ft lies in the personas' convex hull the fit reproduces it; data
drawn from a subset S of personas in proportion to the prior are such a p_ft, and if the P_k are
linearly independent the weights are exactly the prior restricted to S. The caveats: with linearly
dependent personas many weight vectors give the same distribution (weights are not identified); a
finite sample is not in the hull, and its fit can keep weight outside S; and a sequence no persona can
produce has likelihood zero under every weight vector (log-likelihood -inf): a weights-only fit can
never add a behaviour, only a flexible model can, and only one that its fine-tuning data show.

`fit_mixture_weights` maximises L by EM steps (w_k <- w_k r_k with r_k = dL/dw_k) and an active-set
Newton method on the faces of the simplex (EM alone crawls when the optimum lies on a face). Its
result carries the duality gap max_k r_k - 1 >= L(w*) - L(w), a certificate of optimality that the
tests check independently of how the optimum was found.

KL-regularised RL. The maximiser of E_pi[r] - beta KL(pi || pi_base) over distributions on V^L is
pi*(x) = pi_base(x) exp(r(x) / beta) / Z with optimal value beta log Z (Donsker-Varadhan). It never
leaves supp(pi_base), and as beta -> 0 it concentrates on the reward's argmax within supp(pi_base),
weighted by pi_base there, however small that base weight is: when the reward is a proxy whose argmax
is a behaviour the true reward dislikes, the hack rate goes to 1. Exactly, the mass outside the argmax
set A is S / (pi_base(A) + S) <= exp(-gap / beta) (1 - pi_base(A)) / pi_base(A), with
S = sum_{x not in A} pi_base(x) exp((r(x) - max r) / beta) and gap the reward margin to the next value.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import logsumexp

from theory.claims.enumeration import sequence_table
from toymodels.processes.personas import persona_stage
from toymodels.processes.table import TableProcess


def _distribution(probs, name: str, ndim: int = 1) -> np.ndarray:
    array = np.asarray(probs, np.float64)
    if array.ndim != ndim or array.size == 0 or np.any(~np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be a non-empty {ndim}-d array of non-negative probabilities")
    if np.any(np.abs(array.sum(axis=-1) - 1.0) > 1e-9):
        raise ValueError(f"{name} must sum to 1 along its last axis")
    return array


# --------------------------------------------------------------------------------------------------
# Weights-only likelihood fits
# --------------------------------------------------------------------------------------------------


def persona_tables(personas, user, turn_length: int, length: int, start=None) -> np.ndarray:
    """[K, V^L]: P_k(x) for every x in V^L of each single-persona stage (the stage with all prior mass
    on persona k), the fixed components of a weights-only fit. Exact, by enumeration."""
    personas = np.asarray(personas, np.float64)
    tables = [
        sequence_table(persona_stage(personas, np.eye(len(personas))[k], user, turn_length, start), length)
        for k in range(len(personas))
    ]
    return np.stack([table.reshape(-1) for table in tables])


def empirical_distribution(sequences, vocab_size: int) -> np.ndarray:
    """[V^L]: the frequencies of the rows of `sequences` [N, L], indexed lexicographically (x_1 most
    significant), i.e. the target of a fit to N samples."""
    tokens = np.asarray(sequences, np.int64)
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise ValueError(f"sequences must have shape [num_sequences >= 1, length], got {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"sequences must hold token ids in [0, {vocab_size})")
    index = tokens @ (vocab_size ** np.arange(tokens.shape[1] - 1, -1, -1, dtype=np.int64))
    return np.bincount(index, minlength=vocab_size ** tokens.shape[1]) / tokens.shape[0]


def mixture_log_likelihood(weights, component_probs, target_probs) -> float:
    """L(w) = sum_x p_ft(x) log sum_k w_k P_k(x): -inf when p_ft puts mass where the mixture has none."""
    w = _distribution(weights, "weights")
    mixture = w @ _distribution(component_probs, "component_probs", ndim=2)
    target = _distribution(target_probs, "target_probs")
    support = target > 0
    if np.any(mixture[support] <= 0):
        return -np.inf
    return float(target[support] @ np.log(mixture[support]))


class WeightFit(NamedTuple):
    """A weights-only maximum-likelihood fit."""

    weights: np.ndarray  # [K] on the simplex
    log_likelihood: float  # L(weights)
    gap: float  # max_k dL/dw_k - 1 >= L(w*) - L(weights): 0 exactly at an optimum


def _objective(w, a, p) -> float:
    m = w @ a
    return float(p @ np.log(m)) if np.all(m > 0) else -np.inf


def _toward_vertex(w, k, a, p) -> np.ndarray:
    """Exact line search along w -> e_k, for a component k whose gradient exceeds the multiplier: the
    objective is concave in the step, so bisect on the sign of its derivative."""
    m, target = w @ a, a[k]
    if np.all(target > 0) and p @ ((target - m) / target) >= 0:
        return np.eye(len(w))[k]
    low, high = 0.0, 1.0
    for _ in range(60):
        step = 0.5 * (low + high)
        slope = p @ ((target - m) / ((1 - step) * m + step * target))
        low, high = (step, high) if slope > 0 else (low, step)
    return (1 - low) * w + low * np.eye(len(w))[k]


def _newton_step(w, a, p) -> tuple[np.ndarray, float] | None:
    """One Newton step on the face {w_k > 0} of the simplex, cut at its boundary (a coordinate that
    reaches 0 leaves the face) and halved until the objective does not fall (beyond round-off).
    Returns (new weights, largest coordinate change), or None if no ascent step was found."""
    free = w > 0
    m = w @ a
    # The gradient minus 1 (its value at every free coordinate of an optimum): a constant shift moves
    # only the multiplier, and subtracting it keeps the direction accurate relative to its own size
    # when it is tiny, instead of relative to the O(1) gradient.
    grad = a[free] @ (p / m) - 1.0
    hessian = -(a[free] * (p / m**2)) @ a[free].T
    n = int(free.sum())
    kkt = np.block([[hessian, np.ones((n, 1))], [np.ones((1, n)), np.zeros((1, 1))]])
    # Least squares: with linearly dependent components the Hessian is singular (weights unidentified).
    direction = np.linalg.lstsq(kkt, np.concatenate([-grad, [0.0]]), rcond=None)[0][:n]
    if not np.all(np.isfinite(direction)) or grad @ direction <= 0:
        return None
    shrinking = direction < 0
    ratios = w[free][shrinking] / -direction[shrinking]
    limit = min(1.0, float(ratios.min())) if shrinking.any() else 1.0
    before, step = _objective(w, a, p), limit
    # Near the optimum a Newton step gains less than the round-off of the objective itself; comparing
    # at that resolution would reject every step, so the comparison allows for it.
    slack = 64 * np.finfo(np.float64).eps * (1.0 + abs(before))
    for _ in range(50):
        new = w.copy()
        new[free] = w[free] + step * direction
        if step == limit < 1.0:
            new[np.flatnonzero(free)[shrinking][np.argmin(ratios)]] = 0.0
        new = np.maximum(new, 0.0)
        new /= new.sum()
        if _objective(new, a, p) >= before - slack:
            return new, float(np.abs(new - w).max())
        step /= 2
    return None


def fit_mixture_weights(component_probs, target_probs, *, init=None, max_iterations: int = 500,
                        tol: float = 1e-13) -> WeightFit:
    """The weights w on the simplex maximising L(w) = sum_x p_ft(x) log sum_k w_k P_k(x), for fixed
    components P_k (`component_probs` [K, N], rows summing to 1) and a target p_ft (`target_probs` [N]:
    the fine-tuning distribution, or an empirical one). Starts from `init` (default uniform) and stops
    when the duality gap is at most `tol` and Newton steps no longer move the weights. With linearly
    dependent components the maximiser is not unique and the one returned depends on `init`.

    Raises ValueError when p_ft puts mass on an x that no component can produce: then every weight
    vector has log-likelihood -inf and there is nothing to fit (see `mixture_log_likelihood`).
    """
    components = _distribution(component_probs, "component_probs", ndim=2)
    target = _distribution(target_probs, "target_probs")
    if components.shape[1] != target.shape[0]:
        raise ValueError(f"component_probs has {components.shape[1]} outcomes but target_probs has {target.shape[0]}")
    support = target > 0
    a, p = components[:, support], target[support]
    if np.any(a.max(axis=0) == 0):
        raise ValueError("target_probs puts mass on sequences that no component produces: every weight vector "
                         "has log-likelihood -inf, so a weights-only fit cannot add them")
    k = components.shape[0]
    w = np.full(k, 1.0 / k) if init is None else _distribution(init, "init").copy()
    if w.shape != (k,) or np.any(w @ a <= 0):
        raise ValueError(f"init must be {k} weights giving every target sequence positive probability")
    for _ in range(10):  # a few EM steps: monotone, and they zero components the data never need
        w = w * (a @ (p / (w @ a)))
    for _ in range(int(max_iterations)):
        grad = a @ (p / (w @ a))
        gap = grad.max() - 1.0
        blocked = (w == 0) & (grad > 1.0 + tol)
        if blocked.any():  # a component at zero weight that should come back: move towards its vertex
            w = _toward_vertex(w, int(np.argmax(np.where(blocked, grad, -np.inf))), a, p)
            continue
        stepped = _newton_step(w, a, p)
        if stepped is None:
            if gap <= tol:
                break
            w = w * grad / (w @ grad)  # an EM step: always an ascent
            continue
        w, moved = stepped
        # The gap alone is not enough: where the objective is flat to second order along a face (a
        # component whose gradient is exactly 1 at the optimum) it is ~ (weight error)^2.
        if gap <= tol and moved <= 1e-15:
            break
    grad = a @ (p / (w @ a))
    return WeightFit(w, _objective(w, a, p), float(grad.max() - 1.0))


# --------------------------------------------------------------------------------------------------
# KL-regularised RL
# --------------------------------------------------------------------------------------------------


def _rl_inputs(base_probs, reward, beta):
    base = _distribution(base_probs, "base_probs")
    r = np.asarray(reward, np.float64)
    if r.shape != base.shape or np.any(~np.isfinite(r)):
        raise ValueError(f"reward must be finite with the shape of base_probs {base.shape}, got {r.shape}")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite number (the KL coefficient), got {beta!r}")
    return base, r, float(beta)


def rl_log_weights(base_probs, reward, beta: float) -> np.ndarray:
    """log pi_base(x) + r(x) / beta (-inf off supp(pi_base)): the unnormalised log of the optimum."""
    base, r, beta = _rl_inputs(base_probs, reward, beta)
    with np.errstate(divide="ignore"):
        return np.where(base > 0, np.log(base) + r / beta, -np.inf)


def rl_optimum_probs(base_probs, reward, beta: float) -> np.ndarray:
    """pi*(x) = pi_base(x) exp(r(x) / beta) / Z over the flat outcomes of base_probs."""
    log_w = rl_log_weights(base_probs, reward, beta)
    return np.exp(log_w - logsumexp(log_w))


def rl_optimum(base_probs, reward, beta: float, vocab_size: int) -> TableProcess:
    """The KL-regularised RL optimum as a Process over V^L (base_probs and reward flat, lexicographic)."""
    return TableProcess.from_log_weights(rl_log_weights(base_probs, reward, beta), vocab_size)


def regularised_objective(policy, base_probs, reward, beta: float) -> float:
    """E_pi[r] - beta KL(pi || pi_base); -inf when pi puts mass outside supp(pi_base)."""
    base, r, beta = _rl_inputs(base_probs, reward, beta)
    pi = _distribution(policy, "policy")
    support = pi > 0
    if np.any(base[support] == 0):
        return -np.inf
    kl = float(pi[support] @ (np.log(pi[support]) - np.log(base[support])))
    return float(pi @ r) - beta * kl


def optimal_value(base_probs, reward, beta: float) -> float:
    """max_pi E_pi[r] - beta KL(pi || pi_base) = beta log sum_x pi_base(x) exp(r(x) / beta)."""
    return float(beta * logsumexp(rl_log_weights(base_probs, reward, beta)))


def greedy_limit(base_probs, reward) -> np.ndarray:
    """The beta -> 0 limit of pi*: pi_base restricted to argmax_{x in supp(pi_base)} r(x), renormalised."""
    base, r, _ = _rl_inputs(base_probs, reward, 1.0)
    best = r == np.max(np.where(base > 0, r, -np.inf))
    limit = np.where(best & (base > 0), base, 0.0)
    return limit / limit.sum()


def hack_rate(policy, is_hack) -> float:
    """The probability that `policy` produces a hack: mass on the outcomes marked True in `is_hack`
    (e.g. those where the proxy reward is maximal but the true reward is not)."""
    pi = _distribution(policy, "policy")
    mask = np.asarray(is_hack, bool)
    if mask.shape != pi.shape:
        raise ValueError(f"is_hack must have the shape of policy {pi.shape}, got {mask.shape}")
    return float(pi[mask].sum())
