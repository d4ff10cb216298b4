"""C5: an imperfect predictor's long rollouts drift from the data until they are told apart with
certainty (seed essays 000 and 001).

The claim in our words: a predictor that is only slightly wrong at every step, when it generates on its
own, conditions on its own slightly-off text and drifts; over long generations its output becomes easy
to tell apart from real data, even though its per-token prediction loss is tiny. Made exact:

- If the data P and the predictor Q are stationary ergodic Markov chains and Q != P, then TV_n -> 1.
  Quantitatively: TV_n >= 1 - BC_n, where BC_n = sum_x sqrt(P_n(x) Q_n(x)) is the Bhattacharyya
  coefficient, which for first-order chains is the matrix power
      BC_n = sqrt(p_1 * q_1)^T M^(n-1) 1,   M[s, s'] = sqrt(p(s' | s) q(s' | s))
  (`markov_bhattacharyya`). M's rows sum to at most 1, with equality only where p(.|s) = q(.|s), so for
  irreducible P != Q its spectral radius (`bhattacharyya_decay`) is < 1 and BC_n -> 0 geometrically;
  `bhattacharyya_envelope` gives an explicit BC_n <= kappa rho^(n-1) valid at every n.
- If P is a Markov chain and supp Q lies inside supp P, the chain-rule terms of G_n converge to the
  divergence rate  r = sum_s pi_Q(s) KL(q(.|s) || p(.|s))  (`markov_divergence_rate`); if Q starts
  stationary every term after the first equals r, so G_n = KL(q_1 || p_1) + (n - 1) r exactly
  (`markov_generation_kl`): linear growth. If Q leaves supp P, G_n is infinite. For chains of order k
  the states s are the last k tokens (`history_kernel` writes such a chain as a first-order chain on
  them): from a stationary start every term from the (k+1)-th on equals r.
- Counterexamples where nothing compounds:
  * non-ergodic P: a mixture of authors (C1) against one author a. Since P >= pi_a P_a pointwise,
    G_n = E_{P_a}[log pi(a | x)] - log pi_a rises to at most -log pi_a, and TV_n to at most 1 - pi_a
    (`one_author_limits`). The gaps to these limits are at most
        2 sum_{b != a} sqrt(pi_b / pi_a) BC_n(P_a, P_b)   for G,
        sqrt(1 - pi_a) sum_{b != a} sqrt(pi_b) BC_n(P_a, P_b)   for TV   (`one_author_gap_bounds`),
    so for distinguishable authors both limits are reached geometrically fast.
  * an observed Markov chain with the right kernel and the wrong start: G_n = KL(q_1 || p_1) and
    TV_n = TV(q_1, p_1) for every n (`wrong_start_constants`).

`divergence_curves` gives F_t, G_t and TV_t for t = 1..n of any (process, predictor) pair by exact
enumeration (theory.divergence), for the experiment and the tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory.claims.enumeration import all_sequences
from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.processes.authors import single_author_predictor
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.standard import markov_chain


def _order_k_kernel(kernel, name: str) -> np.ndarray:
    """A kernel of order k >= 1: shape [V] * (k + 1), each row over the last axis a distribution."""
    array = np.asarray(kernel, np.float64)
    if array.ndim < 2 or len(set(array.shape)) != 1 or array.shape[0] < 1:
        raise ValueError(f"{name} must have shape [V] * (k + 1), k >= 1 ([V, V] for a first-order chain), "
                         f"got shape {array.shape}")
    rows = array.reshape(-1, array.shape[-1])
    if np.any(~np.isfinite(rows)) or np.any(rows < 0) or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError(f"{name} must be row-stochastic (non-negative rows summing to 1)")
    return array


def _kernel(kernel, name: str) -> np.ndarray:
    """A first-order kernel [V, V]."""
    array = np.asarray(kernel, np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a square [V, V] first-order kernel, got shape {array.shape}")
    return _order_k_kernel(array, name)


def _distribution(probs, size: int, name: str) -> np.ndarray:
    array = np.asarray(probs, np.float64)
    if array.shape != (size,) or np.any(~np.isfinite(array)) or np.any(array < 0) or abs(array.sum() - 1) > 1e-9:
        raise ValueError(f"{name} must be a distribution over {size} tokens, got {array}")
    return array


def _length(length) -> int:
    if isinstance(length, bool) or int(length) != length or length < 1:
        raise ValueError(f"length must be a positive int, got {length}")
    return int(length)


def _weighted(weights: np.ndarray, values: np.ndarray) -> float:
    """sum_s w(s) values(s) with 0 * inf = 0 (a state never visited contributes nothing)."""
    return float(np.sum(np.where(weights > 0, weights * np.where(weights > 0, values, 0.0), 0.0)))


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL over the last axis; inf where p > 0 = q, never NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


# --------------------------------------------------------------------------------------------------
# Stationary ergodic chains: divergence rate and the Bhattacharyya coefficient
# --------------------------------------------------------------------------------------------------


def stationary_distribution(kernel) -> np.ndarray:
    """pi with pi K = pi (the left eigenvector for eigenvalue 1, normalised; unique when K is
    irreducible)."""
    kernel = _kernel(kernel, "kernel")
    values, vectors = np.linalg.eig(kernel.T)
    vector = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    return np.abs(vector) / np.abs(vector).sum()


def history_kernel(kernel) -> np.ndarray:
    """An order-k chain (kernel of shape [V] * (k + 1)) as a first-order chain on its last k tokens:
    [V^k, V^k], history (h_1, ..., h_k) at row-major index sum_i h_i V^(k-i) moves to (h_2, ..., h_k, v)
    with probability kernel[h_1, ..., h_k, v]. For k = 1 this is the kernel itself."""
    kernel = _order_k_kernel(kernel, "kernel")
    vocab, order = kernel.shape[0], kernel.ndim - 1
    rows = kernel.reshape(vocab**order, vocab)
    histories = np.arange(vocab**order)
    lifted = np.zeros((vocab**order, vocab**order))
    for v in range(vocab):
        lifted[histories, (histories * vocab) % vocab**order + v] = rows[:, v]
    return lifted


def stationary_chain(kernel) -> HMMProcess:
    """The Markov chain with this kernel (order k: shape [V] * (k + 1)) started from its stationary
    distribution over the first k tokens: a stationary process (ergodic when the chain on histories
    is irreducible and aperiodic)."""
    kernel = _order_k_kernel(kernel, "kernel")
    start = stationary_distribution(history_kernel(kernel)).reshape(kernel.shape[:-1])
    return markov_chain(kernel, initial=start)


def markov_divergence_rate(p_kernel, q_kernel) -> float:
    """r = sum_s pi_Q(s) KL(q(.|s) || p(.|s)), the limit of G_n / n for stationary ergodic Markov P
    and Q (inf when Q leaves P's support from a state Q visits). Swap the arguments for F_n / n.
    Kernels of order k (shape [V] * (k + 1), both the same) sum over the histories s of k tokens."""
    p_kernel, q_kernel = _order_k_kernel(p_kernel, "p_kernel"), _order_k_kernel(q_kernel, "q_kernel")
    if p_kernel.shape != q_kernel.shape:
        raise ValueError(f"p_kernel and q_kernel must have the same shape (vocabulary and order), got "
                         f"{p_kernel.shape} and {q_kernel.shape}")
    weights = stationary_distribution(history_kernel(q_kernel))
    vocab = q_kernel.shape[-1]
    per_state = _kl(q_kernel.reshape(-1, vocab), p_kernel.reshape(-1, vocab))
    return _weighted(weights, per_state)


def markov_generation_kl(p_kernel, q_kernel, p_initial, q_initial, length: int) -> np.ndarray:
    """[n]: the chain-rule terms of G_n = KL(Q_n || P_n) for first-order chains P = (p_1, p) and
    Q = (q_1, q): term 0 is KL(q_1 || p_1), term t >= 1 is sum_s Q(x_t = s) KL(q(.|s) || p(.|s)).
    Their cumulative sum is G_1..G_n."""
    p_kernel, q_kernel = _kernel(p_kernel, "p_kernel"), _kernel(q_kernel, "q_kernel")
    size = p_kernel.shape[0]
    p_initial = _distribution(p_initial, size, "p_initial")
    marginal = _distribution(q_initial, size, "q_initial")
    per_state = _kl(q_kernel, p_kernel)
    terms = [float(_kl(marginal, p_initial))]
    for _ in range(_length(length) - 1):
        terms.append(_weighted(marginal, per_state))
        marginal = marginal @ q_kernel
    return np.asarray(terms)


def markov_bhattacharyya(p_kernel, q_kernel, p_initial, q_initial, length: int) -> np.ndarray:
    """[n]: BC_t = sum over x in V^t of sqrt(P_t(x) Q_t(x)) for t = 1..n, by the matrix power of
    M[s, s'] = sqrt(p(s'|s) q(s'|s)); TV_t >= 1 - BC_t."""
    p_kernel, q_kernel = _kernel(p_kernel, "p_kernel"), _kernel(q_kernel, "q_kernel")
    size = p_kernel.shape[0]
    vector = np.sqrt(_distribution(p_initial, size, "p_initial") * _distribution(q_initial, size, "q_initial"))
    moves = np.sqrt(p_kernel * q_kernel)
    out = [vector.sum()]
    for _ in range(_length(length) - 1):
        vector = vector @ moves
        out.append(vector.sum())
    return np.asarray(out)


def markov_bhattacharyya_at(p_kernel, q_kernel, p_initial, q_initial, length: int) -> float:
    """BC_n at one (possibly huge) length n, by repeated squaring of M."""
    p_kernel, q_kernel = _kernel(p_kernel, "p_kernel"), _kernel(q_kernel, "q_kernel")
    size = p_kernel.shape[0]
    vector = np.sqrt(_distribution(p_initial, size, "p_initial") * _distribution(q_initial, size, "q_initial"))
    power = np.linalg.matrix_power(np.sqrt(p_kernel * q_kernel), _length(length) - 1)
    return float(vector @ power.sum(axis=1))


def bhattacharyya_decay(p_kernel, q_kernel) -> float:
    """The spectral radius of M[s, s'] = sqrt(p(s'|s) q(s'|s)): BC_n shrinks like its n-th power. It is
    < 1 whenever P is irreducible and Q != P, so then TV_n -> 1."""
    moves = np.sqrt(_kernel(p_kernel, "p_kernel") * _kernel(q_kernel, "q_kernel"))
    return float(np.max(np.abs(np.linalg.eigvals(moves))))


def bhattacharyya_envelope(p_kernel, q_kernel) -> tuple[float, float]:
    """(rho, kappa) with BC_n <= kappa rho^(n-1) for every n and every pair of starts, so that
    TV_n >= 1 - kappa rho^(n-1) at every length.

    rho is the Perron root of M and kappa = max(u) / min(u) for its Perron vector u (M u = rho u):
    1 <= u / min(u) gives M^(n-1) 1 <= rho^(n-1) u / min(u), and BC_1 <= 1. Needs M irreducible (e.g.
    both kernels with full support), otherwise u may have zeros and kappa is inf.
    """
    moves = np.sqrt(_kernel(p_kernel, "p_kernel") * _kernel(q_kernel, "q_kernel"))
    values, vectors = np.linalg.eig(moves)
    top = int(np.argmax(np.abs(values)))
    vector = np.abs(np.real(vectors[:, top]))
    kappa = float(vector.max() / vector.min()) if vector.min() > 0 else float("inf")
    return float(np.abs(values[top])), kappa


# --------------------------------------------------------------------------------------------------
# The counterexamples
# --------------------------------------------------------------------------------------------------


def one_author_limits(prior, author: int) -> tuple[float, float]:
    """(-log pi_a, 1 - pi_a): the values G_n and TV_n of one author a against the mixture rise to
    (and never exceed) when the authors become distinguishable."""
    prior = np.asarray(prior, np.float64)
    if not 0 <= author < len(prior) or prior[author] <= 0:
        raise ValueError(f"author must index an author of positive prior weight, got {author}")
    return float(-np.log(prior[author])), float(1.0 - prior[author])


def one_author_gap_bounds(prior, author: int, bhattacharyya) -> tuple[float, float]:
    """Upper bounds on (-log pi_a - G_n, 1 - pi_a - TV_n) from BC_n(P_a, P_b) for every author b
    (`bhattacharyya`: [K], entry a ignored)."""
    prior = np.asarray(prior, np.float64)
    one_author_limits(prior, author)
    others = np.arange(len(prior)) != author
    coefficients = np.asarray(bhattacharyya, np.float64)[others]
    g_gap = 2.0 * np.sum(np.sqrt(prior[others] / prior[author]) * coefficients)
    tv_gap = np.sqrt(1.0 - prior[author]) * np.sum(np.sqrt(prior[others]) * coefficients)
    return float(g_gap), float(tv_gap)


def one_author_curves(process, author: int, length: int, latent: str = "author") -> tuple[np.ndarray, np.ndarray]:
    """(G_t, TV_t) for t = 1..n of author a's own process Q = P_a against the mixture P, from the
    mixture's posterior alone: G_t = E_{P_a}[log pi(a | x_<=t)] - log pi_a and
    TV_t = E_{P_a}[(1 - pi_a / pi(a | x_<=t))_+], by enumeration of V^n."""
    length = _length(length)
    seqs = all_sequences(process.vocab_size, length)
    weight = np.exp(np.asarray(single_author_predictor(process, author, latent).log_prob(seqs), np.float64))
    posterior = np.asarray(process.posterior(seqs, latent), np.float64)[:, 1:, author]  # [N, n]
    prior = float(np.asarray(process.posterior(seqs[:1], latent), np.float64)[0, 0, author])
    with np.errstate(divide="ignore"):
        log_post = np.where(weight[:, None] > 0, np.log(np.where(posterior > 0, posterior, 1.0)), 0.0)
    g = weight @ log_post - np.log(prior)
    ratio = np.divide(prior, posterior, out=np.ones_like(posterior), where=posterior > 0)
    tv = weight @ np.maximum(0.0, 1.0 - ratio)
    return g, tv


def wrong_start_constants(p_initial, q_initial) -> tuple[float, float]:
    """(KL(q_1 || p_1), TV(q_1, p_1)): G_n and TV_n, at every n, of a chain with the right kernel but
    start q_1 against the same kernel started at p_1."""
    q_initial = np.asarray(q_initial, np.float64)
    p_initial = _distribution(p_initial, q_initial.shape[0], "p_initial")
    q_initial = _distribution(q_initial, p_initial.shape[0], "q_initial")
    return float(_kl(q_initial, p_initial)), 0.5 * float(np.abs(q_initial - p_initial).sum())


# --------------------------------------------------------------------------------------------------
# Curves by enumeration, for any pair
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Curves:
    """Exact F_t, G_t, TV_t for t = 1..n (index t - 1)."""

    forward: np.ndarray
    generation: np.ndarray
    tv: np.ndarray


def divergence_curves(p, q, length: int) -> Curves:
    """F_t, G_t (cumulative chain-rule sums) and TV_t for t = 1..n, by enumeration of V^n."""
    length = _length(length)
    return Curves(
        forward=np.cumsum(forward_kl(p, q, length).per_position),
        generation=np.cumsum(generation_kl(p, q, length).per_position),
        tv=np.asarray(total_variation(p, q, length).per_position),
    )
