"""C9: a weights-only likelihood fit reweights fixed personas; KL-regularised RL tilts the base towards
the reward.

Fitting only the mixture weights of fixed personas to infinitely many fine-tuning samples reproduces the
fine-tuning distribution whenever it is a mixture of the personas, and data drawn from a persona subset
in proportion to the prior give back the prior restricted to that subset. The caveats are shown as
properties too: duplicated personas leave the weights unidentified, a finite sample can keep weight
outside the subset, and data no persona can produce have likelihood zero under every weight vector.
The KL-regularised RL optimum is the base tilted by exp(r / beta): it beats every other policy on the
regularised objective (checked against perturbations and against a numerical maximiser), and as beta falls
it piles onto the reward's argmax inside the base's support, even onto behaviours of tiny base weight.
Persona distributions are checked against the turn-taking oracle of brute_force_personas.
"""

from __future__ import annotations

import brute_force as bf
import jax
import numpy as np
import pytest
from brute_force_personas import speaker_probs
from hypothesis import example, given
from hypothesis import strategies as st

from theory.claims.c09_reweighting import (
    empirical_distribution,
    fit_mixture_weights,
    greedy_limit,
    hack_rate,
    mixture_log_likelihood,
    optimal_value,
    persona_tables,
    regularised_objective,
    rl_optimum,
    rl_optimum_probs,
)
from theory.claims.enumeration import sequence_table
from theory.divergence import forward_kl
from toymodels.processes import TableProcess, persona_stage, restrict_prior

SEEDS = st.integers(0, 2**32 - 1)
# One stage shape for every example (K personas, V tokens, turns of 2, length 6): one compilation.
K, V, TURN, LENGTH = 3, 2, 2, 6
SEQUENCES = bf.all_sequences(V, LENGTH)


def entropy(p) -> float:
    p = np.asarray(p)[np.asarray(p) > 0]
    return float(-(p * np.log(p)).sum())


def random_stage(seed: int, zero_repeat: bool = False):
    """(personas [K, V, V], user [V, V]) with Dirichlet(1) rows; zero_repeat: no persona ever follows a
    0 with a 0, so some sequences are impossible for every persona."""
    rng = np.random.default_rng(seed)
    personas = rng.dirichlet(np.ones(V), size=(K, V))
    if zero_repeat:
        personas[:, 0] = np.eye(V)[1]
    return personas, rng.dirichlet(np.ones(V), size=V)


def oracle_tables(personas, user) -> np.ndarray:
    """[K, V^L] single-persona stage distributions from the turn-taking definition (user first)."""
    return np.stack([speaker_probs(user, persona, np.full(V, 1 / V), TURN, SEQUENCES) for persona in personas])


# --------------------------------------------------------------------------------------------------
# Weights-only fits in the infinite-data limit
# --------------------------------------------------------------------------------------------------


@st.composite
def hull_targets(draw):
    """(components [K, N], weights [K]) with some weights possibly zero."""
    rng = np.random.default_rng(draw(SEEDS))
    k = draw(st.integers(1, 4))
    components = rng.dirichlet(np.full(draw(st.integers(3 * k, 12)), 0.5), size=k)
    weights = rng.dirichlet(np.ones(k))
    if k > 1 and draw(st.booleans()):
        weights[rng.integers(k)] = 0.0
        weights /= weights.sum()
    return components, weights


@given(hull_targets())
def test_fit_reproduces_a_target_in_the_convex_hull(instance):
    """When p_ft = sum_k w_k P_k, the fitted mixture equals p_ft, its log-likelihood is -H(p_ft) (Gibbs'
    bound, attained), the duality gap is 0, and (independent components) the weights are w."""
    components, weights = instance
    target = weights @ components
    fit = fit_mixture_weights(components, target)
    assert fit.gap <= 1e-10
    np.testing.assert_allclose(fit.weights @ components, target, rtol=0, atol=1e-10)
    assert fit.log_likelihood == pytest.approx(-entropy(target), abs=1e-10)
    tolerance = 1e-9 * np.linalg.cond(components.T)  # weight error <= condition number x fit error
    np.testing.assert_allclose(fit.weights, weights, rtol=0, atol=tolerance)


