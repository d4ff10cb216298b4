"""C1's latent authors: a document is written by one author drawn from a prior, and prediction is the
posterior mixture over authors.

- `latent_authors(authors, prior)`: K finite-state authors (HMMProcesses over one vocabulary), prior pi.
  Draw a ~ pi, then run author a. As one HMM the transition tensor is block-diagonal over the union of
  the authors' states and the initial distribution is concat_a(pi_a * initial_a), so the belief over
  states, pushed through "which block", is the exact posterior pi(a | x<t) proportional to
  pi_a p_a(x<t), and the next-token conditional is sum_a pi(a | x<t) p_a(x_t | x<t).
- `hierarchical_authors(sources, source_prior, author_priors)`: sources (publications), each with its
  own authors: draw s ~ source_prior, a ~ author_priors[s], run author (s, a). Latents "source" and
  "author" (a global index labelled "s<s>/a<a>"), both exact.
- `markov_authors`, `hierarchical_markov_authors`: random first-order Markov authors whose closeness is
  set by one number per level (the "90% sure it is that newspaper, no idea which writer" picture).
- Analytic predictors for C1(b): `single_author_predictor` (commit to one author for the whole
  document) and `map_author_predictor` (follow the currently most probable author).

Authors never stop: documents here have no end-of-document token, every author is defined at every
length (so is the mixture).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from toymodels.predictors import PytreeNode, check_probability, check_tokens
from toymodels.processes._validation import (
    as_probabilities,
    check_sums_to_one,
    device_dtype,
    sum_tolerance,
)
from toymodels.precision import einsum, matmul
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import register_family
from toymodels.processes.standard import markov_chain

# --------------------------------------------------------------------------------------------------
# Boundary checks
# --------------------------------------------------------------------------------------------------


def _check_authors(authors, name: str) -> list[HMMProcess]:
    if isinstance(authors, HMMProcess) or not isinstance(authors, Sequence) or len(authors) == 0:
        raise ValueError(
            f"{name} must be a non-empty list of HMMProcess authors, got {type(authors).__name__}"
        )
    authors = list(authors)
    for index, author in enumerate(authors):
        if not isinstance(author, HMMProcess):
            raise ValueError(
                f"{name}[{index}] must be an HMMProcess (a finite-state author), got {type(author).__name__}"
            )
    vocab_sizes = sorted({author.vocab_size for author in authors})
    if len(vocab_sizes) > 1:
        raise ValueError(
            f"{name} must share one vocabulary, got vocab sizes {vocab_sizes}; pad the smaller ones"
        )
    return authors


def _check_prior(prior, size: int, name: str, what: str) -> np.ndarray:
    prior = as_probabilities(prior, name, ndim=1)
    if prior.shape != (size,):
        raise ValueError(
            f"{name} must have shape [{size}] (one weight per {what}), got {prior.shape}"
        )
    check_sums_to_one(
        np.asarray([prior.sum()]),
        name,
        f"the prior over {what}s",
        device_dtype(prior.astype(np.float64)),
    )
    return prior.astype(np.float64)


def _check_int(value, name: str, low: int = 1) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= low
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_closeness(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    return check_probability(value, name, open_interval=False)


# --------------------------------------------------------------------------------------------------
# The block HMM
# --------------------------------------------------------------------------------------------------


def _block_mixture(authors, weights, latent_values: dict, author_labels, info) -> HMMProcess:
    """The HMM of "draw author a with weights[a], then run it": block-diagonal T, initial
    concat(weights[a] * initial_a). latent_values maps a latent name to (labels, value of each author)."""
    blocks = [np.asarray(author.transitions, np.float64) for author in authors]
    sizes = [block.shape[1] for block in blocks]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    vocab, total = blocks[0].shape[0], int(starts[-1])
    transitions = np.zeros((vocab, total, total))
    initial = np.zeros(total)
    owner = np.repeat(np.arange(len(authors)), sizes)  # author of each state
    for a, (block, author) in enumerate(zip(blocks, authors)):
        here = slice(starts[a], starts[a + 1])
        transitions[:, here, here] = block
        initial[here] = weights[a] * np.asarray(author.initial, np.float64)
    latents = {
        name: (labels, np.asarray(of_author)[owner])
        for name, (labels, of_author) in latent_values.items()
    }
    state_labels = [f"{author_labels[a]}/s{i}" for a, size in enumerate(sizes) for i in range(size)]
    latents["state"] = (state_labels, np.arange(total))
    return HMMProcess(transitions, initial, latents=latents, info=info)


def latent_authors(
    authors: Sequence[HMMProcess], prior, names: Sequence[str] | None = None
) -> HMMProcess:
    """C1's mixture of K authors: draw a ~ prior, then run author a.

    Args:
        authors: K HMMProcesses over one vocabulary.
        prior: pi, shape [K], a distribution (zeros allowed: such an author never writes).
        names: optional labels of the authors (default "author0", "author1", ...).

    Latents: "author" (which author writes, constant along a document) and "state" (the hidden state of
    the union, labelled "<author>/s<i>"). info: family, num_authors.
    """
    authors = _check_authors(authors, "authors")
    prior = _check_prior(prior, len(authors), "prior", "author")
    labels = _labels(names, len(authors), "names", "author")
    return _block_mixture(
        authors,
        prior,
        {"author": (labels, np.arange(len(authors)))},
        labels,
        info={"family": "latent_authors", "num_authors": len(authors)},
    )


def _labels(names, count: int, name: str, stem: str) -> list[str]:
    if names is None:
        return [f"{stem}{i}" for i in range(count)]
    names = [str(x) for x in names]
    if len(names) != count or len(set(names)) != count:
        raise ValueError(f"{name} must give {count} distinct labels, got {names}")
    return names


def hierarchical_authors(
    sources: Sequence[Sequence[HMMProcess]], source_prior, author_priors
) -> HMMProcess:
    """C1's hierarchy: draw a source s ~ source_prior, an author a ~ author_priors[s], run author (s, a).

    Args:
        sources: one non-empty list of HMMProcess authors per source, all over one vocabulary.
        source_prior: shape [num_sources], a distribution.
        author_priors: one distribution per source, of length len(sources[s]).

    Latents: "source" (labels "s0", "s1", ...), "author" (a global index over every author of every
    source, labels "s<s>/a<a>"), "state". The posterior over a source is the sum of the posteriors over
    its authors. info: family, num_sources, num_authors, authors_per_source (a tuple).
    """
    return _hierarchy(sources, source_prior, author_priors, family="hierarchical_authors")


def _hierarchy(sources, source_prior, author_priors, family: str) -> HMMProcess:
    if not isinstance(sources, Sequence) or len(sources) == 0 or isinstance(sources, HMMProcess):
        raise ValueError(
            f"sources must be a non-empty list of lists of HMMProcess authors, got {type(sources).__name__}"
        )
    per_source = [_check_authors(authors, f"sources[{s}]") for s, authors in enumerate(sources)]
    flat = _check_authors([a for authors in per_source for a in authors], "sources")
    source_prior = _check_prior(source_prior, len(per_source), "source_prior", "source")
    if isinstance(author_priors, np.ndarray) and author_priors.ndim == 2:
        author_priors = list(author_priors)  # equal-sized sources: one [num_sources, A] array
    if not isinstance(author_priors, Sequence) or len(author_priors) != len(per_source):
        raise ValueError(
            f"author_priors must be a list of {len(per_source)} distributions, one per source"
        )
    weights, source_of, labels = [], [], []
    for s, authors in enumerate(per_source):
        within = _check_prior(
            author_priors[s], len(authors), f"author_priors[{s}]", f"author of source {s}"
        )
        weights.extend(source_prior[s] * within)
        source_of.extend([s] * len(authors))
        labels.extend(f"s{s}/a{a}" for a in range(len(authors)))
    return _block_mixture(
        flat,
        np.asarray(weights),
        {
            "source": ([f"s{s}" for s in range(len(per_source))], np.asarray(source_of)),
            "author": (labels, np.arange(len(flat))),
        },
        labels,
        info={
            "family": family,
            "num_sources": len(per_source),
            "num_authors": len(flat),
            "authors_per_source": tuple(len(authors) for authors in per_source),
        },
    )


# --------------------------------------------------------------------------------------------------
# Random Markov authors with controlled closeness
# --------------------------------------------------------------------------------------------------


def _dirichlet_rows(rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    return rng.dirichlet(np.ones(vocab_size), size=vocab_size)


@register_family("markov_authors", example=dict(num_authors=3, vocab_size=3, closeness=0.5, seed=0))
def markov_authors(
    num_authors: int, vocab_size: int, closeness: float, seed: int, prior=None
) -> HMMProcess:
    """K first-order Markov authors that share a fraction `closeness` of their kernel.

    With rng = numpy.random.default_rng(seed), draw `shared` (V x V, rows ~ Dirichlet(1)), then own_0,
    own_1, ... in order; author a's kernel is closeness * shared + (1 - closeness) * own_a, and its first
    token is uniform. closeness = 1 makes the authors identical, 0 independent. prior: default uniform.
    Latents "author" and "state" as in `latent_authors`.
    """
    num_authors = _check_int(num_authors, "num_authors")
    vocab_size = _check_int(vocab_size, "vocab_size")
    closeness = _check_closeness(closeness, "closeness")
    rng = np.random.default_rng(_check_int(seed, "seed", low=0))
    shared = _dirichlet_rows(rng, vocab_size)
    kernels = [
        closeness * shared + (1 - closeness) * _dirichlet_rows(rng, vocab_size)
        for _ in range(num_authors)
    ]
    prior = (
        np.full(num_authors, 1 / num_authors)
        if prior is None
        else _check_prior(prior, num_authors, "prior", "author")
    )
    labels = _labels(None, num_authors, "names", "author")
    return _block_mixture(
        [markov_chain(kernel) for kernel in kernels],
        prior,
        {"author": (labels, np.arange(num_authors))},
        labels,
        info={"family": "markov_authors", "num_authors": num_authors},
    )


@register_family(
    "hierarchical_markov_authors",
    example=dict(
        num_sources=2,
        authors_per_source=2,
        vocab_size=3,
        source_closeness=0.0,
        author_closeness=0.9,
        seed=0,
    ),
)
def hierarchical_markov_authors(
    num_sources: int,
    authors_per_source: int,
    vocab_size: int,
    source_closeness: float,
    author_closeness: float,
    seed: int,
    source_prior=None,
    author_priors=None,
) -> HMMProcess:
    """Sources of first-order Markov authors, close within a source and (optionally) far across.

    With rng = numpy.random.default_rng(seed), draw `global` (V x V, rows ~ Dirichlet(1)); then for each
    source s in order: source_own_s, then author_own_{s,a} for each of its authors in order. Source s's
    base kernel is source_closeness * global + (1 - source_closeness) * source_own_s; author (s, a)'s
    kernel is author_closeness * base_s + (1 - author_closeness) * author_own_{s,a}; first tokens are
    uniform. Priors default to uniform. Latents "source", "author" ("s<s>/a<a>") and "state".
    """
    num_sources = _check_int(num_sources, "num_sources")
    authors_per_source = _check_int(authors_per_source, "authors_per_source")
    vocab_size = _check_int(vocab_size, "vocab_size")
    source_closeness = _check_closeness(source_closeness, "source_closeness")
    author_closeness = _check_closeness(author_closeness, "author_closeness")
    rng = np.random.default_rng(_check_int(seed, "seed", low=0))
    common = _dirichlet_rows(rng, vocab_size)
    sources = []
    for _ in range(num_sources):
        base = source_closeness * common + (1 - source_closeness) * _dirichlet_rows(rng, vocab_size)
        kernels = [
            author_closeness * base + (1 - author_closeness) * _dirichlet_rows(rng, vocab_size)
            for _ in range(authors_per_source)
        ]
        sources.append([markov_chain(kernel) for kernel in kernels])
    if source_prior is None:
        source_prior = np.full(num_sources, 1 / num_sources)
    if author_priors is None:
        author_priors = [np.full(authors_per_source, 1 / authors_per_source)] * num_sources
    return _hierarchy(sources, source_prior, author_priors, family="hierarchical_markov_authors")


def _latent_arrays(process: HMMProcess) -> dict:
    """The process's latents as {name: (labels, int value of each state)}."""
    return {
        name: (labels, np.asarray(np.argmax(np.asarray(mapping), axis=1)))
        for name, labels, mapping in zip(
            process.latent_names, process.latent_labels, process.latent_maps
        )
    }


