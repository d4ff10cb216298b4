"""The Waluigi family (C10) against brute-force enumeration and the closed forms of CLAIMS.md.

The oracle `persona_probs` computes P(x | G) and P(x | W) straight from the definitions of the family
(a loop over the unobserved token before the document, then over the tokens), with no hidden-state
machinery; posteriors are then Bayes' rule. Everything the library returns is compared with it or with
a closed form: pi_W (1-rho)^n / (pi_G + pi_W (1-rho)^n), pi_W (1 - (1-rho)^n), the martingale identity,
and log(1-rho) -/+ KL for imperfect imitation.

Shapes: V in {3, 4} (S = 7, 10), sequences of length 4 enumerated in one padded batch of 625 rows, so
each test compiles at most a handful of programs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from log_checks import assert_log_matches

from toymodels.processes.registry import catalog, make_process
from toymodels.processes.waluigi import waluigi

LENGTH = 4
ROWS = 625  # (V + 1)^4 for V = 4, the largest enumeration; smaller ones are padded by repetition.
ATOL = 1e-12  # posteriors: float64 round-off on length-4 products is ~1e-15


# --------------------------------------------------------------------------------------------------
# The oracle: the family's definition, read literally
# --------------------------------------------------------------------------------------------------


def persona_probs(params: dict, x) -> tuple[float, float]:
    """(P(x | G), P(x | W)) from the definition; ids >= V are impossible."""
    g, w, after, start, rho = (
        params["g"],
        params["w"],
        params["after"],
        params["start"],
        params["rho"],
    )
    normal = g.shape[0]
    reveal = normal
    prob_g = prob_w = 0.0
    for before in range(normal):
        p, prev = start[before], before
        for token in x:
            if token >= normal:  # G never reveals, and ids >= V are impossible
                p = 0.0
                break
            p, prev = p * g[prev, token], token
        prob_g += p
        p, prev, revealed = start[before], before, False
        for token in x:
            if token > reveal:
                p = 0.0
                break
            if revealed:
                p *= after[prev, token]
            elif token == reveal:
                p *= rho
                revealed = True
            else:
                p *= (1 - rho) * w[prev, token]
            prev = token
        prob_w += p
    return prob_g, prob_w


def oracle(params: dict, seqs: np.ndarray) -> dict:
    """Per sequence and prefix length t = 0..L: P(x_<=t), P(W | x_<=t) and P(revealed | x_<=t), holding
    the posterior at the last possible prefix after an impossible one (DESIGN.md)."""
    n, length = seqs.shape
    prob = np.zeros((n, length + 1))
    post_w = np.zeros((n, length + 1))
    post_revealed = np.zeros((n, length + 1))
    for i, x in enumerate(seqs):
        for t in range(length + 1):
            pg, pw = persona_probs(params, x[:t])
            joint_g, joint_w = (1 - params["prior_w"]) * pg, params["prior_w"] * pw
            prob[i, t] = joint_g + joint_w
            if prob[i, t] > 0:
                post_w[i, t] = joint_w / prob[i, t]
                post_revealed[i, t] = float(params["normal"] in x[:t])
            else:
                post_w[i, t], post_revealed[i, t] = post_w[i, t - 1], post_revealed[i, t - 1]
    return {"prob": prob, "post_w": post_w, "post_revealed": post_revealed}


def enumerate_sequences(vocab: int, impossible: bool) -> np.ndarray:
    symbols = range(vocab + 1 if impossible else vocab)
    seqs = np.array(list(itertools.product(symbols, repeat=LENGTH)), np.int64)
    return seqs[np.arange(ROWS) % len(seqs)], len(seqs)


def library(process, seqs) -> dict:
    """log P(x_<=t) [N, L+1] and the two posteriors [N, L+1] from the library."""
    log_cond = np.asarray(process.log_conditionals(seqs))
    vocab = log_cond.shape[-1]
    picked = np.take_along_axis(log_cond, np.minimum(seqs, vocab - 1)[..., None], axis=-1)[..., 0]
    picked = np.where(seqs < vocab, picked, -np.inf)
    log_prefix = np.concatenate([np.zeros((len(seqs), 1)), np.cumsum(picked, axis=1)], axis=1)
    persona = np.asarray(process.posterior(seqs, "persona"))
    return {
        "log_prefix": log_prefix,
        "post_g": persona[..., 0],
        "post_w": persona[..., 1],
        "post_revealed": np.asarray(process.posterior(seqs, "revealed"))[..., 1],
    }


# --------------------------------------------------------------------------------------------------
# Random instances: Hypothesis draws sizes, options and a seed; NumPy builds the arrays
# --------------------------------------------------------------------------------------------------


def random_rows(rng, rows: int, width: int, sparse: bool) -> np.ndarray:
    out = rng.dirichlet(np.full(width, 0.7), size=rows)
    if sparse:
        keep = rng.random((rows, width)) < 0.5
        keep[np.arange(rows), rng.integers(width, size=rows)] = True
        out = out * keep
    return out / out.sum(axis=1, keepdims=True)


probability = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.01, 0.99))


@st.composite
def instances(draw, exact: bool = False, full_support: bool = False):
    """(keyword arguments of waluigi, the same parameters resolved for the oracle)."""
    vocab = draw(st.sampled_from([3, 4]))
    normal = vocab - 1
    prior_w, rho = draw(probability), draw(probability)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sparse = not full_support and draw(st.booleans())
    g = random_rows(rng, normal, normal, sparse)
    kwargs = dict(prior_w=prior_w, reveal_prob=rho, good=g)
    kind = "exact" if exact else draw(st.sampled_from(["exact", "noise", "matrix"]))
    if kind == "exact":
        w = g
    elif kind == "noise":
        # (eps >= 1e-3: a tinier eps makes probabilities of length-4 sequences underflow in the
        # oracle's plain products while the library, which normalises, still resolves them.)
        eps = draw(st.one_of(st.just(0.0), st.floats(1e-3, 1.0)))
        kwargs["imitation"] = eps
        w = (1 - eps) * g + eps / normal
    else:
        w = random_rows(rng, normal, normal, sparse)
        kwargs["imitation"] = w
    after = np.full((vocab, vocab), 1 / vocab)
    if draw(st.booleans()):
        after = random_rows(rng, vocab, vocab, sparse)
        kwargs["after_reveal"] = after
    start = np.full(normal, 1 / normal)
    if draw(st.booleans()):
        start = random_rows(rng, 1, normal, sparse)[0]
        kwargs["start"] = start
    params = dict(
        g=g, w=w, after=after, start=start, rho=rho, prior_w=prior_w, normal=normal, vocab=vocab
    )
    return kwargs, params


# --------------------------------------------------------------------------------------------------
# Exactness against the oracle
# --------------------------------------------------------------------------------------------------


@given(instances())
def test_matches_enumeration(instance):
    """log P(x_<=t), P(W | x_<=t) and P(revealed | x_<=t) equal the oracle for every sequence of
    (V+1)^4 (id V is impossible) and every prefix; never NaN."""
    kwargs, params = instance
    process = waluigi(**kwargs)
    assert (
        process.info["reveal_token"] == params["normal"] and process.vocab_size == params["vocab"]
    )
    seqs, count = enumerate_sequences(params["vocab"], impossible=True)
    lib, ref = library(process, seqs), oracle(params, seqs[:count])
    assert_log_matches(lib["log_prefix"][:count], ref["prob"])
    np.testing.assert_allclose(lib["post_w"][:count], ref["post_w"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(
        lib["post_revealed"][:count], ref["post_revealed"], rtol=0, atol=ATOL
    )


@given(instances(exact=True))
def test_collapse_formula(instance):
    """Exact imitation: for every possible prefix of n non-reveal tokens, P(W | x) = pi_W (1-rho)^n /
    (pi_G + pi_W (1-rho)^n), whatever the tokens; from a reveal on, P(G) = 0 exactly (and P(W) = 1 up to
    the rounding of normalising the belief)."""
    kwargs, params = instance
    process = waluigi(**kwargs)
    seqs, count = enumerate_sequences(params["vocab"], impossible=False)
    lib = library(process, seqs)
    pi_w, rho, reveal = params["prior_w"], params["rho"], params["normal"]
    for x, log_prefix, post_g, post_w in zip(
        seqs[:count], lib["log_prefix"], lib["post_g"], lib["post_w"]
    ):
        for n in range(LENGTH + 1):
            if not np.isfinite(log_prefix[n]):
                break
            if reveal in x[:n]:
                assert post_g[n] == 0.0 and abs(post_w[n] - 1.0) <= 1e-15
            else:
                expected = pi_w * (1 - rho) ** n / ((1 - pi_w) + pi_w * (1 - rho) ** n)
                assert abs(post_w[n] - expected) <= ATOL


@given(instances())
def test_reveal_probability_and_martingale(instance):
    """Under exact generation (any imitation): P(revealed by n) = pi_W (1 - (1-rho)^n), both as the mass
    of sequences holding r among their first n tokens and as the mean posterior on "revealed"; the mean
    posterior on W is pi_W at every length n (a martingale)."""
    kwargs, params = instance
    process = waluigi(**kwargs)
    seqs, count = enumerate_sequences(params["vocab"], impossible=False)
    seqs = seqs[:count]
    lib = library(process, np.concatenate([seqs, seqs[np.arange(ROWS - count) % count]]))
    prob = np.exp(lib["log_prefix"][:count, -1])
    assert abs(prob.sum() - 1) <= 1e-12
    pi_w, rho, reveal = params["prior_w"], params["rho"], params["normal"]
    for n in range(LENGTH + 1):
        expected = pi_w * (1 - (1 - rho) ** n)
        revealed_by_n = (seqs[:, :n] == reveal).any(axis=1)
        assert abs(prob[revealed_by_n].sum() - expected) <= 1e-12
        assert abs(prob @ lib["post_revealed"][:count, n] - expected) <= 1e-12
        assert abs(prob @ lib["post_w"][:count, n] - pi_w) <= 1e-12


def kl(p, q) -> float:
    return float(np.sum(p * np.log(p / q)))


@given(instances(full_support=True), st.floats(0.01, 0.99), st.floats(0.0, 0.95))
def test_log_odds_drift(instance, prior_w, rho):
    """Imperfect imitation, full-support g and w~, rho < 1. With lambda_t = log P(W | x_<=t) / P(G | x_<=t)
    from the library, for every unrevealed possible prefix x_<=t (t = 1..3) with last token u:

        sum_v g[u, v]  (lambda_{t+1}(x_<=t v) - lambda_t) = log(1-rho) - KL(g[u] || w~[u])   (G generates)
        sum_v w~[u, v] (lambda_{t+1}(x_<=t v) - lambda_t) = log(1-rho) + KL(w~[u] || g[u])   (W generates,
                                                                       conditioned on not revealing now)
    with v over the normal tokens. At t = 0 the previous token is the unobserved x_0 ~ start, and the same
    holds with g[u], w~[u] replaced by the first-token laws start @ g, start @ w~."""
    kwargs, params = instance
    process = waluigi(**{**kwargs, "prior_w": prior_w, "reveal_prob": rho})
    vocab, normal, g, w = params["vocab"], params["normal"], params["g"], params["w"]
    seqs, count = enumerate_sequences(vocab, impossible=False)
    lib = library(process, seqs)
    # Both posteriors from the library (not 1 - P(W)), so the log-odds keep their relative precision.
    # Sequences holding a reveal have P(G) = 0 (log-odds +inf); the checks below never read them.
    with np.errstate(divide="ignore"):
        log_odds = np.log(lib["post_w"][:count]) - np.log(lib["post_g"][:count])
    note(
        f"log-odds range {log_odds[np.isfinite(log_odds)].min()} {log_odds[np.isfinite(log_odds)].max()}"
    )
    log_odds = log_odds.reshape((vocab,) * LENGTH + (LENGTH + 1,))
    first_g, first_w = params["start"] @ g, params["start"] @ w
    rows = {None: (first_g, first_w)} | {u: (g[u], w[u]) for u in range(normal)}
    for t in range(LENGTH):
        for prefix in itertools.product(range(normal), repeat=t):
            here = log_odds[prefix + (0,) * (LENGTH - t)][t]
            change = (
                np.array(
                    [
                        log_odds[prefix + (v,) + (0,) * (LENGTH - t - 1)][t + 1]
                        for v in range(normal)
                    ]
                )
                - here
            )
            g_row, w_row = rows[prefix[-1] if t else None]
            assert abs(g_row @ change - (np.log1p(-rho) - kl(g_row, w_row))) <= 1e-10
            assert abs(w_row @ change - (np.log1p(-rho) + kl(w_row, g_row))) <= 1e-10


# --------------------------------------------------------------------------------------------------
# Deterministic corners and long sequences
# --------------------------------------------------------------------------------------------------


def test_corners():
    """rho = 0: W is G (posterior frozen at the prior, r impossible). rho = 1: the first token is r
    exactly when W is on stage. prior_w in {0, 1}: the posterior never moves. A deterministic G.
    Impossible ids keep the last possible posterior. (Every call takes the padded [ROWS, 4] batch of the
    enumeration tests, so nothing new is compiled.)"""
    seqs = np.array([[0, 1, 1, 0], [1, 2, 0, 2], [2, 2, 2, 2], [0, 3, 0, 1]])
    padded = seqs[np.arange(ROWS) % 4]

    def persona(process):
        return np.asarray(process.posterior(padded, "persona"))[:4]

    def log_prob(process, batch=padded):
        return library(process, batch)["log_prefix"][:4, -1]

    frozen = waluigi(prior_w=0.3, reveal_prob=0.0)
    np.testing.assert_allclose(persona(frozen)[..., 1], 0.3, rtol=0, atol=1e-15)
    assert np.all(np.isneginf(log_prob(frozen)[1:]))

    eager = waluigi(prior_w=0.3, reveal_prob=1.0)
    first = np.exp(np.asarray(eager.log_conditionals(padded))[0, 0])
    np.testing.assert_allclose(first, [0.35, 0.35, 0.3], rtol=0, atol=1e-15)
    post = persona(eager)
    assert np.all(post[0, 1:, 1] == 0.0) and np.all(post[2, 1:, 0] == 0.0)

    for prior_w in (0.0, 1.0):
        process = waluigi(prior_w=prior_w, reveal_prob=0.4, imitation=0.5)
        assert np.all(persona(process)[..., 1 - int(prior_w)] == 0.0)
    assert np.isneginf(log_prob(waluigi(prior_w=0.0, reveal_prob=0.4))[1])

    # A deterministic G (0 -> 1 -> 0 ...) started after token 1: G's only sequence is 0 1 0 1.
    det = waluigi(prior_w=0.5, reveal_prob=0.5, good=[[0.0, 1.0], [1.0, 0.0]], start=[0.0, 1.0])
    log_p = log_prob(
        det, np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 1, 0], [0, 1, 0, 1]])[np.arange(ROWS) % 4]
    )
    np.testing.assert_allclose(np.exp(log_p[0]), 0.5 + 0.5 * 0.5**4, rtol=1e-12)
    assert np.all(np.isneginf(log_p[1:3]))

    process = waluigi(prior_w=0.3, reveal_prob=0.2)
    post = persona(process)[3, :, 1]
    assert post[2] == post[3] == post[4] == post[1]  # id 3 is impossible: the belief stays
    assert np.isneginf(log_prob(process)[3])


def test_long_sequences():
    """10^4 tokens: no NaN; a sequence of normal tokens follows the closed form at every length (the W
    mass underflows smoothly, never to NaN); after a reveal P(G) = 0 exactly to the end. Every sequence
    of normal tokens is possible under the default full-support G, and every sequence at all once W has
    revealed (uniform after_reveal), so random token arrays serve as documents without sampling."""
    length, rho = 10_000, 1e-3
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 2, size=(4, length))
    for row, first_reveal in zip(tokens[1:], (0, 17, 5_000)):
        row[first_reveal] = 2
        row[first_reveal:][rng.random(length - first_reveal) < 0.3] = 2
    n = np.arange(length + 1)
    expected = 0.5 * (1 - rho) ** n / (0.5 + 0.5 * (1 - rho) ** n)
    for imitation in (None, 0.3):
        process = waluigi(prior_w=0.5, reveal_prob=rho, imitation=imitation)
        log_p = np.asarray(process.log_prob(tokens))
        post = np.asarray(process.posterior(tokens, "persona"))
        assert np.all(np.isfinite(log_p)) and not np.any(np.isnan(post))
        if imitation is None:
            np.testing.assert_allclose(post[0, :, 1], expected, rtol=1e-9, atol=0)
        for row, x in zip(post[1:], tokens[1:]):
            first = np.flatnonzero(x == 2)[0]
            assert np.all(row[first + 1 :, 0] == 0.0)
            np.testing.assert_allclose(row[first + 1 :, 1], 1.0, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------------------------------
# The boundary and the registry
# --------------------------------------------------------------------------------------------------

GOOD = [[0.5, 0.5], [0.2, 0.8]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prior_w=-0.1, reveal_prob=0.1), "prior_w"),
        (dict(prior_w=1.5, reveal_prob=0.1), "prior_w"),
        (dict(prior_w=float("nan"), reveal_prob=0.1), "prior_w"),
        (dict(prior_w=0.2, reveal_prob=1.1), "reveal_prob"),
        (dict(prior_w=0.2, reveal_prob="a lot"), "reveal_prob"),
        (dict(prior_w=0.2, reveal_prob=0.1, vocab_size=1), "vocab_size"),
        (dict(prior_w=0.2, reveal_prob=0.1, vocab_size=2.5), "vocab_size"),
        (dict(prior_w=0.2, reveal_prob=0.1, good=GOOD, vocab_size=4), "vocab_size"),
        (dict(prior_w=0.2, reveal_prob=0.1, good=[[0.5, 0.6], [0.2, 0.8]]), "good"),
        (dict(prior_w=0.2, reveal_prob=0.1, good=[[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]]), "good"),
        (dict(prior_w=0.2, reveal_prob=0.1, good=[[-0.5, 1.5], [0.2, 0.8]]), "good"),
        (dict(prior_w=0.2, reveal_prob=0.1, good=GOOD, imitation=1.2), "imitation"),
        (dict(prior_w=0.2, reveal_prob=0.1, good=GOOD, imitation=[[1.0, 0.0]]), "imitation"),
        (
            dict(prior_w=0.2, reveal_prob=0.1, good=GOOD, imitation=[[0.9, 0.0], [0.2, 0.8]]),
            "imitation",
        ),
        (dict(prior_w=0.2, reveal_prob=0.1, good=GOOD, after_reveal=GOOD), "after_reveal"),
        (dict(prior_w=0.2, reveal_prob=0.1, after_reveal=np.full((3, 3), 0.3)), "after_reveal"),
        (dict(prior_w=0.2, reveal_prob=0.1, start=[1.0, 0.0, 0.0]), "start"),
        (dict(prior_w=0.2, reveal_prob=0.1, start=[0.7, 0.7]), "start"),
        (dict(prior_w=0.2, reveal_prob=0.1, start=[np.nan, 1.0]), "start"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        waluigi(**kwargs)


def test_registry():
    """The registered example is the C10 toy with a reveal token at the last id, and make_process passes
    keyword arguments through."""
    process = catalog()["waluigi"]
    assert process.vocab_size == 3 and process.num_states == 7
    assert process.info["reveal_token"] == 2 and process.info["token_labels"] == (
        "n0",
        "n1",
        "reveal",
    )
    assert process.latents == {"persona": ("G", "W"), "revealed": ("no", "yes")}
    other = make_process("waluigi", prior_w=0.5, reveal_prob=0.3, vocab_size=5)
    assert other.vocab_size == 5 and other.info["reveal_token"] == 4
    np.testing.assert_allclose(
        np.asarray(other.posterior(np.zeros((1, 0), np.int64), "persona"))[0, 0], [0.5, 0.5]
    )