@given(SEEDS, st.sampled_from([[0], [1], [0, 1], [0, 2], [1, 2]]))
def test_fit_to_subset_data_gives_the_restricted_prior(seed, subset):
    """The persona components are the single-persona stages (library equals the turn-taking oracle); data
    from the stage with the prior restricted to a subset are that mixture, and the weights-only fit
    returns exactly pi_k / pi(S) on the subset and 0 elsewhere."""
    personas, user = random_stage(seed)
    prior = np.random.default_rng(seed + 1).dirichlet(np.ones(K))
    components = persona_tables(personas, user, TURN, LENGTH)
    np.testing.assert_allclose(components, oracle_tables(personas, user), rtol=0, atol=1e-12)
    restricted = np.zeros(K)
    restricted[subset] = prior[subset] / prior[subset].sum()
    fine_tuning = persona_stage(personas, restrict_prior(prior, subset), user, TURN)
    target = sequence_table(fine_tuning, LENGTH).reshape(-1)
    np.testing.assert_allclose(target, restricted @ components, rtol=0, atol=1e-12)
    fit = fit_mixture_weights(components, target)
    assert fit.gap <= 1e-10
    np.testing.assert_allclose(fit.weights, restricted, rtol=0, atol=1e-9 * np.linalg.cond(components.T))


@given(SEEDS, st.floats(0.05, 0.9))
def test_duplicated_personas_leave_the_weights_unidentified(seed, split):
    """With persona 2 a copy of persona 1 (linearly dependent components), the weights (w0, w1, w2) and
    (w0, w1 + w2, 0) give the same stage distribution and likelihood, and fits from two starting
    points reach different weights with the same, optimal, likelihood."""
    personas, user = random_stage(seed)
    personas[2] = personas[1]
    weights = np.array([0.3, 0.7 * split, 0.7 * (1 - split)])
    merged = np.array([0.3, 0.7, 0.0])
    first = sequence_table(persona_stage(personas, weights, user, TURN), LENGTH).reshape(-1)
    second = sequence_table(persona_stage(personas, merged, user, TURN), LENGTH).reshape(-1)
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-12)
    components = oracle_tables(personas, user)
    fits = [fit_mixture_weights(components, first, init=init) for init in ([0.2, 0.7, 0.1], [0.2, 0.1, 0.7])]
    for fit in fits:
        assert fit.gap <= 1e-10 and fit.log_likelihood == pytest.approx(-entropy(first), abs=1e-10)
        np.testing.assert_allclose(fit.weights @ components, first, rtol=0, atol=1e-10)
    assert np.abs(fits[0].weights - fits[1].weights).max() > 0.1


@given(SEEDS)
def test_one_sample_fit_is_the_most_likely_persona(seed):
    """The weights-only fit to a single sequence x puts all weight on argmax_k P_k(x), so from one sample
    of subset data the fit leaves the subset with probability sum_x p_ft(x) [argmax_k P_k(x) not in S]."""
    personas, user = random_stage(seed)
    components = oracle_tables(personas, user)
    subset = [0, 1]
    target = restrict_prior(np.full(K, 1 / K), subset) @ components
    leaves, expected = 0.0, 0.0
    for x in np.flatnonzero(target > 0):
        ranked = np.sort(components[:, x])
        if ranked[-1] - ranked[-2] < 1e-6 * ranked[-1]:
            continue  # a near tie: the maximiser is (numerically) not a vertex
        fit = fit_mixture_weights(components, np.eye(len(target))[x])
        np.testing.assert_allclose(fit.weights, np.eye(K)[np.argmax(components[:, x])], atol=1e-9)
        leaves += target[x] * (fit.weights[2] > 0.5)
        expected += target[x] * (np.argmax(components[:, x]) == 2)
    assert leaves == pytest.approx(expected, abs=1e-12)


def test_finite_subset_samples_keep_weight_outside_the_subset():
    """An instance: a single sample of data from personas {0, 1} already leaves the subset with positive
    probability (exactly, by enumeration); and among 10 independent samples of 40 sequences, some fits
    keep weight on persona 2 with a likelihood strictly above the best one on {0, 1} alone. (At the
    infinite-data optimum persona 2's gradient is exactly 1, so sampling noise tips it either way.)"""
    personas, user = random_stage(7)
    components = persona_tables(personas, user, TURN, LENGTH)
    target = restrict_prior(np.full(K, 1 / K), [0, 1]) @ components
    assert target[np.argmax(components, axis=0) == 2].sum() > 0.05  # one sample: the fit is persona 2
    kept = 0
    for key in jax.random.split(jax.random.key(0), 10):
        draws = np.asarray(jax.random.choice(key, len(target), (40,), p=target))
        empirical = empirical_distribution(SEQUENCES[draws], V)
        fit = fit_mixture_weights(components, empirical)
        on_subset = fit_mixture_weights(components[:2], empirical)
        assert fit.gap <= 1e-10 and on_subset.gap <= 1e-10
        assert fit.log_likelihood >= on_subset.log_likelihood - 1e-12
        if fit.weights[2] > 1e-3:
            kept += 1
            assert fit.log_likelihood > on_subset.log_likelihood + 1e-9
    assert kept >= 1


