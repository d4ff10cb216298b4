"""C1's latent-authors family (toymodels/processes/authors.py) against brute-force Bayes.

Every expected number comes from tests/brute_force_authors.py: each author's sequence probabilities by
path enumeration of its own T (or, for Markov authors, the product of kernel entries of the family's
written definition), then Bayes' rule by hand. Nothing expected is computed by the library.

Shapes are few so jit caches stay small (each new shape or HMM structure is a new compilation): random
authors are V = 3, S = 2 HMMs, and every random mixture is padded to K = 4 authors with zero-prior copies
of a fixed gadget author that factorises neither way, so all of them share one shape and the general
filtering structure whatever the styles of the real authors (tests/authors_cases.py). Hierarchies are
2 sources x 2 authors. The Markov generators' definitions, corners and bad inputs are in
test_family_authors_definitions.py.
"""

from __future__ import annotations

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from authors_cases import (
    GENERAL_STYLES,
    STYLES,
    WITH_IMPOSSIBLE,
    L,
    S,
    V,
    author_arrays,
    build,
    oracles,
    pad,
)
from brute_force_authors import (
    bayes,
    flat_markov_kernels,
    hmm_author,
    map_author_reference,
    markov_author,
    markov_kernels,
)
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from log_checks import assert_log_matches
from strategies import random_hmm

from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import prefix_log_probs
from toymodels.processes.authors import (
    hierarchical_authors,
    hierarchical_markov_authors,
    map_author_predictor,
    markov_authors,
    single_author_predictor,
)
from toymodels.processes.hmm import HMMProcess
from toymodels.sampling import generate

# --------------------------------------------------------------------------------------------------
# C1(a): the Bayes mixture
# --------------------------------------------------------------------------------------------------


@given(author_arrays())
def test_flat_posterior_and_conditionals_are_bayes(case):
    """pi(a | x<t) = pi_a P_a(x<t) / sum_b pi_b P_b(x<t) and p(v | x<t) = sum_a pi(a | x<t) P_a(v | x<t),
    for every sequence over ids 0..V (id V impossible): conditionals -inf and the posterior frozen after
    an impossible prefix, log_prob = log sum_a pi_a P_a(x)."""
    arrays, prior = case
    process = build(arrays, prior)
    ref = bayes(oracles(arrays), prior, WITH_IMPOSSIBLE, V)
    np.testing.assert_allclose(
        ref["conditionals"], ref["direct_cond"], atol=1e-12
    )  # the identity itself
    posterior = np.asarray(process.posterior(WITH_IMPOSSIBLE, "author"))
    np.testing.assert_allclose(posterior, ref["posterior"], rtol=0, atol=1e-12)
    assert_log_matches(process.log_conditionals(WITH_IMPOSSIBLE), ref["conditionals"][:, :L])
    assert_log_matches(process.log_prob(WITH_IMPOSSIBLE), ref["prefix"][:, -1])
    # "state" is kept too: its posterior pushed through the block map is the author posterior.
    states = np.asarray(process.posterior(WITH_IMPOSSIBLE, "state"))
    np.testing.assert_allclose(
        states.reshape(*states.shape[:2], len(arrays), S).sum(-1), ref["posterior"], atol=1e-12
    )


@st.composite
def hierarchy_arrays(draw):
    """2 sources x 2 authors of random (V, S) HMMs, random source and author priors."""
    sources = [
        [
            random_hmm(
                np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
                V,
                S,
                draw(st.sampled_from(STYLES)),
            )
            for _ in range(2)
        ]
        for _ in range(2)
    ]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return sources, rng.dirichlet(np.ones(2)), [rng.dirichlet(np.ones(2)) for _ in range(2)]


