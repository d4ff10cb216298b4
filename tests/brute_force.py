"""Independent oracles: brute-force enumeration in NumPy float64, sharing no code with the library.

Processes are described here by plain arrays (T [V, S, S], pi [S]); probabilities of sequences come
from summing over every hidden-state path, never from a filtering recursion.
"""

from __future__ import annotations

import itertools

import numpy as np


def all_sequences(vocab_size: int, length: int) -> np.ndarray:
    """Every sequence of V^L in lexicographic order (first token most significant), shape [V^L, L]."""
    return np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int64).reshape(vocab_size**length, length)


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


# --------------------------------------------------------------------------------------------------
# Vectorised path enumeration and the conventions of DESIGN.md, for whole batches of sequences
# --------------------------------------------------------------------------------------------------


def hmm_path_joint(transitions, initial, sequences) -> np.ndarray:
    """[N, S]: P(x_1..x_L, state after x_L = j) for every row x of `sequences` [N, L], by summing the
    weight of every one of the S^(L+1) state paths (vectorised over paths and sequences). Token ids
    >= V have probability 0."""
    t = np.asarray(transitions, np.float64)
    pi = np.asarray(initial, np.float64)
    vocab, num_states, _ = t.shape
    seqs = np.asarray(sequences, np.int64)
    if seqs.ndim != 2:
        raise ValueError(f"sequences must have shape [N, L], got {seqs.shape}")
    if seqs.size and seqs.min() < 0:
        raise ValueError("negative token ids have no probability; they are an error")
    seqs = np.minimum(seqs, vocab)  # every id >= V becomes the one all-zero slab below
    padded = np.concatenate([t, np.zeros((1, num_states, num_states))])
    length = seqs.shape[1]
    paths = all_sequences(num_states, length + 1)  # [P, L+1]
    weight = np.broadcast_to(pi[paths[:, 0]], (seqs.shape[0], paths.shape[0])).copy()
    for step in range(length):
        weight *= padded[seqs[:, step][:, None], paths[None, :, step], paths[None, :, step + 1]]
    out = np.zeros((seqs.shape[0], num_states))
    for j in range(num_states):
        out[:, j] = weight[:, paths[:, -1] == j].sum(axis=1)
    return out


def hmm_sequence_probs(transitions, initial, sequences) -> np.ndarray:
    """[N]: P(x) for every row x of `sequences` [N, L], by path enumeration."""
    return hmm_path_joint(transitions, initial, sequences).sum(axis=1)


def hmm_reference(transitions, initial, sequences) -> dict[str, np.ndarray]:
    """What an exact process must return for every row of `sequences` [N, L], in probability space,
    with DESIGN.md's conventions for impossible prefixes spelled out:

      prob         [N]         P(x_1..x_L)
      prefix       [N, L+1]    P(x_1..x_t) for t = 0..L
      conditionals [N, L+1, V] P(x_{t+1} = v | x_1..x_t) for t = 0..L; all 0 after an impossible prefix
      beliefs      [N, L+1, S] P(state after t tokens | x_1..x_t); after an impossible prefix, the belief
                               of the longest possible prefix (entry 0 is `initial` itself)

    Every number comes from path enumeration (`hmm_path_joint`), never from a filtering recursion."""
    t = np.asarray(transitions, np.float64)
    vocab, num_states, _ = t.shape
    seqs = np.asarray(sequences, np.int64)
    n, length = seqs.shape
    prefix = np.zeros((n, length + 1))
    beliefs = np.zeros((n, length + 1, num_states))
    conditionals = np.zeros((n, length + 1, vocab))
    beliefs[:, 0] = np.asarray(initial, np.float64)
    for step in range(length + 1):
        joint = hmm_path_joint(t, initial, seqs[:, :step])
        prefix[:, step] = joint.sum(axis=1)
        possible = prefix[:, step] > 0
        if step > 0:
            beliefs[:, step] = beliefs[:, step - 1]
            beliefs[possible, step] = joint[possible] / prefix[possible, step][:, None]
        for v in range(vocab):
            extended = np.concatenate([seqs[:, :step], np.full((n, 1), v)], axis=1)
            conditionals[possible, step, v] = (
                hmm_sequence_probs(t, initial, extended[possible]) / prefix[possible, step]
            )
    return {"prob": prefix[:, -1], "prefix": prefix, "conditionals": conditionals, "beliefs": beliefs}