@given(SEEDS, st.floats(1e-6, 0.5))
def test_data_outside_the_base_support_have_zero_likelihood(seed, mass):
    """If the fine-tuning data include a sequence that no persona produces, every weight vector has
    log-likelihood -inf (never NaN), and the fit refuses with a ValueError."""
    personas, user = random_stage(seed, zero_repeat=True)
    components = persona_tables(personas, user, TURN, LENGTH)
    impossible = np.flatnonzero(components.max(axis=0) == 0)
    assert impossible.size > 0
    target = (1 - mass) * components[0] + mass * np.eye(components.shape[1])[impossible[0]]
    for weights in np.random.default_rng(seed).dirichlet(np.ones(K), size=5):
        assert mixture_log_likelihood(weights, components, target) == -np.inf
    with pytest.raises(ValueError, match="target_probs"):
        fit_mixture_weights(components, target)


# --------------------------------------------------------------------------------------------------
# KL-regularised RL
# --------------------------------------------------------------------------------------------------


def rl_problem(seed: int, beta: float):
    """(base [8] over {0,1}^3 with zeros and tiny entries, reward [8], beta) drawn from `seed`."""
    rng = np.random.default_rng(seed)
    base = rng.dirichlet(np.full(8, 0.7))
    base[rng.random(8) < 0.25] = 0.0
    base[rng.integers(8)] += 1e-3
    base[rng.random(8) < 0.2] *= 1e-6  # behaviours of tiny prior weight
    return base / base.sum(), rng.normal(size=8), beta


@st.composite
def rl_problems(draw):
    return rl_problem(draw(SEEDS), draw(st.floats(0.05, 5.0)))


def maximise_numerically(base, reward, beta, iterations: int = 200) -> np.ndarray:
    """The maximiser of J(pi) = E_pi[r] - beta KL(pi || pi_base) over the simplex on supp(pi_base), found
    by damped Newton ascent from pi = pi_base (J's Hessian is diag(-beta / pi); each step stays on the
    simplex and is halved until it keeps pi > 0 and does not lower J). It does not use the closed form.

    Why not a general-purpose solver: when some base entries were 1e-7 and beta 0.05, scipy's SLSQP on pi
    stopped up to 1e-3 short of the optimum, and L-BFGS on softmax logits up to 3e-5 (from the uniform
    start; further from pi_base); this came within 3e-15 on all of 5000 such problems."""
    support = base > 0
    b, r = base[support], reward[support]

    def objective(pi):
        return pi @ r - beta * pi @ np.log(pi / b)

    pi = b.copy()
    for _ in range(iterations):
        gradient = r - beta * (np.log(pi / b) + 1)
        step = pi / beta * (gradient - pi @ gradient)  # Newton's direction within sum(pi) = 1
        scale, now = 1.0, objective(pi)
        while scale > 1e-12 and not (np.all(pi + scale * step > 0) and objective(pi + scale * step) >= now):
            scale /= 2
        if scale <= 1e-12:
            break  # no ascent step left at this precision
        pi = pi + scale * step
        pi /= pi.sum()
    out = np.zeros(len(base))
    out[support] = pi
    return out


