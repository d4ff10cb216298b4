"""Independent oracles: brute-force enumeration in NumPy float64, sharing no code with the library.

Processes are described here by plain arrays (T [V, S, S], pi [S]); probabilities of sequences come
from summing over every hidden-state path, never from a filtering recursion.
"""

from __future__ import annotations

import itertools

import numpy as np


def all_sequences(vocab_size: int, length: int) -> np.ndarray:
    """Every sequence of V^L in lexicographic order (first token most significant), shape [V^L, L]."""
    return np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int64).reshape(-1, length)


def hmm_joint_final(transitions, initial, tokens) -> np.ndarray:
    """P(x_1..x_L, state after x_L = j) for each j, by summing over every path of states."""
    t = np.asarray(transitions, np.float64)
    vocab, num_states, _ = t.shape
    out = np.zeros(num_states)
    for path in itertools.product(range(num_states), repeat=len(tokens) + 1):
        weight = initial[path[0]]
        for step, token in enumerate(tokens):
            if token >= vocab:
                weight = 0.0
                break
            weight *= t[token, path[step], path[step + 1]]
        out[path[-1]] += weight
    return out


def hmm_prob(transitions, initial, tokens) -> float:
    return float(hmm_joint_final(transitions, initial, tokens).sum())


def hmm_conditionals(transitions, initial, tokens) -> np.ndarray:
    """[L, V] next-token probabilities given each prefix; NaN rows where the prefix has probability 0."""
    vocab = np.asarray(transitions).shape[0]
    out = np.full((len(tokens), vocab), np.nan)
    for t in range(len(tokens)):
        prefix = list(tokens[:t])
        denominator = hmm_prob(transitions, initial, prefix)
        if denominator > 0:
            out[t] = [hmm_prob(transitions, initial, prefix + [v]) / denominator for v in range(vocab)]
    return out


def hmm_beliefs(transitions, initial, tokens) -> np.ndarray:
    """[L+1, S] P(state after t tokens | x_1..x_t); NaN rows where the prefix has probability 0."""
    num_states = np.asarray(initial).shape[0]
    out = np.full((len(tokens) + 1, num_states), np.nan)
    for t in range(len(tokens) + 1):
        joint = hmm_joint_final(transitions, initial, list(tokens[:t]))
        if joint.sum() > 0:
            out[t] = joint / joint.sum()
    return out


def sequence_probs_from_conditionals(conditional, vocab_size: int, length: int) -> np.ndarray:
    """Q(x) for every x in V^L, from a Python function conditional(prefix) -> probabilities over V."""
    out = np.zeros(vocab_size**length)
    for index, x in enumerate(all_sequences(vocab_size, length)):
        prob = 1.0
        for t in range(length):
            prob *= conditional(tuple(x[:t]))[x[t]]
            if prob == 0:
                break
        out[index] = prob
    return out


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """sum p log(p / q) with 0 log 0 = 0 and inf when p > 0 = q."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    support = p > 0
    if np.any(q[support] == 0):
        return np.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.sum(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64))))


def prefix_marginals(probs: np.ndarray, vocab_size: int, length: int, prefix_length: int) -> np.ndarray:
    """Marginal over the first `prefix_length` tokens of a distribution over V^L (lexicographic)."""
    return np.asarray(probs).reshape(vocab_size**prefix_length, vocab_size ** (length - prefix_length)).sum(axis=1)