@given(hierarchy_arrays())
def test_hierarchical_posteriors_are_bayes(case):
    """The mixture over all four (source, author) pairs with weights source_prior[s] * author_prior[s][a]:
    the posterior over "author" is Bayes, the posterior over "source" is Bayes too and equals the sum of
    its authors' posteriors, and the conditionals are the posterior mixture."""
    sources, source_prior, author_priors = case
    process = hierarchical_authors(
        [[HMMProcess(t, pi) for t, pi in src] for src in sources], source_prior, author_priors
    )
    weights = np.concatenate([source_prior[s] * author_priors[s] for s in range(2)])
    ref = bayes(
        [hmm_author(t, pi) for src in sources for t, pi in src], weights, WITH_IMPOSSIBLE, V
    )
    authors = np.asarray(process.posterior(WITH_IMPOSSIBLE, "author"))
    sources_post = np.asarray(process.posterior(WITH_IMPOSSIBLE, "source"))
    np.testing.assert_allclose(authors, ref["posterior"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        sources_post, ref["posterior"].reshape(-1, L + 1, 2, 2).sum(-1), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        sources_post, authors.reshape(-1, L + 1, 2, 2).sum(-1), rtol=0, atol=1e-12
    )
    assert_log_matches(process.log_conditionals(WITH_IMPOSSIBLE), ref["conditionals"][:, :L])
    assert process.latents["author"] == ("s0/a0", "s0/a1", "s1/a0", "s1/a1")
    assert process.latents["source"] == ("s0", "s1")


# --------------------------------------------------------------------------------------------------
# C1(b): committing to one simulation costs loss
# --------------------------------------------------------------------------------------------------


@given(author_arrays())
def test_mixture_has_zero_forward_kl(case):
    """F_n(mixture against itself) = 0 for n = 1..3, term by term."""
    process = build(*case)
    result = forward_kl(process, process, 3)
    assert result.off_support_fraction == 0.0
    np.testing.assert_allclose(result.per_position, 0.0, atol=1e-12)


N = 3  # the longest length of the divergence tests; F_n for n < N are partial sums of per_position


@given(author_arrays(num_authors=st.just(2), styles=GENERAL_STYLES), st.integers(0, 1))
def test_single_author_forward_kl_matches_brute_force(case, a):
    """The predictor that commits to author a is P_a itself (log_prob = path enumeration of a's own T);
    F_n = KL(P_n || P_a,n) by enumeration for n = 1..3; with K = 2 and pi_a < 1 it is > 0 exactly when
    the two authors differ at length n, by at least Pinsker's 2 TV^2. A zero-prior author cannot be
    extracted."""
    arrays, prior = case
    process = build(arrays, prior)
    if prior[a] == 0:
        with pytest.raises(ValueError, match="author"):
            single_author_predictor(process, a)
        return
    author = single_author_predictor(process, a)
    assert_log_matches(author.log_prob(WITH_IMPOSSIBLE), oracles(arrays)[a](WITH_IMPOSSIBLE))
    forward = np.cumsum(forward_kl(process, author, N).per_position)  # F_1, F_2, F_3
    for n in range(1, N + 1):
        p_authors = np.stack([f(bf.all_sequences(V, n)) for f in oracles(arrays)])
        mixture = prior @ p_authors
        expected = bf.kl(mixture, p_authors[a])
        if np.isinf(expected):
            assert np.isinf(forward[n - 1])
            continue
        np.testing.assert_allclose(forward[n - 1], expected, rtol=1e-9, atol=1e-12)
        tv = bf.total_variation(mixture, p_authors[a])  # = (1 - pi_a) TV(P_0, P_1) for K = 2
        authors_tv = bf.total_variation(p_authors[0], p_authors[1])
        np.testing.assert_allclose(tv, (1 - prior[a]) * authors_tv, atol=1e-12)
        assert forward[n - 1] >= 2 * tv**2 - 1e-12
        if tv == 0.0 or authors_tv < 1e-15:
            assert abs(forward[n - 1]) < 1e-12


def test_three_authors_can_mix_to_one_of_them():
    """K >= 3 caveat of C1(b): with i.i.d. authors 0 and 1 (token distributions p0 != p1) and author 2
    the half-half mixture of them (written out as its own two-state HMM), a uniform prior makes the whole
    mixture equal to author 2: committing to author 2 costs nothing (F_n = 0) although the authors
    differ; committing to author 0 costs F_n > 0."""
    p0, p1 = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])

    def iid(p):  # emit v with p_v from either state, always move to state 0
        t = np.zeros((V, S, S))
        t[:, :, 0] = p[:, None]
        return t, np.array([1.0, 0.0])

    both = np.zeros((V, S, S))
    both[:, 0, 0], both[:, 1, 1] = p0, p1
    arrays = [iid(p0), iid(p1), (both, np.array([0.5, 0.5]))]
    process = build(*pad(arrays, np.full(3, 1 / 3)))
    seqs = bf.all_sequences(V, 3)
    np.testing.assert_allclose(
        oracles(arrays)[2](seqs),
        np.full(3, 1 / 3) @ np.stack([f(seqs) for f in oracles(arrays)]),
        atol=1e-15,
    )
    assert abs(forward_kl(process, single_author_predictor(process, 2), 3).value) < 1e-12
    assert forward_kl(process, single_author_predictor(process, "author0"), 3).value > 1e-2