@given(rl_problems(), SEEDS)
@example(rl_problem(2660, 0.05), 0)  # tiny base entries, small beta: general-purpose solvers stall
def test_rl_optimum_maximises_the_regularised_objective(problem, seed):
    """pi* = pi_base exp(r / beta) / Z (a TableProcess) attains beta log Z; any other policy pi falls short
    on E[r] - beta KL(pi || pi_base) by exactly beta KL(pi || pi*) (random policies and perturbations);
    a numerical maximiser over the simplex on supp(pi_base) does not beat it and lies next to it;
    and its KL to the base (theory.divergence) is E_pi*[r] / beta - log Z."""
    base, reward, beta = problem
    support = base > 0
    tilted = np.where(support, base * np.exp((reward - reward[support].max()) / beta), 0.0)
    expected = tilted / tilted.sum()
    optimum = rl_optimum(base, reward, beta, vocab_size=2)
    np.testing.assert_allclose(np.asarray(optimum.probs()), expected, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(rl_optimum_probs(base, reward, beta), expected, rtol=1e-12, atol=1e-300)
    value = regularised_objective(expected, base, reward, beta)
    log_z = np.log(np.sum(base[support] * np.exp((reward[support] - reward.max()) / beta))) + reward.max() / beta
    assert value == pytest.approx(beta * log_z, abs=1e-9)
    assert optimal_value(base, reward, beta) == pytest.approx(beta * log_z, abs=1e-9)

    rng = np.random.default_rng(seed)
    for _ in range(10):
        other = np.where(support, rng.dirichlet(np.ones(8)), 0.0)
        other /= other.sum()
        for eps in (1.0, 1e-2):
            mixed = (1 - eps) * expected + eps * other
            # Exactly J(pi*) - J(pi) = beta KL(pi || pi*) > 0 (bf.kl: an oracle written independently).
            loss = value - regularised_objective(mixed, base, reward, beta)
            assert loss > 0 and loss == pytest.approx(beta * bf.kl(mixed, expected), rel=1e-6, abs=1e-12)
    if not support.all():
        assert regularised_objective(np.full(8, 1 / 8), base, reward, beta) == -np.inf

    found = maximise_numerically(base, reward, beta)
    shortfall = value - regularised_objective(found, base, reward, beta)
    assert -1e-12 <= shortfall <= 1e-10
    # By the identity above and Pinsker, TV(found, pi*) <= sqrt(shortfall / (2 beta)).
    assert np.abs(found - expected).sum() / 2 <= np.sqrt(max(shortfall, 0.0) / (2 * beta)) + 1e-6

    kl = forward_kl(optimum, TableProcess(base.reshape(2, 2, 2)), 3)
    assert kl.value == pytest.approx(float(expected @ reward) / beta - log_z, abs=1e-9)


@given(rl_problems())
def test_small_beta_concentrates_on_the_reward_argmax_inside_the_support(problem):
    """As beta falls, pi* puts mass S / (pi_base(A) + S) outside the argmax set A of r on supp(pi_base)
    (non-increasing in 1/beta and below exp(-gap / beta) (1 - pi_base(A)) / pi_base(A)); inside A it is
    pi_base renormalised (the greedy limit); it never leaves supp(pi_base), however large r is there."""
    base, reward, _ = problem
    support = base > 0
    reward = reward.copy()
    if not support.all():
        reward[~support] = reward.max() + 10.0  # the best reward lies where the base never goes
    best = reward[support].max()
    argmax = support & (reward == best)
    margin = best - np.max(np.where(support & ~argmax, reward, -np.inf), initial=-np.inf)
    limit = greedy_limit(base, reward)
    np.testing.assert_allclose(limit, np.where(argmax, base, 0.0) / base[argmax].sum(), rtol=1e-12)
    outside_mass = []
    for beta in (2.0, 0.5, 0.1, 0.02):
        pi = rl_optimum_probs(base, reward, beta)
        assert np.all(pi[~support] == 0)
        rest = np.sum(np.where(support & ~argmax, base * np.exp((reward - best) / beta), 0.0))
        exact = rest / (base[argmax].sum() + rest)
        assert 1 - pi[argmax].sum() == pytest.approx(exact, abs=1e-12)
        assert exact <= np.exp(-margin / beta) * (1 - base[argmax].sum()) / base[argmax].sum() + 1e-15
        np.testing.assert_allclose(pi[argmax] / pi[argmax].sum(), limit[argmax], rtol=1e-9)
        outside_mass.append(exact)
    assert np.all(np.diff(outside_mass) <= 1e-15)


def test_reward_hacking_by_a_rare_persona():
    """A stage where a persona of prior weight 1e-4 exploits the proxy reward (it mostly emits token 1,
    the honest persona token 0): proxy = number of 1s the assistant emits, and a hack is an assistant
    turn of only 1s (true reward, the number of 0s, is 0 there). The base almost never hacks; as beta
    falls the RL optimum hacks at a rate rising to 1."""
    honest = np.array([[0.99, 0.01], [0.99, 0.01]])
    hacker = np.array([[0.1, 0.9], [0.05, 0.95]])
    user = np.array([[0.5, 0.5], [0.5, 0.5]])
    base = sequence_table(persona_stage(np.stack([honest, hacker]), [1 - 1e-4, 1e-4], user, TURN), LENGTH)
    base = base.reshape(-1)
    assistant = (np.arange(LENGTH) // TURN) % 2 == 1
    proxy = SEQUENCES[:, assistant].sum(axis=1).astype(float)
    is_hack = proxy == assistant.sum()
    assert hack_rate(base, is_hack) < 0.01
    rates = [hack_rate(rl_optimum_probs(base, proxy, beta), is_hack) for beta in (1.0, 0.3, 0.1, 0.03)]
    assert np.all(np.diff(rates) > 0) and rates[-1] > 0.99
    assert hack_rate(greedy_limit(base, proxy), is_hack) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: fit_mixture_weights([[0.5, 0.5]], [0.2, 0.9]), "target_probs"),
        (lambda: fit_mixture_weights([[0.5, 0.6]], [0.5, 0.5]), "component_probs"),
        (lambda: fit_mixture_weights([[0.5, 0.5]], [0.5, 0.2, 0.3]), "target_probs"),
        (lambda: fit_mixture_weights([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5], init=[1.0, 0.0]), "init"),
        (lambda: rl_optimum_probs([0.5, 0.5], [0.0, 1.0], 0.0), "beta"),
        (lambda: rl_optimum_probs([0.5, 0.5], [0.0, np.inf], 1.0), "reward"),
        (lambda: empirical_distribution([[0, 2]], 2), "sequences"),
        (lambda: hack_rate([0.5, 0.5], [True]), "is_hack"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