# --------------------------------------------------------------------------------------------------
# C1(b)'s analytic predictors
# --------------------------------------------------------------------------------------------------


def _check_mixture(process, latent: str) -> np.ndarray:
    """The int value of `latent` at each state of `process`."""
    if not isinstance(process, HMMProcess):
        raise ValueError(
            f"process must be an HMMProcess (e.g. from latent_authors), got {type(process).__name__}"
        )
    if latent not in process.latent_names:
        raise ValueError(f"latent must be one of {process.latent_names}, got {latent!r}")
    return _latent_arrays(process)[latent][1]


def single_author_predictor(
    process: HMMProcess, author: int | str, latent: str = "author"
) -> HMMProcess:
    """The predictor that commits to one author: author a's own process p_a, extracted from the mixture.

    `author` is an index or a label of `latent`. For latent="source" of a hierarchical mixture it is that
    source's own mixture of authors. The latent must never change along a path (no transition leaves or
    enters its block), and the chosen value needs positive prior weight (its start distribution is
    stored only as pi_a * initial_a). The other latents are kept, restricted to the block.
    """
    of_state = _check_mixture(process, latent)
    labels = process.latents[latent]
    if isinstance(author, str):
        if author not in labels:
            raise ValueError(
                f"author must be an index or one of the labels {labels}, got {author!r}"
            )
        author = labels.index(author)
    if isinstance(author, bool) or int(author) != author or not 0 <= author < len(labels):
        raise ValueError(
            f"author must be an index in [0, {len(labels)}) or a label, got {author!r}"
        )
    inside = of_state == int(author)
    transitions = np.asarray(process.transitions, np.float64)
    if np.any(transitions[:, inside][:, :, ~inside]) or np.any(
        transitions[:, ~inside][:, :, inside]
    ):
        raise ValueError(
            f"latent {latent!r} changes along some path; only a constant latent (author, source) has a sub-process"
        )
    initial = np.asarray(process.initial, np.float64)[inside]
    mass = initial.sum()
    if mass == 0:
        raise ValueError(
            f"author {labels[int(author)]!r} has prior probability 0, so its start distribution is not stored"
        )
    latents = {}
    for name, (value_labels, values) in _latent_arrays(process).items():
        if name == latent:
            continue
        kept, values = np.unique(values[inside], return_inverse=True)
        latents[name] = ([value_labels[k] for k in kept], values.reshape(-1))
    if "state" in latents:
        # Labels are static jit metadata: plain state labels let every author of one size share the
        # compiled code of the divergences.
        latents["state"] = ([f"s{i}" for i in range(int(inside.sum()))], latents["state"][1])
    return HMMProcess(
        transitions[:, inside][:, :, inside],
        initial / mass,
        latents=latents,
        info={"family": "single_author"},
    )


