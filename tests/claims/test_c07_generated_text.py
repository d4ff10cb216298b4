"""C7: a predictor of data that mixes human text H with an earlier model's samples M recognises them.

The exact posterior pi_t = P(M | x_<=t) of the data D = (1 - beta) H + beta M is a martingale under
exact generation from D (mean beta at every length); under H's rollouts its mean is
beta - Var_D(pi_t) / (1 - beta) and falls, under M's it is beta + Var_D(pi_t) / beta and rises,
strictly once H and M differ at that length.

Every expected number comes from tests/claims/_oracles_a.py: H's probabilities by summing its hidden
paths, M's from H's path-enumerated conditionals raised to 1/tau (or another HMM's paths), and Bayes
over the two by hand on all of V^4.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _oracles_a import hmm_probs, prefix_table, tempered_hmm_probs
from brute_force import all_sequences
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from strategies import random_hmm

from theory.claims.c07_generated_text import (
    model_posterior,
    model_posterior_mean,
    model_posterior_mean_mc,
    model_posterior_variance,
    predicted_means,
)
from toymodels.predictors import prefix_log_probs, with_temperature
from toymodels.processes.generated import generated_text_mixture
from toymodels.processes.hmm import HMMProcess

V, S, L = 3, 2, 4
SEQS = all_sequences(V, L)
ATOL = 1e-10


@st.composite
def cases(draw):
    """(H arrays, M description, beta). M is H at temperature tau (tau = 1 gives M = H) or an unrelated
    random HMM of the same shape."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    human = random_hmm(rng, V, S, draw(st.sampled_from(["dense", "sparse"])))
    if draw(st.booleans()):
        model = ("tempered", draw(st.sampled_from([1.0, 0.5, 2.0]) | st.floats(0.3, 3.0)))
    else:
        model = ("hmm", random_hmm(rng, V, S, "dense"))
    return human, model, draw(st.floats(0.05, 0.95))


def build(case):
    """(D, H, M) as library objects."""
    (t_h, pi_h), (kind, spec), beta = case
    human = HMMProcess(t_h, pi_h)
    model = with_temperature(human, spec) if kind == "tempered" else HMMProcess(*spec)
    return generated_text_mixture(human, model, beta), human, model


def oracle(case):
    """(P_H, P_M over V^L, pi_t [V^L, L + 1], P_D(x_<=t) [V^L, L + 1])."""
    (t_h, pi_h), (kind, spec), beta = case
    p_h = hmm_probs(t_h, pi_h, L)
    p_m = tempered_hmm_probs(t_h, pi_h, spec, L) if kind == "tempered" else hmm_probs(*spec, L)
    joint_m = beta * prefix_table(p_m, V, L)
    total = (1 - beta) * prefix_table(p_h, V, L) + joint_m
    posterior = np.divide(joint_m, total, out=np.full_like(total, np.nan), where=total > 0)
    return p_h, p_m, posterior, total


@given(cases())
def test_posterior_on_m_is_a_martingale_under_bayes_generation(case):
    """Exact generation from D: on every possible prefix x_<=t of V^4, E_D[pi_t+1 | x_<=t] = pi_t
    (oracle), the library's pi_t equals the oracle's, and the library's mean of pi_t over D's own
    sequences is beta at every t = 0..4."""
    data, _, _ = build(case)
    _, _, posterior, total = oracle(case)
    for t in range(L):
        step = V ** (L - t - 1)  # one row per (prefix of length t, next token)
        mass_next = total[::step, t + 1].reshape(-1, V)
        post_next = np.nan_to_num(posterior[::step, t + 1]).reshape(-1, V)
        mass_now = total[:: V * step, t]
        alive = mass_now > 0
        expected = np.sum(mass_next * post_next, axis=1)[alive] / mass_now[alive]
        np.testing.assert_allclose(expected, posterior[:: V * step, t][alive], rtol=0, atol=ATOL)
    library = model_posterior(data, SEQS)
    possible = total > 0
    np.testing.assert_allclose(library[possible], posterior[possible], rtol=0, atol=ATOL)
    np.testing.assert_allclose(model_posterior_mean(data, data, L), case[2], rtol=0, atol=ATOL)


