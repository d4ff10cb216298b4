"""C10: Waluigi collapse, checked exactly.

W imitates G and reveals itself with probability rho per step. With exact imitation the persona
posterior after n reveal-free tokens is pi_W (1-rho)^n / (pi_G + pi_W (1-rho)^n) whatever the tokens,
a reveal makes W certain forever, and under exact generation the posterior is a martingale with
P(revealed by n) = pi_W (1 - (1-rho)^n). With imperfect imitation the log-odds of W drift by
log(1-rho) - KL(g || w~) per token while G speaks and log(1-rho) + KL(w~ || g) while W speaks unrevealed.

Every expected number comes from tests/claims/_oracles_a.py: the two personas' sequence probabilities
written out from the definition (summing over the unobserved start token), then Bayes by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from _oracles_a import prefix_marginal, waluigi_probs
from brute_force import all_sequences
from hypothesis import Phase, find, given, note, settings
from hypothesis import strategies as st

from theory.claims.c10_waluigi import (
    collapse_posterior,
    expected_log_odds,
    expected_log_odds_by_enumeration,
    log_odds_drift,
    posterior_means,
    revealed_by,
)
from toymodels.processes.standard import markov_chain
from toymodels.processes.waluigi import waluigi

N = 2  # normal tokens; the reveal token is N, so V = 3 and every instance shares one shape
V = N + 1
L = 5
SEQS = all_sequences(V, L)
ATOL = 1e-10


@st.composite
def cases(draw, exact=False, full_support=False, min_rho=0.0):
    """Keyword arguments of waluigi: every array given explicitly, so the oracle reads the same ones."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prior_w = draw(st.floats(0.01, 0.99))
    if draw(st.booleans()):
        rho = draw(st.sampled_from([r for r in (0.0, 0.05, 0.3) if r >= min_rho]))
    else:
        # Not below 1e-9: XLA on CPU flushes subnormal numbers to zero, so a reveal of probability
        # ~1e-313 would be an impossible event to the library and a possible one to the oracle.
        rho = draw(st.floats(max(min_rho, 1e-9), 0.9))
    good = rng.dirichlet(np.ones(N), size=N)
    if not full_support and draw(st.booleans()):
        good[0] = np.eye(N)[1]  # a sparse row: some tokens are impossible for G after token 0
    if exact:
        imitation = good
    else:
        imitation = rng.dirichlet(np.ones(N), size=N)
    after = rng.dirichlet(np.ones(V), size=V)
    start = rng.dirichlet(np.ones(N))
    return dict(prior_w=prior_w, reveal_prob=rho, good=good, imitation=imitation, after_reveal=after, start=start)


def oracle_prefixes(kwargs):
    """(P(x_<=t | G), P(x_<=t | W)) as [V^L, L + 1] arrays, one row per sequence of V^L."""
    p_g, p_w = waluigi_probs(
        kwargs["prior_w"], kwargs["reveal_prob"], kwargs["good"], kwargs["imitation"],
        kwargs["after_reveal"], kwargs["start"], L,
    )
    out = []
    for probs in (p_g, p_w):
        columns = [np.repeat(prefix_marginal(probs, V, L, t), V ** (L - t)) for t in range(L + 1)]
        out.append(np.stack(columns, axis=1))
    return out


def oracle_posterior_w(kwargs):
    """P(W | x_<=t) [V^L, L + 1] by Bayes on the oracle's persona probabilities, and P(x_<=t)."""
    p_g, p_w = oracle_prefixes(kwargs)
    joint_w = kwargs["prior_w"] * p_w
    total = (1 - kwargs["prior_w"]) * p_g + joint_w
    return np.divide(joint_w, total, out=np.full_like(total, np.nan), where=total > 0), total


def reveal_free(seqs):
    """[rows, L + 1]: whether x_1..x_t holds no reveal, for t = 0..L."""
    revealed = np.cumsum(seqs == N, axis=1) > 0
    return np.concatenate([np.ones((len(seqs), 1), bool), ~revealed], axis=1)


@given(cases(exact=True))
def test_reveal_free_posterior_is_the_closed_form(kwargs):
    """Exact imitation: on every possible reveal-free prefix of every length t <= 5, the library's
    P(W | x_<=t) and the oracle's Bayes posterior both equal pi_W (1-rho)^t / (pi_G + pi_W (1-rho)^t),
    whichever tokens were seen."""
    process = waluigi(**kwargs)
    oracle, total = oracle_posterior_w(kwargs)
    library = np.asarray(process.posterior(SEQS, "persona"))[..., 1]
    formula = np.broadcast_to(collapse_posterior(kwargs["prior_w"], kwargs["reveal_prob"], np.arange(L + 1)), oracle.shape)
    check = reveal_free(SEQS) & (total > 0)
    np.testing.assert_allclose(oracle[check], formula[check], rtol=0, atol=ATOL)
    np.testing.assert_allclose(library[check], formula[check], rtol=0, atol=ATOL)


