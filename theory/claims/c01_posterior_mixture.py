"""C1: a predictor of text written by many authors is a posterior mixture over them (seed essay 001).

The claim in our words: when a document is produced by first drawing a hidden author a ~ pi and then
running that author, the best next-token predictor does not pick an author and imitate it; it averages
every author's next-token distribution, each weighted by how well that author explains the text so far.
Committing to one author (for the whole document, or to whichever is currently most probable) costs
prediction loss, while sampling from the averaged predictor token by token reproduces the two-stage
"draw an author, then run it" process exactly. With a hierarchy of sources (publications) whose
authors differ only slightly, the posterior over the source sharpens long before the posterior over
the author within it.

Exact quantities, for a mixture built by `toymodels.processes.authors` (latent_authors,
hierarchical_authors, markov_authors, hierarchical_markov_authors):

(a) `author_mixture_conditionals`: sum_a pi(a | x<t) p_a(x_t | x<t), with pi(a | x<t) the process's
    posterior and p_a author a's own conditionals (its sub-process, `single_author_predictor`). The
    claim is that this equals the process's own conditional p(x_t | x<t) on every possible prefix.
(b) `commitment_costs`: F_t = KL(P_t || Q_t) for t = 1..n for each committed author Q = P_a and for
    the MAP-author predictor. F_n(P) = 0 for the mixture itself; F_n(P_a) > 0 iff P_a,n != P_n; the
    MAP author has F_n > 0 iff it disagrees with the Bayes conditional on some possible prefix of length
    < n.
(c) `ancestral_distribution` (prod_t p(x_t | x<t): autoregressive sampling from the Bayes conditionals)
    and `draw_then_run_distribution` (sum_a pi_a P_a(x)): the claim is that they are equal on V^n.
(d) `expected_posterior_entropies`: E_{x ~ P} H(latent | x_<=t) for t = 0..n for each named latent,
    and `expected_within_entropy` for the author within its source, E H(author | source, x_<=t)
    = E H(author | x_<=t) - E H(source | x_<=t) (the source is a function of the author). Both never
    increase with t (conditioning on more text cannot raise expected entropy).

Everything is exact: expectations are sums over all of V^n weighted by the process's own
probabilities, so keep V^n small (a few thousand sequences).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory.claims.enumeration import all_sequences
from theory.divergence import forward_kl
from toymodels.predictors import check_tokens, sequence_log_prob
from toymodels.processes.authors import map_author_predictor, single_author_predictor
from toymodels.processes.hmm import HMMProcess

def _check_mixture(process, latent: str) -> list[int]:
    """The values of `latent` that have positive prior weight (the authors that can write)."""
    if not isinstance(process, HMMProcess):
        raise ValueError(
            f"process must be an HMMProcess author mixture (e.g. latent_authors), got {type(process).__name__}"
        )
    if latent not in process.latent_names:
        raise ValueError(f"latent must be one of {process.latent_names}, got {latent!r}")
    return [int(a) for a in np.flatnonzero(_prior(process, latent) > 0)]


def _prior(process: HMMProcess, latent: str) -> np.ndarray:
    """pi over the values of `latent`: the initial state distribution pushed through its map."""
    index = process.latent_names.index(latent)
    return np.asarray(process.initial, np.float64) @ np.asarray(process.latent_maps[index], np.float64)


def author_mixture_conditionals(process: HMMProcess, tokens, latent: str = "author") -> np.ndarray:
    """[B, L, V]: sum_a pi(a | x<t) p_a(v | x<t), the right-hand side of C1(a), in probability space.

    pi(a | x<t) is the process's posterior over `latent`; p_a is the conditional of a's own sub-process.
    Authors of prior weight 0 are left out (their posterior is 0 at every prefix). Meaningful on the
    possible prefixes; after an impossible one it is whatever the frozen posterior mixes.
    """
    tokens = check_tokens(tokens)
    writers = _check_mixture(process, latent)
    posterior = np.asarray(process.posterior(tokens, latent), np.float64)[:, :-1]  # given x<t
    out = np.zeros(tokens.shape + (process.vocab_size,))
    for a in writers:
        own = np.exp(np.asarray(single_author_predictor(process, a, latent).log_conditionals(tokens), np.float64))
        out += posterior[:, :, a, None] * own
    return out


@dataclasses.dataclass(frozen=True)
class CommitmentCosts:
    """Forward KL F_t = KL(P_t || Q_t), t = 1..n, for predictors that commit to one author.

    single[a] is the curve for the predictor that is author a for the whole document (NaN rows for
    authors of prior 0, which cannot be extracted); map_author the curve of the MAP-author predictor.
    """

    single: np.ndarray  # [K, n]
    map_author: np.ndarray  # [n]


def commitment_costs(process: HMMProcess, length: int, latent: str = "author") -> CommitmentCosts:
    """C1(b): the prediction-loss cost of simulating one author instead of mixing, by enumeration."""
    writers = _check_mixture(process, latent)
    labels = process.latents[latent]
    single = np.full((len(labels), int(length)), np.nan)
    for a in writers:
        committed = single_author_predictor(process, a, latent)
        single[a] = np.cumsum(forward_kl(process, committed, length).per_position)
    map_curve = np.cumsum(forward_kl(process, map_author_predictor(process, latent), length).per_position)
    return CommitmentCosts(single=single, map_author=map_curve)


def ancestral_distribution(process, length: int) -> np.ndarray:
    """[V^n]: prod_t p(x_t | x<t) from the Bayes conditionals, i.e. the distribution of sampling the
    mixture's next-token predictor autoregressively (lexicographic order)."""
    seqs = all_sequences(process.vocab_size, length)
    return np.exp(np.asarray(sequence_log_prob(process, seqs), np.float64))


def draw_then_run_distribution(process: HMMProcess, length: int, latent: str = "author") -> np.ndarray:
    """[V^n]: sum_a pi_a P_a(x), the distribution of "draw an author, then run only that author"."""
    writers = _check_mixture(process, latent)
    prior = _prior(process, latent)
    seqs = all_sequences(process.vocab_size, length)
    out = np.zeros(len(seqs))
    for a in writers:
        author = single_author_predictor(process, a, latent)
        out += prior[a] * np.exp(np.asarray(author.log_prob(seqs), np.float64))
    return out


def _entropy(probs: np.ndarray) -> np.ndarray:
    safe = np.where(probs > 0, probs, 1.0)
    return -np.sum(np.where(probs > 0, probs * np.log(safe), 0.0), axis=-1)


def expected_posterior_entropies(process, length: int, latents=("source", "author")) -> dict[str, np.ndarray]:
    """{latent: [n + 1]} with entry t = E_{x ~ P} H(latent | x_<=t) in nats (entry 0 is the prior's).

    One enumeration of V^n serves every t: the expectation over length-t prefixes equals the expectation
    over full sequences of a function of their first t tokens.
    """
    seqs = all_sequences(process.vocab_size, length)
    weight = np.exp(np.asarray(process.log_prob(seqs), np.float64))
    return {
        name: weight @ _entropy(np.asarray(process.posterior(seqs, name), np.float64))
        for name in latents
    }


def expected_within_entropy(process, length: int) -> np.ndarray:
    """[n + 1]: E H(author | source, x_<=t) = E H(author | x_<=t) - E H(source | x_<=t) for a
    hierarchical mixture (the author determines the source)."""
    curves = expected_posterior_entropies(process, length, ("source", "author"))
    return curves["author"] - curves["source"]