def check_map_iff(process, authors, prior) -> list:
    """C1(b) for the MAP-author predictor at n = 1..N against brute force: its conditionals, F_n, and
    F_n > 0 iff at some supported prefix shorter than n the MAP author's conditional differs from Bayes.
    Returns, per n, whether they differ (None if the difference is too small to call either way)."""
    predictor = map_author_predictor(process)
    forward = np.cumsum(forward_kl(process, predictor, N).per_position)
    out = []
    for n in range(1, N + 1):
        ref = map_author_reference(authors, prior, V, n)
        if n == N:
            # The rows of WITH_IMPOSSIBLE (shared shape) that hold every x in V^N, in order, then a 0.
            rows = np.all(WITH_IMPOSSIBLE < V, axis=1) & (WITH_IMPOSSIBLE[:, N] == 0)
            log_cond = np.asarray(predictor.log_conditionals(WITH_IMPOSSIBLE))
            np.testing.assert_array_equal(WITH_IMPOSSIBLE[rows, :N], bf.all_sequences(V, N))
            supported = ref["supported"]
            assert np.all(np.isneginf(log_cond[rows, :N][~supported]))
            assert_log_matches(log_cond[rows, :N][supported], ref["map_cond"][supported])
            impossible = np.cumsum(WITH_IMPOSSIBLE >= V, axis=1) - (WITH_IMPOSSIBLE >= V) > 0
            assert np.all(np.isneginf(log_cond[impossible]))
        if np.isinf(ref["forward_kl"]):
            assert np.isinf(forward[n - 1])
        else:
            np.testing.assert_allclose(forward[n - 1], ref["forward_kl"], rtol=1e-9, atol=1e-12)
        if ref["max_diff"] <= 1e-12:
            assert abs(forward[n - 1]) <= 1e-12
            out.append(False)
        elif ref["pinsker"] >= 1e-9:  # F_n >= Pinsker's bound >= 1e-9, far above rounding
            assert forward[n - 1] >= ref["pinsker"] * (1 - 1e-6)
            out.append(True)
        else:
            out.append(None)
    return out


@given(author_arrays(styles=STYLES[:-1]))
def test_map_author_predictor_iff(case):
    """The MAP-author predictor follows pi(a | x<t)'s argmax (ties to the lowest index) exactly, and
    F_n > 0 iff the MAP author's conditional differs from Bayes at some supported prefix shorter than n,
    for n = 1..3. (Near-deterministic authors are left out: their 1e-7 differences fall between the two
    thresholds.)"""
    arrays, prior = case
    differs = check_map_iff(build(arrays, prior), oracles(arrays), prior)
    note(f"differs={differs}")
    assume(None not in differs)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("duplicate", [False] * 3),  # two identical authors: every conditional agrees
        ("prior_one_zero", [False] * 3),  # the posterior is one-hot from the start
        # Markov authors share the uniform first token; then the tie at t = 1 goes to author 0, whose
        # kernel is not the Bayes mixture of kernels.
        ("markov", [False, True, True]),
        ("markov_identical", [False] * 3),  # closeness 1: identical authors
        ("random", [True] * 3),
    ],
)
def test_map_author_predictor_both_directions(name, expected):
    """Both directions of the iff on fixed instances, including exact posterior ties."""
    rng = np.random.default_rng(3)
    arrays = [random_hmm(rng, V, S, "dense") for _ in range(2)]
    prior = np.array([0.6, 0.4])
    if name == "duplicate":
        arrays[1] = arrays[0]
    if name == "prior_one_zero":
        prior = np.array([1.0, 0.0])
    if name.startswith("markov"):
        closeness = 1.0 if name == "markov_identical" else 0.5
        process = markov_authors(3, V, closeness, seed=0)
        authors = [markov_author(k) for k in flat_markov_kernels(3, V, closeness, 0)]
        assert check_map_iff(process, authors, np.full(3, 1 / 3)) == expected
        return
    arrays, prior = pad(arrays, prior)
    assert check_map_iff(build(arrays, prior), oracles(arrays), prior) == expected