@given(cases())
def test_after_a_reveal_w_is_certain_forever(kwargs):
    """Any imitation: on every possible prefix that contains a reveal, P(W | x_<=t) = 1 (oracle and
    library), at every later length too."""
    process = waluigi(**kwargs)
    oracle, total = oracle_posterior_w(kwargs)
    library = np.asarray(process.posterior(SEQS, "persona"))[..., 1]
    check = ~reveal_free(SEQS) & (total > 0)
    np.testing.assert_allclose(oracle[check], 1.0, rtol=0, atol=ATOL)
    np.testing.assert_allclose(library[check], 1.0, rtol=0, atol=ATOL)


@given(cases())
def test_posterior_is_a_martingale_and_reveals_follow_the_formula(kwargs):
    """Any imitation, exact generation: E[P(W | x_<=t+1) | x_<=t] = P(W | x_<=t) on every possible
    prefix (oracle), so the mean posterior is pi_W at every t (library, by enumeration); and
    P(revealed by t) = pi_W (1 - (1-rho)^t), which never exceeds pi_W (oracle and library)."""
    prior_w, rho = kwargs["prior_w"], kwargs["reveal_prob"]
    oracle, total = oracle_posterior_w(kwargs)
    for t in range(L):
        # Sum over the next token: rows that share x_<=t sit in blocks of V^(L-t), next tokens in
        # sub-blocks of V^(L-t-1); take one row per (prefix, next token).
        step = V ** (L - t - 1)
        mass_next = total[::step, t + 1].reshape(-1, V)
        post_next = np.nan_to_num(oracle[::step, t + 1]).reshape(-1, V)
        mass_now = total[:: V * step, t]
        alive = mass_now > 0
        expected_next = np.sum(mass_next * post_next, axis=1)[alive] / mass_now[alive]
        np.testing.assert_allclose(expected_next, oracle[:: V * step, t][alive], rtol=0, atol=ATOL)
    means = posterior_means(waluigi(**kwargs), L)
    np.testing.assert_allclose(means["persona"], prior_w, rtol=0, atol=ATOL)
    lengths = np.arange(L + 1)
    weight = total[:, L]
    oracle_revealed = np.array([weight @ ~reveal_free(SEQS)[:, t] for t in lengths])
    formula = revealed_by(prior_w, rho, lengths)
    np.testing.assert_allclose(oracle_revealed, formula, rtol=0, atol=ATOL)
    np.testing.assert_allclose(means["revealed"], formula, rtol=0, atol=ATOL)
    assert np.all(np.diff(formula) >= 0) and np.all(formula <= prior_w)
    if rho >= 1e-6:  # (1-rho)^(10^9) < e^-1000: the reveal probability has reached its limit pi_W
        np.testing.assert_allclose(revealed_by(prior_w, rho, np.array([10**9])), prior_w, rtol=1e-12)


@given(cases(full_support=True))
def test_closed_form_needs_exact_imitation(kwargs):
    """The closed form is exactly the exact-imitation case: with full-support g and start and w~ != g,
    some possible reveal-free prefix of length <= 2 has a posterior off the formula (oracle and
    library agree on it), and with w~ = g none has (the first property)."""
    process = waluigi(**kwargs)
    oracle, total = oracle_posterior_w(kwargs)
    library = np.asarray(process.posterior(SEQS, "persona"))[..., 1]
    formula = collapse_posterior(kwargs["prior_w"], kwargs["reveal_prob"], np.arange(L + 1))
    check = reveal_free(SEQS) & (total > 0)
    check[:, 3:] = False
    off = np.abs(np.where(check, oracle - formula, 0.0)).max()
    differs = np.abs(kwargs["imitation"] - kwargs["good"]).max() > 1e-6 and kwargs["reveal_prob"] < 1
    note(f"largest deviation {off}")
    assert (off > 1e-12) == differs
    np.testing.assert_allclose(library[check], oracle[check], rtol=0, atol=ATOL)


def oracle_log_odds(kwargs):
    """(lambda_t [N^L, L + 1] on reveal-free sequences, P_G, P_W(. | no reveal)) from the oracle."""
    p_g, p_w = oracle_prefixes(kwargs)
    keep = reveal_free(SEQS)[:, L]
    prior_w = kwargs["prior_w"]
    log_odds = np.log(prior_w) - np.log(1 - prior_w) + np.log(p_w[keep]) - np.log(p_g[keep])
    rho = kwargs["reveal_prob"]
    return log_odds, p_g[keep, L], p_w[keep, L] / (1 - rho) ** L


