"""Independent oracles for the turn-taking families (persona stage, C9; two-agent dialog, C11).

`speaker_probs` computes P(x | latent value) straight from the definition the two families share: an
unobserved token x_0 ~ start, then turns of L tokens, the first speaker first, each token drawn from its
speaker's policy row of the previous token. It loops over x_0 and the positions (vectorised over
sequences only) and knows nothing of hidden states, phases or the library's construction; posteriors
are then Bayes' rule over the enumerated latent values. The helpers below it read the library's
outputs into the same shapes, and draw random policies for Hypothesis.
"""

from __future__ import annotations

import itertools

import numpy as np

LENGTH = 4  # enumerated sequences have this length; every prefix of each is checked
ROWS = 256  # (V + 1)^4 for V = 3, the largest enumeration with an impossible id; smaller ones are padded
ATOL = 1e-12  # posteriors: float64 round-off on length-4 products is ~1e-15


def speaker_probs(first, second, start, turn_length: int, seqs) -> np.ndarray:
    """[N]: P(x) for every row x of seqs [N, t] when speaker `first` ([V, V]) speaks positions 1..L,
    `second` positions L+1..2L, and so on, after an unobserved x_0 ~ start. Ids >= V are impossible."""
    seqs = np.asarray(seqs)
    vocab = len(start)
    total = np.zeros(len(seqs))
    for before in range(vocab):
        p, prev = np.full(len(seqs), start[before]), np.full(len(seqs), before)
        for position in range(seqs.shape[1]):
            token = seqs[:, position]
            policy = first if (position // turn_length) % 2 == 0 else second
            p = np.where(token < vocab, p * policy[prev, np.minimum(token, vocab - 1)], 0.0)
            prev = np.minimum(token, vocab - 1)
        total += p
    return total


def bayes_over_prefixes(joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """joint [N, L+1, K] = P(x_<=t, value) -> (P(x_<=t) [N, L+1], posterior [N, L+1, K]); after an
    impossible prefix the posterior stays at the last possible one (DESIGN.md)."""
    prob = joint.sum(axis=-1)
    post = np.zeros_like(joint)
    for t in range(joint.shape[1]):
        possible = prob[:, t] > 0
        post[possible, t] = joint[possible, t] / prob[possible, t, None]
        post[~possible, t] = post[~possible, t - 1]
    return prob, post


def stage_oracle(personas, prior, user, start, turn_length, seqs):
    """prob [N, L+1] of every prefix and persona posterior [N, L+1, K]."""
    joint = np.stack(
        [
            np.stack(
                [
                    prior[k] * speaker_probs(user, personas[k], start, turn_length, seqs[:, :t])
                    for k in range(len(prior))
                ],
                axis=-1,
            )
            for t in range(seqs.shape[1] + 1)
        ],
        axis=1,
    )
    return bayes_over_prefixes(joint)


def dialog_oracle(policies_a, policies_b, prior_a, prior_b, start, turn_length, seqs):
    """prob [N, L+1] and the joint posterior over (a, b) [N, L+1, Ka, Kb], with policies [Ka, Kb, V, V]."""
    num_a, num_b = len(prior_a), len(prior_b)
    pairs = list(itertools.product(range(num_a), range(num_b)))
    joint = np.stack(
        [
            np.stack(
                [
                    prior_a[a]
                    * prior_b[b]
                    * speaker_probs(
                        policies_a[a, b], policies_b[a, b], start, turn_length, seqs[:, :t]
                    )
                    for a, b in pairs
                ],
                axis=-1,
            )
            for t in range(seqs.shape[1] + 1)
        ],
        axis=1,
    )
    prob, post = bayes_over_prefixes(joint)
    return prob, post.reshape(post.shape[:2] + (num_a, num_b))


# --------------------------------------------------------------------------------------------------
# Helpers: enumeration batches, the library's outputs as prefix probabilities, random policies
# --------------------------------------------------------------------------------------------------


def enumerate_sequences(vocab: int, impossible: bool = True) -> tuple[np.ndarray, int]:
    """All of (V+1)^4 (id V impossible) or V^4, padded by repetition to ROWS rows; and the true count."""
    symbols = range(vocab + 1 if impossible else vocab)
    seqs = np.array(list(itertools.product(symbols, repeat=LENGTH)), np.int64)
    return seqs[np.arange(ROWS) % len(seqs)], len(seqs)


def log_prefix(process, seqs) -> np.ndarray:
    """log P(x_<=t) [N, L+1] from the library's conditionals."""
    log_cond = np.asarray(process.log_conditionals(seqs))
    vocab = log_cond.shape[-1]
    picked = np.take_along_axis(log_cond, np.minimum(seqs, vocab - 1)[..., None], axis=-1)[..., 0]
    picked = np.where(seqs < vocab, picked, -np.inf)
    return np.concatenate([np.zeros((len(seqs), 1)), np.cumsum(picked, axis=1)], axis=1)


def expected_speaker(turn_length: int, length: int) -> np.ndarray:
    """[L+1]: 0 when the next token (after t tokens) is the first speaker's, else 1."""
    return ((np.arange(length + 1) // turn_length) % 2).astype(int)


def random_rows(rng, shape, vocab: int, sparse: bool) -> np.ndarray:
    """Dirichlet(0.7) probability vectors of length V in an array of `shape`; when sparse, about half
    of the entries of each are zeroed (one kept), so impossible sequences occur."""
    out = rng.dirichlet(np.full(vocab, 0.7), size=shape)
    if sparse:
        keep = rng.random(out.shape) < 0.5
        flat = keep.reshape(-1, vocab)
        flat[np.arange(len(flat)), rng.integers(vocab, size=len(flat))] = True
        out = out * keep
    return out / out.sum(axis=-1, keepdims=True)


def random_prior(rng, size: int, sparse: bool) -> np.ndarray:
    """Dirichlet weights, with zeros (personas that never take the stage) when sparse."""
    return random_rows(rng, (), size, sparse)