def test_map_step_matches_log_conditionals():
    """The incremental interface gives the same conditionals as log_conditionals on every sequence over
    ids 0..V, including after an impossible token (every conditional -inf)."""
    rng = np.random.default_rng(2)
    arrays, prior = pad(
        [random_hmm(rng, V, S, "sparse") for _ in range(3)], rng.dirichlet(np.ones(3))
    )
    predictor = map_author_predictor(build(arrays, prior))
    full = np.asarray(predictor.log_conditionals(WITH_IMPOSSIBLE))
    step = jax.jit(lambda q, state, token: q.step(state, token))
    state, log_next = predictor.init_state(len(WITH_IMPOSSIBLE))
    steps = [log_next]
    for t in range(L - 1):
        state, log_next = step(predictor, state, jnp.asarray(WITH_IMPOSSIBLE[:, t]))
        steps.append(log_next)
    np.testing.assert_allclose(np.stack([np.asarray(x) for x in steps], 1), full, atol=1e-12)
    after_impossible = (np.cumsum(WITH_IMPOSSIBLE >= V, axis=1) - (WITH_IMPOSSIBLE >= V)) > 0
    assert np.all(np.isneginf(full[after_impossible])) and not np.any(np.isnan(full))


# --------------------------------------------------------------------------------------------------
# C1(c): ancestral equivalence
# --------------------------------------------------------------------------------------------------


@given(author_arrays())
def test_autoregressive_bayes_equals_draw_author_then_run(case):
    """prod_t p(x_t | x<t) (the distribution of autoregressive sampling from the Bayes conditionals)
    equals sum_a pi_a P_a(x) for every x in V^4 and sums to 1."""
    arrays, prior = case
    process = build(arrays, prior)
    seqs = WITH_IMPOSSIBLE  # the rows with id V have probability 0 both ways
    autoregressive = np.exp(
        np.asarray(prefix_log_probs(process.log_conditionals(seqs), seqs))[:, -1]
    )
    ancestral = prior @ np.stack([f(seqs) for f in oracles(arrays)])
    np.testing.assert_allclose(autoregressive, ancestral, rtol=0, atol=1e-12)
    np.testing.assert_allclose(autoregressive.sum(), 1.0, atol=1e-12)


def test_autoregressive_samples_match_the_mixture():
    """Samples of generate() (autoregressive from the Bayes conditionals, through the incremental
    interface) match sum_a pi_a P_a(x) over the 27 cells of V^3. (process.sample, "draw the author's
    start state, then run it", is checked for every registered family by tests/test_catalog.py.)

    Calibration: exact two-sided binomial tests on 27 cells at a Bonferroni level of 1e-6 / 27 each, so a
    correct implementation fails with probability <= 1e-6 (a fixed key: decided once)."""
    process = hierarchical_markov_authors(2, 2, V, 0.3, 0.7, seed=4)
    authors = [markov_author(k) for src in markov_kernels(2, 2, V, 0.3, 0.7, 4) for k in src]
    seqs = bf.all_sequences(V, 3)
    exact = np.full(4, 0.25) @ np.stack([f(seqs) for f in authors])
    codes = V ** np.arange(2, -1, -1)
    counts = np.bincount(
        np.asarray(generate(process, jax.random.PRNGKey(11), 20000, 3)) @ codes, minlength=27
    )
    assert bf.binomial_pvalues(counts, exact).min() > 1e-6 / 27


# --------------------------------------------------------------------------------------------------
# C1(d): the hierarchy's posterior entropies
# --------------------------------------------------------------------------------------------------


