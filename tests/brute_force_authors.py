"""Brute-force oracles for C1's latent authors (an extension of tests/brute_force.py).

An author is described here by a function `probs(sequences [N, L]) -> P_a(x) [N]`: path enumeration of
its own T for a generic HMM author (`hmm_author`), the product of kernel entries for a Markov author
(`markov_author`, from the family's written definition). Mixtures are then done by hand with Bayes'
rule: pi(a | x<t) proportional to pi_a P_a(x<t). Nothing here imports the library.
"""

from __future__ import annotations

import numpy as np

from brute_force import all_sequences, hmm_sequence_probs


def hmm_author(transitions, initial):
    """P_a(x) for every row, by summing every hidden-state path of the author's own (T, pi)."""
    t, pi = np.asarray(transitions, np.float64), np.asarray(initial, np.float64)
    return lambda seqs: hmm_sequence_probs(t, pi, np.asarray(seqs, np.int64))


def markov_author(kernel):
    """P_a(x) = (1/V) prod_t K[x_t, x_{t+1}] for a first-order chain with a uniform first token; 0 for
    any id >= V."""
    kernel = np.asarray(kernel, np.float64)
    vocab = kernel.shape[0]

    def probs(seqs):
        seqs = np.asarray(seqs, np.int64)
        n, length = seqs.shape
        if length == 0:
            return np.ones(n)
        ok = np.all(seqs < vocab, axis=1)
        safe = np.where(seqs < vocab, seqs, 0)
        out = np.full(n, 1.0 / vocab)
        for step in range(length - 1):
            out = out * kernel[safe[:, step], safe[:, step + 1]]
        return np.where(ok, out, 0.0)

    return probs


def markov_kernels(
    num_sources, authors_per_source, vocab_size, source_closeness, author_closeness, seed
):
    """The kernels [s][a] of hierarchical_markov_authors, from the draw order its docstring states."""
    rng = np.random.default_rng(seed)
    draw = lambda: rng.dirichlet(np.ones(vocab_size), size=vocab_size)  # noqa: E731
    common = draw()
    out = []
    for _ in range(num_sources):
        base = source_closeness * common + (1 - source_closeness) * draw()
        out.append(
            [
                author_closeness * base + (1 - author_closeness) * draw()
                for _ in range(authors_per_source)
            ]
        )
    return out


def flat_markov_kernels(num_authors, vocab_size, closeness, seed):
    """The kernels of markov_authors, from the draw order its docstring states."""
    rng = np.random.default_rng(seed)
    shared = rng.dirichlet(np.ones(vocab_size), size=vocab_size)
    return [
        closeness * shared + (1 - closeness) * rng.dirichlet(np.ones(vocab_size), size=vocab_size)
        for _ in range(num_authors)
    ]


