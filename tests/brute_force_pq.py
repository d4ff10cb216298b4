"""Brute-force oracles for predictors and divergences (an extension of tests/brute_force.py).

A predictor is described here as a plain Python function `conditional(prefix) -> probabilities over W
tokens` (prefix a tuple of ints). Processes get theirs from path enumeration (`hmm_sequence_probs` in
brute_force.py); transforms get theirs from their definitions, written out in the tests. Divergences
are sums over every sequence of W^n. Nothing here imports the library.

Conventions of DESIGN.md, spelled out: after a prefix of probability zero a process gives probability
zero to every token (the library's -inf row); token ids >= V are impossible.
"""

from __future__ import annotations

import numpy as np

from brute_force import all_sequences, hmm_sequence_probs, kl, prefix_marginals, sequence_probs_from_conditionals


def hmm_conditional(transitions, initial, vocab_size: int | None = None):
    """prefix -> P(prefix + v) / P(prefix) for v < vocab_size (default V; ids >= V get 0), by path
    enumeration; all zeros after a prefix of probability 0. Memoised per prefix."""
    t = np.asarray(transitions, np.float64)
    pi = np.asarray(initial, np.float64)
    vocab = t.shape[0]
    width = vocab if vocab_size is None else int(vocab_size)
    cache: dict[tuple[int, ...], np.ndarray] = {}

    def conditional(prefix) -> np.ndarray:
        prefix = tuple(int(v) for v in prefix)
        if prefix not in cache:
            out = np.zeros(width)
            denominator = hmm_sequence_probs(t, pi, np.array([prefix], np.int64).reshape(1, len(prefix)))[0]
            if denominator > 0:
                extended = np.array([prefix + (v,) for v in range(min(vocab, width))], np.int64)
                out[: min(vocab, width)] = hmm_sequence_probs(t, pi, extended) / denominator
            cache[prefix] = out
        return cache[prefix]

    return conditional


def hmm_probs(transitions, initial, vocab_size: int, length: int) -> np.ndarray:
    """P(x) for every x in vocab_size^length (lexicographic; ids >= V have probability 0)."""
    return hmm_sequence_probs(transitions, initial, all_sequences(vocab_size, length))


def conditionals_table(conditional, tokens) -> np.ndarray:
    """[N, L, W]: conditional(tokens[b, :t]) for every row and position, in probability space."""
    tokens = np.asarray(tokens)
    return np.array([[conditional(tuple(row[:t])) for t in range(tokens.shape[1])] for row in tokens])


def chain_rule_terms(cond_a, cond_b, vocab_size: int, length: int) -> np.ndarray:
    """[L]: term t = sum over x<t in W^t of A(x<t) KL(a(.|x<t) || b(.|x<t)); prefixes with A = 0
    contribute nothing, a positive weight times an infinite KL gives inf."""
    terms = np.zeros(length)
    for t in range(length):
        # (brute_force.all_sequences cannot build the one empty sequence of length 0: special case)
        weights = sequence_probs_from_conditionals(cond_a, vocab_size, t) if t else np.ones(1)
        prefixes = all_sequences(vocab_size, t) if t else np.zeros((1, 0), np.int64)
        for weight, prefix in zip(weights, prefixes):
            if weight > 0:
                terms[t] += weight * kl(cond_a(tuple(prefix)), cond_b(tuple(prefix)))
    return terms


def off_support_mass(probs_a: np.ndarray, probs_b: np.ndarray) -> float:
    """A's mass on sequences B gives probability zero."""
    return float(np.sum(np.where(np.asarray(probs_b) == 0, probs_a, 0.0)))


def prefix_tv(probs_p: np.ndarray, probs_q: np.ndarray, vocab_size: int, length: int) -> np.ndarray:
    """[L]: entry t - 1 is the total variation between the length-t prefix marginals (t = 1..L)."""
    return np.array(
        [
            0.5 * np.sum(np.abs(prefix_marginals(probs_p, vocab_size, length, t) - prefix_marginals(probs_q, vocab_size, length, t)))
            for t in range(1, length + 1)
        ]
    )


def per_sequence_chain_totals(cond_a, cond_b, vocab_size: int, length: int) -> np.ndarray:
    """[W^L]: Z(x) = sum_t KL(a(.|x<t) || b(.|x<t)) for every x (the Monte Carlo chain-rule estimator's
    per-sample value; inf where a term is infinite). Only meaningful where A(x) > 0."""
    out = np.zeros(vocab_size**length)
    for index, x in enumerate(all_sequences(vocab_size, length)):
        out[index] = sum(kl(cond_a(tuple(x[:t])), cond_b(tuple(x[:t]))) for t in range(length))
    return out


# --------------------------------------------------------------------------------------------------
# The transforms of toymodels/predictors.py by their definitions, as conditional functions
# --------------------------------------------------------------------------------------------------


def tempered_log_definition(cond_q, tau):
    """prefix -> log of q^(1/tau) / sum_v q(v)^(1/tau), computed in log space; a zero row stays -inf."""

    def log_cond(prefix):
        with np.errstate(divide="ignore"):
            scaled = np.log(cond_q(prefix)) / tau
        top = scaled.max()
        if not np.isfinite(top):
            return np.full_like(scaled, -np.inf)
        return scaled - top - np.log(np.sum(np.exp(scaled - top)))

    return log_cond


def tempered_definition(cond_q, tau):
    """prefix -> q^(1/tau) renormalised (probabilities; a zero row stays zero)."""
    log_cond = tempered_log_definition(cond_q, tau)
    return lambda prefix: np.exp(log_cond(prefix))


def sticky_definition(cond_q, eps, vocab):
    """C2's marker g = vocab. Before g: q'(g) = eps, q'(v) = (1 - eps) q(v); after g: q'(g) = 1."""

    def cond(prefix):
        out = np.zeros(vocab + 1)
        if vocab in prefix:
            out[vocab] = 1.0
        else:
            out[:vocab] = (1.0 - eps) * cond_q(prefix)
            out[vocab] = eps
        return out

    return cond


def override_definition(p_arrays, cond_q, cond_r):
    """q on prefixes with P(prefix) > 0 (P by path enumeration of the arrays of p), r on all others."""

    def cond(prefix):
        prob = hmm_sequence_probs(*p_arrays, np.array([prefix], np.int64).reshape(1, len(prefix)))[0]
        return cond_q(prefix) if prob > 0 else cond_r(prefix)

    return cond