def expected_entropies(kernels, length):
    """[length + 1, 2]: E_{x<t ~ P} H(source | x<t) and E H(author | source, x<t) for t = 0..length, by
    enumeration of V^t with uniform priors (H(author | source, x) = H(author | x) - H(source | x), the
    source being a function of the author)."""
    num_sources, per_source = len(kernels), len(kernels[0])
    authors = [markov_author(k) for src in kernels for k in src]
    out = np.zeros((length + 1, 2))
    for t in range(length + 1):
        seqs = bf.all_sequences(V, t)
        joint = np.stack([f(seqs) for f in authors], 1) / len(authors)  # [N, K]
        total = joint.sum(1)
        post = joint / total[:, None]
        post_source = post.reshape(-1, num_sources, per_source).sum(-1)
        h = lambda p: -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)  # noqa: E731
        out[t] = [total @ h(post_source), total @ (h(post) - h(post_source))]
    return out


def library_entropies(process, length):
    """The same expectations from the library's posteriors over every x in V^length."""
    seqs = bf.all_sequences(V, length)
    weight = np.exp(np.asarray(process.log_prob(seqs)))
    post = np.asarray(process.posterior(seqs, "author"))
    post_source = np.asarray(process.posterior(seqs, "source"))
    h = lambda p: -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)  # noqa: E731
    return np.stack([weight @ h(post_source), weight @ (h(post) - h(post_source))], 1)


@settings(max_examples=max(5, settings().max_examples // 3))
@given(st.integers(0, 2**16), st.sampled_from([0.0, 0.5]), st.sampled_from([0.5, 0.9]))
def test_expected_posterior_entropies_never_increase(seed, source_closeness, author_closeness):
    """E H(source | x<t) and E H(author | source, x<t) are non-increasing in t = 0..8 (brute force), and
    the library's posteriors give the same expectations."""
    kernels = markov_kernels(2, 2, V, source_closeness, author_closeness, seed)
    expected = expected_entropies(kernels, 8)
    assert np.all(np.diff(expected, axis=0) <= 1e-12)
    process = hierarchical_markov_authors(2, 2, V, source_closeness, author_closeness, seed)
    np.testing.assert_allclose(library_entropies(process, 8), expected, atol=1e-10)


def test_source_is_identified_long_before_the_author():
    """The "90% sure it is that newspaper, no idea which writer" picture on a fixed instance: 2 sources x
    2 authors, V = 3, source_closeness 0 (independent sources), author_closeness 0.95, seed 0. From
    log 2 = 0.693 nats each, after 8 tokens the source entropy is 0.131 nats (stated bound: < 0.2) while
    the author-within-source entropy is 0.689 (stated bound: > 0.68): the source entropy fell by more than
    0.49 nats, the author's by less than 0.013."""
    kernels = markov_kernels(2, 2, V, 0.0, 0.95, 0)
    expected = expected_entropies(kernels, 8)
    np.testing.assert_allclose(expected[0], np.log(2), atol=1e-12)
    assert expected[8, 0] < 0.2 and expected[8, 1] > 0.68
    process = hierarchical_markov_authors(2, 2, V, 0.0, 0.95, 0)
    np.testing.assert_allclose(library_entropies(process, 8), expected, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# C5's non-ergodic counterexample uses one author against the mixture
# --------------------------------------------------------------------------------------------------


@given(author_arrays(num_authors=st.just(2), styles=GENERAL_STYLES), st.integers(0, 1))
def test_one_author_against_the_mixture_is_bounded(case, a):
    """G_n = KL(P_a,n || P_n) and TV_n match enumeration for n = 1..3, are non-decreasing in n, and stay
    below -log pi_a and 1 - pi_a (because P_n >= pi_a P_a,n)."""
    arrays, prior = case
    assume(prior[a] > 0)
    process = build(arrays, prior)
    author = single_author_predictor(process, a)
    generation = np.cumsum(generation_kl(process, author, N).per_position)
    tv = total_variation(process, author, N).per_position
    for n in range(1, N + 1):
        p_authors = np.stack([f(bf.all_sequences(V, n)) for f in oracles(arrays)])
        mixture = prior @ p_authors
        np.testing.assert_allclose(
            generation[n - 1], bf.kl(p_authors[a], mixture), rtol=1e-9, atol=1e-12
        )
        np.testing.assert_allclose(tv[n - 1], bf.total_variation(p_authors[a], mixture), atol=1e-12)
    assert np.all(generation <= -np.log(prior[a]) + 1e-12) and np.all(tv <= 1 - prior[a] + 1e-12)
    assert np.all(np.diff(generation) >= -1e-12) and np.all(np.diff(tv) >= -1e-12)
