"""Brute-force oracles for the claim tests of C1, C5, C7 and C10, in plain NumPy float64.

Nothing here imports the library: sequence probabilities come from the written definition of each
process (a product of kernel entries, a sum over hidden-state paths, a sum over an unobserved start
token), and every expectation is a sum over all of V^n.
"""

from __future__ import annotations

import numpy as np

from brute_force import all_sequences, hmm_reference, hmm_sequence_probs


def entropy(probs) -> np.ndarray:
    """Shannon entropy in nats over the last axis, with 0 log 0 = 0."""
    probs = np.asarray(probs, np.float64)
    safe = np.where(probs > 0, probs, 1.0)
    return -np.sum(np.where(probs > 0, probs * np.log(safe), 0.0), axis=-1)


def kl(p, q) -> float:
    """KL(p || q) over flat arrays: inf when p puts mass where q has none, never NaN."""
    p, q = np.ravel(np.asarray(p, np.float64)), np.ravel(np.asarray(q, np.float64))
    support = p > 0
    if np.any(q[support] == 0):
        return np.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def kl_rows(p, q) -> np.ndarray:
    """KL(p[s] || q[s]) for every row s."""
    return np.array([kl(a, b) for a, b in zip(np.asarray(p), np.asarray(q))])


def total_variation(p, q) -> float:
    return 0.5 * float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def bhattacharyya(p, q) -> float:
    """sum_x sqrt(p(x) q(x)), by brute force over the given (enumerated) probability vectors."""
    return float(np.sum(np.sqrt(np.asarray(p, np.float64) * np.asarray(q, np.float64))))


def markov_probs(kernel, initial, length: int) -> np.ndarray:
    """P(x) = initial[x_1] prod_t kernel[x_t, x_{t+1}] for every x in V^length (lexicographic)."""
    kernel, initial = np.asarray(kernel, np.float64), np.asarray(initial, np.float64)
    seqs = all_sequences(kernel.shape[0], length)
    out = initial[seqs[:, 0]].copy()
    for t in range(length - 1):
        out *= kernel[seqs[:, t], seqs[:, t + 1]]
    return out


def stationary(kernel) -> np.ndarray:
    """The stationary distribution of an irreducible row-stochastic kernel, by solving pi (K - I) = 0
    with sum(pi) = 1 as a least-squares system (not by an eigenvector, as the library does)."""
    kernel = np.asarray(kernel, np.float64)
    size = kernel.shape[0]
    system = np.vstack([kernel.T - np.eye(size), np.ones((1, size))])
    rhs = np.r_[np.zeros(size), 1.0]
    return np.linalg.lstsq(system, rhs, rcond=None)[0]


def prefix_marginal(probs, vocab: int, length: int, prefix: int) -> np.ndarray:
    """Marginal of the first `prefix` tokens of a distribution over V^length (lexicographic)."""
    return np.asarray(probs).reshape(vocab**prefix, vocab ** (length - prefix)).sum(axis=1)


def hmm_probs(transitions, initial, length: int) -> np.ndarray:
    """P(x) for every x in V^length by summing every hidden-state path of (T, pi)."""
    vocab = np.asarray(transitions).shape[0]
    return hmm_sequence_probs(transitions, initial, all_sequences(vocab, length))


def tempered_hmm_probs(transitions, initial, tau: float, length: int) -> np.ndarray:
    """Q(x) for every x in V^length where q(v | x<t) is the HMM's conditional raised to 1/tau and
    renormalised; the HMM's conditionals come from path-enumerated prefix probabilities."""
    vocab = np.asarray(transitions).shape[0]
    seqs = all_sequences(vocab, length)
    cond = hmm_reference(transitions, initial, seqs)["conditionals"][:, :length]  # [N, L, V]
    powered = cond ** (1.0 / tau)
    totals = powered.sum(axis=-1, keepdims=True)
    tempered = np.divide(powered, totals, out=np.zeros_like(powered), where=totals > 0)
    picked = np.take_along_axis(tempered, seqs[..., None], axis=-1)[..., 0]
    return picked.prod(axis=1)


def waluigi_probs(prior_w, rho, good, imitation, after, start, length: int):
    """(P(x | G), P(x | W)) for every x in V^length, V = N + 1, reveal token r = N, from the definition:
    an unobserved x_0 ~ start; G follows good; W emits r with probability rho and otherwise follows
    (1 - rho) imitation until its first r, and `after` (over all V tokens) from then on."""
    good, imitation, after = (np.asarray(a, np.float64) for a in (good, imitation, after))
    normal = good.shape[0]
    vocab = normal + 1
    seqs = all_sequences(vocab, length)
    p_g = np.zeros(len(seqs))
    p_w = np.zeros(len(seqs))
    for index, x in enumerate(seqs):
        for x0 in range(normal):
            weight_g = weight_w = float(start[x0])
            previous, revealed = x0, False
            for token in x:
                weight_g *= good[previous, token] if token < normal and previous < normal else 0.0
                if revealed:
                    weight_w *= after[previous, token]
                elif token == normal:
                    weight_w *= rho
                    revealed = True
                else:
                    weight_w *= (1.0 - rho) * imitation[previous, token]
                previous = token
            p_g[index] += weight_g
            p_w[index] += weight_w
    return p_g, p_w


def markov_sequence_probs(kernel, initial):
    """A function seqs [M, t] -> P(x) [M] for a first-order chain (initial[x_1] prod kernel), with
    P(empty) = 1: the author format of tests/brute_force_authors.py."""
    kernel, initial = np.asarray(kernel, np.float64), np.asarray(initial, np.float64)

    def probs(seqs):
        seqs = np.asarray(seqs, np.int64)
        if seqs.shape[1] == 0:
            return np.ones(len(seqs))
        out = initial[seqs[:, 0]].copy()
        for t in range(seqs.shape[1] - 1):
            out *= kernel[seqs[:, t], seqs[:, t + 1]]
        return out

    return probs


def prefix_table(probs, vocab: int, length: int) -> np.ndarray:
    """[V^L, L + 1]: P(x_<=t) for every row x of V^L (lexicographic) and t = 0..L, from P over V^L."""
    columns = [np.repeat(prefix_marginal(probs, vocab, length, t), vocab ** (length - t)) for t in range(length + 1)]
    return np.stack(columns, axis=1)


def conditionals_table(probs, vocab: int, length: int) -> np.ndarray:
    """[V^L, L, V]: P(x_t = v | x_<t) = P(x_<t v) / P(x_<t) for every row and t = 0..L-1 (0 where
    P(x_<t) = 0), straight from the distribution over V^L."""
    out = np.zeros((vocab**length, length, vocab))
    for t in range(length):
        joint = prefix_marginal(probs, vocab, length, t + 1).reshape(vocab**t, vocab)
        total = joint.sum(axis=1, keepdims=True)
        cond = np.divide(joint, total, out=np.zeros_like(joint), where=total > 0)
        out[:, t] = np.repeat(cond, vocab ** (length - t), axis=0)
    return out