def hmm_forward(transitions, initial, tokens) -> tuple[np.ndarray, np.ndarray]:
    """(log P(x_1..x_t) [L+1], beliefs [L+1, S]) for one long sequence, by a plain NumPy float64 forward
    pass that carries the unnormalised forward vector as (direction, log scale). Written independently
    of the library (for lengths where path enumeration is out of reach). After an impossible token the
    log probability is -inf and the belief stays at the last possible one."""
    t = np.asarray(transitions, np.float64)
    vocab, num_states, _ = t.shape
    belief = np.asarray(initial, np.float64).copy()
    beliefs = np.zeros((len(tokens) + 1, num_states))
    beliefs[0] = belief
    log_prefix = np.zeros(len(tokens) + 1)
    log_scale = 0.0
    alive = True
    for step, token in enumerate(np.asarray(tokens)):
        if alive:
            alpha = belief @ t[token] if token < vocab else np.zeros(num_states)
            mass = alpha.sum()
            if mass > 0:
                log_scale += np.log(mass)
                belief = alpha / mass
            else:
                alive = False
                log_scale = -np.inf
        beliefs[step + 1] = belief
        log_prefix[step + 1] = log_scale
    return log_prefix, beliefs


def table_prefix_prob(table: np.ndarray, prefix) -> float:
    """P(x_1..x_t = prefix) for a table of shape [V] * L: the sum of table[prefix + c] over every
    completion c in V^(L - t), enumerated with itertools. Ids >= V have probability 0."""
    table = np.asarray(table, np.float64)
    vocab, length = table.shape[0], table.ndim
    if any(token >= vocab for token in prefix):
        return 0.0
    return float(
        sum(table[tuple(prefix) + tail] for tail in itertools.product(range(vocab), repeat=length - len(prefix)))
    )


def binomial_pvalues(counts, probs) -> np.ndarray:
    """Two-sided exact binomial p-values of `counts` [K] (outcome k seen counts[k] times in
    n = counts.sum() independent draws) against exact outcome probabilities `probs` [K].
    An outcome of probability 0 (or 1) has p-value 1 if its count is 0 (or n) and 0 otherwise."""
    from scipy.stats import binomtest

    counts = np.asarray(counts, np.int64)
    probs = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    n = int(counts.sum())
    out = np.ones(len(counts))
    for k, (count, p) in enumerate(zip(counts, probs)):
        if p == 0.0 or p == 1.0:
            out[k] = 1.0 if count == round(p * n) else 0.0
        else:
            out[k] = binomtest(int(count), n, float(p)).pvalue
    return out


def hmm_sample(transitions, initial, num_sequences: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """[N, L] sequences drawn by plain NumPy ancestral sampling of the (token, next state) chain:
    state ~ initial, then (v, j) ~ T[:, state, :] jointly, token v, state j."""
    t = np.asarray(transitions, np.float64)
    vocab, num_states, _ = t.shape
    joint = np.cumsum(t.transpose(1, 0, 2).reshape(num_states, vocab * num_states), axis=1)  # [i, v*S + j]
    joint /= joint[:, -1:]
    start = np.cumsum(np.asarray(initial, np.float64))
    state = np.minimum(np.searchsorted(start / start[-1], rng.random(num_sequences), side="right"), num_states - 1)
    out = np.zeros((num_sequences, length), np.int64)
    for step in range(length):
        draw = (rng.random(num_sequences)[:, None] >= joint[state]).sum(axis=1)
        draw = np.minimum(draw, vocab * num_states - 1)
        out[:, step], state = draw // num_states, draw % num_states
    return out