@given(cases(full_support=True))
def test_log_odds_drift(kwargs):
    """Imperfect imitation, full-support g and w~: after any possible prefix ending in normal token u,
    the expected change of lambda = log P(W | x) / P(G | x) over the next token is
    log(1-rho) - KL(g[u] || w~[u]) when G draws it and log(1-rho) + KL(w~[u] || g[u]) when W draws it
    without revealing (oracle, per prefix); summed along the chains these give E[lambda_t] for t <= 5,
    which the library's posteriors reproduce by enumeration."""
    log_odds, weight_g, weight_w = oracle_log_odds(kwargs)
    g, w, rho = kwargs["good"], kwargs["imitation"], kwargs["reveal_prob"]
    drift_g, drift_w = log_odds_drift(g, w, rho)
    for t in range(1, L):
        step = N ** (L - t - 1)  # reveal-free rows: next tokens in sub-blocks of N^(L-t-1)
        change = (log_odds[::step, t + 1] - log_odds[::step, t]).reshape(-1, N)
        previous = all_sequences(N, t)[:, -1]
        np.testing.assert_allclose(np.sum(g[previous] * change, axis=1), drift_g[previous], atol=1e-9)
        np.testing.assert_allclose(np.sum(w[previous] * change, axis=1), drift_w[previous], atol=1e-9)
    for persona, weight in ((0, weight_g), (1, weight_w)):
        oracle_mean = weight @ log_odds
        closed = expected_log_odds(kwargs["prior_w"], rho, g, w, kwargs["start"], L, persona)
        np.testing.assert_allclose(closed, oracle_mean, rtol=0, atol=1e-9)
        library = expected_log_odds_by_enumeration(waluigi(**kwargs), L, persona)
        np.testing.assert_allclose(library, oracle_mean, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------------------
# An intuition the exact theory refutes
# --------------------------------------------------------------------------------------------------


def _find_settings():
    """Search budget scaled from the active profile (the thorough profile searches 20x longer)."""
    return settings(settings(), max_examples=20 * settings().max_examples, database=None, derandomize=True,
                    phases=[Phase.generate, Phase.shrink])


def test_well_behaved_transcripts_can_raise_p_w():
    """Intuition: "as long as no reveal has happened, every token makes W less likely, so a clean
    transcript can only lower P(W) below its prior". Hypothesis finds an imperfect imitation (rho >= 0.05)
    and a reveal-free transcript after which the library's P(W | x) exceeds pi_W (the oracle confirms
    it): one token changes the log-odds by log(1-rho) + log(w~[u, v] / g[u, v]), and where W's
    imitation favours v more than G does, that beats the cost of not revealing."""

    def above_prior(kwargs):
        process = waluigi(**kwargs)
        library = np.asarray(process.posterior(SEQS, "persona"))[..., 1]
        free = reveal_free(SEQS)
        return bool(np.any(free & (library > kwargs["prior_w"] + 1e-6)))

    # rho >= 0.05: the point is that the imitation gap beats a real per-token chance of revealing.
    found = find(cases(full_support=True, min_rho=0.05), above_prior, settings=_find_settings())
    oracle, total = oracle_posterior_w(found)
    rows, cols = np.nonzero(reveal_free(SEQS) & (total > 0) & (np.nan_to_num(oracle) > found["prior_w"] + 1e-6))
    assert len(rows) > 0
    drift_w = log_odds_drift(found["good"], found["imitation"], found["reveal_prob"])[1]
    print(
        f"\nFalsified: pi_W = {found['prior_w']:.3g}, rho = {found['reveal_prob']:.3g}, "
        f"g = {np.round(found['good'], 3).tolist()}, w~ = {np.round(found['imitation'], 3).tolist()}; "
        f"after the reveal-free prefix {SEQS[rows[0], :cols[0]].tolist()} P(W) = {oracle[rows[0], cols[0]]:.4f} "
        f"> pi_W; per-token drift while W speaks unrevealed: {np.round(drift_w, 4).tolist()}"
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: collapse_posterior(1.5, 0.1, 3), "prior_w"),
        (lambda: revealed_by(0.2, -0.1, 3), "reveal_prob"),
        (lambda: collapse_posterior(0.2, 0.1, -1), "length"),
        (lambda: collapse_posterior(0.2, 0.1, 1.5), "length"),
        (lambda: log_odds_drift(np.ones((2, 2)), np.eye(2), 0.1), "good"),
        (lambda: log_odds_drift(np.eye(2), np.ones((2, 3)) / 3, 0.1), "imitation"),
        (lambda: expected_log_odds(0.2, 0.1, np.eye(2), np.eye(2), [0.5, 0.5], 3, persona=2), "persona"),
        (lambda: expected_log_odds(0.0, 0.1, np.eye(2), np.eye(2), [0.5, 0.5], 3, persona=0), "prior_w"),
        (lambda: expected_log_odds(0.2, 0.1, np.eye(2), np.eye(2), [0.5, 0.6], 3, persona=0), "start"),
        (lambda: expected_log_odds_by_enumeration(markov_chain(np.eye(2)), 2, 0), "process"),
        (lambda: expected_log_odds_by_enumeration(waluigi(0.2, 1.0), 2, 1), "reveal_prob"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