class MAPLatentPredictor(PytreeNode):
    """q(x_t | x<t) = p(x_t | x<t, z = z*) where z* is the currently most probable value of a latent z
    (argmax of the exact posterior pi(z | x<t); ties, up to a relative `tie_rtol`, go to the lowest
    index). For the "author" of a mixture this follows the MAP author's own conditional p_{a*}(x_t | x<t).

    One filter of the mixture gives everything: its belief restricted to the block of z* and
    renormalised is the belief of z*'s own process, because the blocks never mix. After a prefix the
    mixture cannot produce, every conditional is -inf (like the process itself).
    """

    _data_fields = ("process", "latent_map", "emissions")
    _static_fields = ("tie_rtol",)

    def __init__(self, process: HMMProcess, latent: str = "author", tie_rtol: float | None = None):
        _check_mixture(process, latent)
        self.process = process
        self.latent_map = process.latent_maps[process.latent_names.index(latent)]  # [S, K] one-hot
        # P(next token v | state i) = sum_j T[v, i, j], for every structure of the HMM.
        self.emissions = jnp.sum(process.transitions, axis=2).T  # [S, V]
        if tie_rtol is None:
            tie_rtol = sum_tolerance(process.transitions.dtype)
        if not (np.isfinite(tie_rtol) and 0 <= tie_rtol < 1):
            raise ValueError(f"tie_rtol must lie in [0, 1), got {tie_rtol}")
        self.tie_rtol = float(tie_rtol)

    @property
    def vocab_size(self) -> int:
        return self.process.vocab_size

    max_length = None

    def _log_next(self, belief: Float[Array, "... S"], alive) -> Float[Array, "... V"]:
        posterior = matmul(belief, self.latent_map)
        top = jnp.max(posterior, axis=-1, keepdims=True)
        chosen = jnp.argmax(posterior >= top * (1 - self.tie_rtol), axis=-1)  # first of the tied
        restricted = matmul(belief * self.latent_map.T[chosen], self.emissions)
        total = jnp.sum(restricted, axis=-1, keepdims=True)
        probs = restricted / jnp.where(total > 0, total, 1.0)
        return jnp.where(alive[..., None] & (total > 0), jnp.log(probs), -jnp.inf)

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        return _map_log_conditionals(self, check_tokens(tokens))

    def _log_conditionals(self, tokens):
        before = self.process.belief_states(tokens)[:, :-1]  # belief given x<t, for t = 0..L-1
        # x_t is possible given x<t iff the mixture gives it positive probability; the frozen belief after
        # an impossible token is the last possible one, so the cumulative test below is exact.
        safe = jnp.clip(tokens, 0, self.vocab_size - 1)
        step = jnp.take_along_axis(matmul(before, self.emissions), safe[..., None], axis=-1)[..., 0]
        impossible = ((step <= 0) | (tokens >= self.vocab_size)).astype(jnp.int32)
        alive = (jnp.cumsum(impossible, axis=-1) - impossible) == 0
        return self._log_next(before, alive)

    def init_state(self, batch: int):
        belief = jnp.broadcast_to(self.process.initial, (batch, self.process.num_states))
        alive = jnp.ones((batch,), bool)
        return (belief, alive), self._log_next(belief, alive)

    def step(self, state, token: Int[Array, " B"]):
        belief, alive = state
        in_vocab = token < self.vocab_size
        moved = einsum(
            "bi,bij->bj", belief, self.process.transitions[jnp.where(in_vocab, token, 0)]
        )
        mass = jnp.where(in_vocab, jnp.sum(moved, axis=-1), 0.0)
        alive = alive & (mass > 0)
        belief = jnp.where(alive[:, None], moved / jnp.where(alive, mass, 1.0)[:, None], belief)
        return (belief, alive), self._log_next(belief, alive)


@jax.jit
def _map_log_conditionals(predictor: MAPLatentPredictor, tokens):
    return predictor._log_conditionals(tokens)


def map_author_predictor(
    process: HMMProcess, latent: str = "author", tie_rtol: float | None = None
) -> MAPLatentPredictor:
    """C1(b)'s MAP-author predictor: at each prefix, the conditional of the most probable author.

    tie_rtol: posteriors within this relative distance of the maximum count as tied (default: the
    rounding tolerance of the process's dtype, 1e-9 in float64, 1e-5 in float32), so that exact ties
    (e.g. a uniform prior before the first informative token) go to the lowest index, not to rounding.
    """
    return MAPLatentPredictor(process, latent, tie_rtol)