@given(cases())
def test_h_rollouts_look_human_and_m_rollouts_look_model_made(case):
    """For t = 0..4: E_H[pi_t] and E_M[pi_t] (library, by enumeration) equal the oracle's means and the
    closed forms beta - Var_D(pi_t) / (1 - beta) and beta + Var_D(pi_t) / beta (Var_D from the library,
    equal to the oracle's); Var_D never decreases, so E_H never rises and E_M never falls; and
    E_H[pi_t] < beta < E_M[pi_t] exactly when H and M differ at length t (oracle)."""
    data, human, model = build(case)
    beta = case[2]
    p_h, p_m, posterior, total = oracle(case)
    weight_d = total[:, L]
    safe = np.nan_to_num(posterior)
    variance_oracle = weight_d @ (safe - beta) ** 2
    variance = model_posterior_variance(data, L)
    np.testing.assert_allclose(variance, variance_oracle, rtol=0, atol=ATOL)
    mean_h, mean_m = model_posterior_mean(data, human, L), model_posterior_mean(data, model, L)
    np.testing.assert_allclose(mean_h, p_h @ safe, rtol=0, atol=ATOL)
    np.testing.assert_allclose(mean_m, p_m @ safe, rtol=0, atol=ATOL)
    closed_h, closed_m = predicted_means(beta, variance)
    np.testing.assert_allclose(mean_h, closed_h, rtol=0, atol=ATOL)
    np.testing.assert_allclose(mean_m, closed_m, rtol=0, atol=ATOL)
    assert np.all(np.diff(variance) >= -ATOL)
    assert np.all(np.diff(mean_h) <= ATOL) and np.all(np.diff(mean_m) >= -ATOL)
    for t in range(L + 1):
        h_t, m_t = prefix_table(p_h, V, L)[:: V ** (L - t), t], prefix_table(p_m, V, L)[:: V ** (L - t), t]
        if np.abs(h_t - m_t).max() > 1e-9:
            assert mean_h[t] < beta < mean_m[t]
        elif np.abs(h_t - m_t).max() <= 1e-15:
            assert abs(mean_h[t] - beta) <= ATOL and abs(mean_m[t] - beta) <= ATOL


def test_monte_carlo_mean_matches_enumeration():
    """The sampled estimate of E[pi_t] (for rollouts too long to enumerate) agrees with the exact
    enumeration for H's rollouts (the process samples itself) and M's (generated token by token from
    the tempered predictor): within 5 standard errors at every t = 1..4 (10 comparisons), exactly beta
    at t = 0."""
    rng = np.random.default_rng(7)
    case = (random_hmm(rng, V, S, "dense"), ("tempered", 0.5), 0.3)
    data, human, model = build(case)
    for index, rollout in enumerate((human, model)):
        estimate = model_posterior_mean_mc(data, rollout, jax.random.key(index), 4000, L)
        exact = model_posterior_mean(data, rollout, L)
        np.testing.assert_allclose(estimate.mean[0], 0.3, rtol=0, atol=ATOL)
        assert np.all(np.abs(estimate.mean[1:] - exact[1:]) <= 5 * estimate.stderr[1:])


def test_a_model_rollout_can_look_more_human_at_some_step():
    """Intuition: "every token a model writes makes its text look more model-made". Only the *mean*
    posterior rises under M's rollouts; Hypothesis finds an instance and a sequence M can write whose
    posterior on M falls at some step (the library's posterior, confirmed by the oracle)."""
    budget = settings(settings(), max_examples=20 * settings().max_examples, database=None,
                      derandomize=True, phases=[Phase.generate, Phase.shrink])

    def falls_somewhere(case):
        data, _, model = build(case)
        writable = np.exp(np.asarray(prefix_log_probs(model.log_conditionals(SEQS), SEQS)))[:, 1:] > 0
        posterior = model_posterior(data, SEQS)
        return bool(np.any((np.diff(posterior, axis=1) < -1e-6) & writable))

    found = find(cases(), falls_somewhere, settings=budget)
    _, p_m, posterior, total = oracle(found)
    m_prefix = prefix_table(p_m, V, L)
    drops = (np.diff(np.nan_to_num(posterior), axis=1) < -1e-6) & (m_prefix[:, 1:] > 0)
    rows, cols = np.nonzero(drops)
    assert len(rows) > 0
    row, col = rows[0], cols[0]
    print(
        f"\nFalsified: beta = {found[2]:.3g}, M = {found[1][0]}; M writes {SEQS[row, :col + 1].tolist()} with "
        f"probability {m_prefix[row, col + 1]:.3g}, and its last token moves P(M | x) from "
        f"{posterior[row, col]:.4f} down to {posterior[row, col + 1]:.4f}"
    )


def _pieces():
    human = HMMProcess(*random_hmm(np.random.default_rng(0), V, S, "dense"))
    return human, generated_text_mixture(human, with_temperature(human, 2.0), 0.3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: model_posterior_mean(_pieces()[0], _pieces()[0], 2), "data"),
        (lambda: model_posterior_mean(_pieces()[1], HMMProcess(*random_hmm(np.random.default_rng(0), 2, S, "dense")), 2), "rollout"),
        (lambda: predicted_means(0.0, [0.0]), "beta"),
        (lambda: model_posterior_mean_mc(_pieces()[1], _pieces()[0], None, 10, 2), "key"),
        (lambda: model_posterior_mean_mc(_pieces()[1], _pieces()[0], jax.random.key(0), 1, 2), "num_sequences"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
