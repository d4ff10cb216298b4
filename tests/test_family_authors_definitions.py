"""C1's latent-authors family: the Markov generators against their written definition, the registry,
deterministic corners, long sequences and bad inputs (the Bayes-mixture properties are in
test_family_authors.py). Every expected number comes from tests/brute_force_authors.py or a closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
from authors_cases import (
    GADGET,
    WITH_IMPOSSIBLE,
    S,
    V,
    build,
    pad,
)
from brute_force_authors import (
    bayes,
    flat_markov_kernels,
    markov_author,
    markov_kernels,
)
from hypothesis import given
from hypothesis import strategies as st
from log_checks import assert_log_matches
from strategies import random_hmm

from theory.divergence import forward_kl
from toymodels.processes import registry
from toymodels.processes.authors import (
    hierarchical_authors,
    hierarchical_markov_authors,
    latent_authors,
    map_author_predictor,
    markov_authors,
    single_author_predictor,
)
from toymodels.processes.hmm import HMMProcess

# --------------------------------------------------------------------------------------------------
# The Markov generators against their written definition
# --------------------------------------------------------------------------------------------------


@given(st.integers(0, 2**16), st.sampled_from([0.0, 0.3, 1.0]))
def test_markov_authors_match_their_definition(seed, closeness):
    """log_prob = log (1/3) sum_a P_a(x) with P_a the product of author a's kernel entries, the kernels
    drawn as the docstring states; closeness 1 gives identical authors (the posterior never moves)."""
    process = markov_authors(3, V, closeness, seed)
    kernels = flat_markov_kernels(3, V, closeness, seed)
    expected = np.full(3, 1 / 3) @ np.stack([markov_author(k)(WITH_IMPOSSIBLE) for k in kernels])
    assert_log_matches(process.log_prob(WITH_IMPOSSIBLE), expected)
    if closeness == 1.0:
        np.testing.assert_allclose(
            process.posterior(WITH_IMPOSSIBLE[:20], "author"), 1 / 3, atol=1e-12
        )


def test_hierarchical_markov_authors_match_their_definition():
    """Same for the hierarchy, with non-uniform priors."""
    source_prior, author_priors = np.array([0.3, 0.7]), [np.array([0.5, 0.5]), np.array([0.9, 0.1])]
    process = hierarchical_markov_authors(
        2, 2, V, 0.2, 0.8, 5, source_prior=source_prior, author_priors=author_priors
    )
    kernels = markov_kernels(2, 2, V, 0.2, 0.8, 5)
    weights = np.concatenate([source_prior[s] * author_priors[s] for s in range(2)])
    ref = bayes([markov_author(k) for src in kernels for k in src], weights, WITH_IMPOSSIBLE, V)
    assert_log_matches(process.log_prob(WITH_IMPOSSIBLE), ref["prefix"][:, -1])
    np.testing.assert_allclose(
        process.posterior(WITH_IMPOSSIBLE, "author"), ref["posterior"], atol=1e-12
    )


def test_names_label_the_authors():
    process = latent_authors(
        [HMMProcess(*GADGET), HMMProcess(*GADGET)], [0.5, 0.5], names=["zeros", "ones"]
    )
    assert process.latents["author"] == ("zeros", "ones")
    assert process.latents["state"] == ("zeros/s0", "zeros/s1", "ones/s0", "ones/s1")
    assert single_author_predictor(process, "ones").num_states == S


def test_author_priors_may_be_one_array():
    """Equal-sized sources may give their author priors as one [num_sources, A] array."""
    process = hierarchical_authors([_two(), _two()], [0.5, 0.5], np.array([[0.3, 0.7], [0.5, 0.5]]))
    assert process.info["authors_per_source"] == (2, 2)
    np.testing.assert_allclose(
        process.posterior(WITH_IMPOSSIBLE, "author")[0, 0], [0.15, 0.35, 0.25, 0.25]
    )


def test_registered_examples_are_small_and_exact():
    """The two number-only constructors are registered (and the object-taking ones are not)."""
    assert {"markov_authors", "hierarchical_markov_authors"} <= set(registry.families())
    assert not {"latent_authors", "hierarchical_authors"} & set(registry.families())
    for name in ("markov_authors", "hierarchical_markov_authors"):
        process = registry.make_process(name, **registry._EXAMPLES[name])
        assert process.num_states <= 30 and process.vocab_size <= 8
        assert process.info["family"] == name
        possible = np.all(WITH_IMPOSSIBLE < process.vocab_size, axis=1)
        total = np.exp(np.asarray(process.log_prob(WITH_IMPOSSIBLE)))[possible].sum()
        np.testing.assert_allclose(total, 1.0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Corners: deterministic authors, long sequences
# --------------------------------------------------------------------------------------------------


def test_deterministic_authors():
    """Author 0 always writes 0, author 1 always writes 1: after one token the posterior is one-hot;
    "0 1" is impossible (log_prob -inf, conditionals -inf after it, posterior frozen at author 0). The
    MAP predictor breaks the first tie towards author 0, so it gives the first token "1" probability 0
    (F_n = inf, off-support mass 1/2), and is exact afterwards (later chain terms 0)."""

    def always(v):
        t = np.zeros((V, S, S))
        t[v, :, 0] = 1.0
        return t, np.array([1.0, 0.0])

    process = build(*pad([always(0), always(1)], [0.5, 0.5]))
    # Three documents, padded with the shared batch so that compiled code is reused.
    tokens = np.concatenate([[[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0]], WITH_IMPOSSIBLE[3:]])
    np.testing.assert_array_equal(np.isneginf(process.log_prob(tokens))[:3], [False, False, True])
    post = np.asarray(process.posterior(tokens, "author"))[:3, :4]
    np.testing.assert_allclose(post[:, 0], [[0.5, 0.5, 0, 0]] * 3)
    np.testing.assert_allclose(post[0, 1:], [[1, 0, 0, 0]] * 3)
    np.testing.assert_allclose(post[2, 1:], [[1, 0, 0, 0]] * 3)  # frozen after the impossible "1"
    log_map = np.asarray(map_author_predictor(process).log_conditionals(tokens))[:3]
    assert np.all(np.isneginf(log_map[2, 2:])) and not np.any(np.isnan(log_map))
    np.testing.assert_allclose(np.exp(log_map[:, 0]), [[1, 0, 0]] * 3)  # the tie goes to author 0
    result = forward_kl(process, map_author_predictor(process), 3)
    assert np.isinf(result.per_position[0]) and result.off_support_fraction == 0.5
    np.testing.assert_allclose(result.per_position[1:], 0.0, atol=1e-12)


def sample_markov_mixture(kernels, num_sequences, length, rng):
    """Draw an author uniformly, a uniform first token, then its chain (plain NumPy)."""
    out = np.zeros((num_sequences, length), np.int64)
    for row in out:
        kernel = kernels[rng.integers(len(kernels))]
        row[0] = rng.integers(V)
        for t in range(1, length):
            row[t] = rng.choice(V, p=kernel[row[t - 1]])
    return out


def test_long_sequence_has_no_nan():
    """10^4 tokens from a hierarchy: log_prob equals log sum_a pi_a P_a(x) computed in log space from the
    kernels; posteriors are finite distributions; the MAP predictor's conditionals are finite at every
    observed token."""
    process = hierarchical_markov_authors(2, 2, V, 0.0, 0.9, seed=2)
    kernels = markov_kernels(2, 2, V, 0.0, 0.9, 2)
    tokens = sample_markov_mixture(
        [k for src in kernels for k in src], 2, 10_000, np.random.default_rng(5)
    )
    log_authors = np.array(
        [
            [np.log(1 / V) + np.log(k[row[:-1], row[1:]]).sum() for src in kernels for k in src]
            for row in tokens
        ]
    )
    expected = np.log(0.25) + np.logaddexp.reduce(log_authors, axis=1)
    np.testing.assert_allclose(process.log_prob(tokens), expected, rtol=1e-9)
    for latent in ("source", "author"):
        post = np.asarray(process.posterior(tokens, latent))
        assert np.all(np.isfinite(post)) and np.allclose(post.sum(-1), 1.0)
    log_map = np.asarray(map_author_predictor(process).log_conditionals(tokens))
    assert not np.any(np.isnan(log_map))
    assert np.all(np.isfinite(np.take_along_axis(log_map, tokens[..., None], -1)))


# --------------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------------


def _two():
    rng = np.random.default_rng(0)
    return [HMMProcess(*random_hmm(rng, V, S, "dense")) for _ in range(2)]


BAD = [
    ("authors", lambda: latent_authors([], [])),
    ("authors", lambda: latent_authors(_two()[0], [1.0])),
    ("authors", lambda: latent_authors([_two()[0], "writer"], [0.5, 0.5])),
    (
        "authors",
        lambda: latent_authors(
            [_two()[0], HMMProcess(*random_hmm(np.random.default_rng(1), 2, S, "dense"))],
            [0.5, 0.5],
        ),
    ),
    ("prior", lambda: latent_authors(_two(), [0.5, 0.6])),
    ("prior", lambda: latent_authors(_two(), [1.0])),
    ("prior", lambda: latent_authors(_two(), [1.5, -0.5])),
    ("prior", lambda: latent_authors(_two(), [[0.5, 0.5]])),
    ("names", lambda: latent_authors(_two(), [0.5, 0.5], names=["x", "x"])),
    ("sources", lambda: hierarchical_authors([], [], [])),
    ("sources", lambda: hierarchical_authors([_two(), []], [0.5, 0.5], [[0.5, 0.5], []])),
    ("source_prior", lambda: hierarchical_authors([_two()], [0.5], [[0.5, 0.5]])),
    ("author_priors", lambda: hierarchical_authors([_two()], [1.0], [[0.5, 0.5], [1.0]])),
    ("author_priors", lambda: hierarchical_authors([_two()], [1.0], [[0.2, 0.2]])),
    ("num_authors", lambda: markov_authors(0, V, 0.5, 0)),
    ("vocab_size", lambda: markov_authors(2, 1.5, 0.5, 0)),
    ("closeness", lambda: markov_authors(2, V, 1.1, 0)),
    ("closeness", lambda: markov_authors(2, V, float("nan"), 0)),
    ("seed", lambda: markov_authors(2, V, 0.5, -1)),
    ("seed", lambda: markov_authors(2, V, 0.5, None)),
    ("closeness", lambda: markov_authors(2, V, "close", 0)),
    ("num_authors", lambda: markov_authors(True, V, 0.5, 0)),
    ("prior", lambda: markov_authors(2, V, 0.5, 0, prior=[0.2, 0.2])),
    ("num_sources", lambda: hierarchical_markov_authors(0, 2, V, 0.5, 0.5, 0)),
    ("authors_per_source", lambda: hierarchical_markov_authors(2, 0, V, 0.5, 0.5, 0)),
    ("source_closeness", lambda: hierarchical_markov_authors(2, 2, V, -0.1, 0.5, 0)),
    ("author_closeness", lambda: hierarchical_markov_authors(2, 2, V, 0.5, 2.0, 0)),
    ("source_prior", lambda: hierarchical_markov_authors(2, 2, V, 0.5, 0.5, 0, source_prior=[1.0])),
    ("process", lambda: map_author_predictor("not a process")),
    ("latent", lambda: map_author_predictor(markov_authors(2, V, 0.5, 0), latent="writer")),
    ("tie_rtol", lambda: map_author_predictor(markov_authors(2, V, 0.5, 0), tie_rtol=1.0)),
    ("author", lambda: single_author_predictor(markov_authors(2, V, 0.5, 0), 2)),
    ("author", lambda: single_author_predictor(markov_authors(2, V, 0.5, 0), "nobody")),
    ("author", lambda: single_author_predictor(markov_authors(2, V, 0.5, 0, prior=[1.0, 0.0]), 1)),
    ("latent", lambda: single_author_predictor(markov_authors(2, V, 0.5, 0), 1, latent="state")),
    ("process", lambda: single_author_predictor(None, 0)),
]


@pytest.mark.parametrize("argument, call", BAD, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_arguments_raise(argument, call):
    with pytest.raises(ValueError, match=argument):
        call()


def test_single_source_extraction_keeps_its_authors():
    """single_author_predictor(latent="source") is that source's own mixture: its author posterior is the
    hierarchy's author posterior within the source, renormalised."""
    process = hierarchical_markov_authors(2, 2, V, 0.0, 0.9, seed=1)
    source = single_author_predictor(process, "s1", latent="source")
    assert source.latents["author"] == ("s1/a0", "s1/a1")
    kernels = markov_kernels(2, 2, V, 0.0, 0.9, 1)[1]
    ref = bayes([markov_author(k) for k in kernels], [0.5, 0.5], WITH_IMPOSSIBLE, V)
    np.testing.assert_allclose(
        source.posterior(WITH_IMPOSSIBLE, "author"), ref["posterior"], atol=1e-12
    )
    assert_log_matches(source.log_prob(WITH_IMPOSSIBLE), ref["prefix"][:, -1])