def bayes(authors, prior, seqs, vocab_size: int) -> dict[str, np.ndarray]:
    """Exact Bayes for the mixture "draw a ~ prior, run author a", for every row of seqs [N, L]:

    author_prefix [K, N, L+1]     P_a(x<t)
    author_cond   [K, N, L+1, V]  P_a(v | x<t) (0 where P_a(x<t) = 0)
    prefix        [N, L+1]        P(x<t) = sum_a pi_a P_a(x<t)
    posterior     [N, L+1, K]     pi(a | x<t); after an impossible prefix, the last possible one
    conditionals  [N, L+1, V]     sum_a pi(a | x<t) P_a(v | x<t); 0 after an impossible prefix
    direct_cond   [N, L+1, V]     P(x<t v) / P(x<t), the same thing computed without the posterior
    """
    prior = np.asarray(prior, np.float64)
    seqs = np.asarray(seqs, np.int64)
    n, length = seqs.shape
    k = len(authors)
    author_prefix = np.zeros((k, n, length + 1))
    author_ext = np.zeros((k, n, length + 1, vocab_size))
    for t in range(length + 1):
        for a, probs in enumerate(authors):
            author_prefix[a, :, t] = probs(seqs[:, :t])
            for v in range(vocab_size):
                author_ext[a, :, t, v] = probs(
                    np.concatenate([seqs[:, :t], np.full((n, 1), v)], axis=1)
                )
    author_cond = np.divide(
        author_ext,
        author_prefix[..., None],
        out=np.zeros_like(author_ext),
        where=author_prefix[..., None] > 0,
    )
    joint = prior[:, None, None] * author_prefix
    prefix = joint.sum(axis=0)
    posterior = np.zeros((n, length + 1, k))
    posterior[:, 0] = prior
    for t in range(1, length + 1):
        alive = prefix[:, t] > 0
        posterior[:, t] = posterior[:, t - 1]
        posterior[alive, t] = (joint[:, alive, t] / prefix[alive, t]).T
    conditionals = np.einsum("ntk,kntv->ntv", posterior, author_cond) * (prefix > 0)[..., None]
    ext = np.einsum("k,kntv->ntv", prior, author_ext)
    direct = np.divide(ext, prefix[..., None], out=np.zeros_like(ext), where=prefix[..., None] > 0)
    return dict(
        author_prefix=author_prefix,
        author_cond=author_cond,
        prefix=prefix,
        posterior=posterior,
        conditionals=conditionals,
        direct_cond=direct,
    )


def map_choice(posterior: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """argmax over the last axis, ties (within rtol of the maximum) to the lowest index."""
    top = posterior.max(axis=-1, keepdims=True)
    return np.argmax(posterior >= top * (1 - rtol), axis=-1)


def map_author_reference(authors, prior, vocab_size: int, length: int) -> dict:
    """Everything C1(b) says about the MAP-author predictor at length n, by enumeration of V^n:

    map_cond [N, n, V]   the MAP author's conditional at every prefix of every sequence
    forward_kl           F_n = sum_x P(x) sum_t KL(p(.|x<t) || map(.|x<t)) (inf if MAP misses a token)
    max_diff             the largest |p(v|x<t) - map(v|x<t)| over P-supported prefixes x<t, t < n
    pinsker              sum over supported prefixes of P(x<t) * 2 TV(p, map)^2, a lower bound on F_n
    """
    seqs = all_sequences(vocab_size, length)
    ref = bayes(authors, prior, seqs, vocab_size)
    chosen = map_choice(ref["posterior"][:, :length])  # [N, n]
    map_cond = np.take_along_axis(
        np.moveaxis(ref["author_cond"][:, :, :length], 0, 2), chosen[..., None, None], axis=2
    )[:, :, 0]  # [N, n, V]
    bayes_cond = ref["conditionals"][:, :length]
    supported = ref["prefix"][:, :length] > 0
    diff = np.abs(bayes_cond - map_cond)
    max_diff = float(diff[supported].max()) if supported.any() else 0.0
    # Each prefix of length t is shared by V^(n-t) full sequences: weight by P(x_1..x_n) counts it once.
    weight = ref["prefix"][:, -1]
    kl_terms = np.zeros(supported.shape)
    for index in zip(*np.nonzero(supported)):
        p, q = bayes_cond[index], map_cond[index]
        pos = p > 0
        kl_terms[index] = (
            np.inf if np.any(q[pos] == 0) else np.sum(p[pos] * np.log(p[pos] / q[pos]))
        )
    with np.errstate(invalid="ignore"):
        forward = float(np.sum(np.where(weight[:, None] > 0, weight[:, None] * kl_terms, 0.0)))
    tv = 0.5 * diff.sum(axis=-1)
    pinsker = float(np.sum(np.where(supported, weight[:, None] * 2 * tv**2, 0.0)))
    return dict(
        map_cond=map_cond,
        forward_kl=forward,
        max_diff=max_diff,
        pinsker=pinsker,
        supported=supported,
    )
