"""The C1 and C11 experiments end to end on tiny grids (train, measure, write, draw), with the exact parts
of their records checked against brute-force oracles written here with NumPy and itertools:

- C1: the authors rebuilt from the generators' documented recipes; per-position expected
  KL from the Bayes mixture to each single author and to the MAP author, and the hierarchy's expected
  posterior entropies, all by enumerating every sequence.
- C11: the factorisation numbers of a coupled dialog whose joint posterior has a closed form.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toymodels import results
from script_loader import EXPERIMENTS, draw_and_check
from script_loader import load_script as _load



@functools.cache
def _c11():
    return _load(EXPERIMENTS / "c11_several_minds.py", "experiment_c11_several_minds")


# --------------------------------------------------------------------------------------------------
# Oracles: Markov authors rebuilt from the documented recipes, everything by enumeration
# --------------------------------------------------------------------------------------------------


def _rows(rng, v):
    return rng.dirichlet(np.ones(v), size=v)


def _unigram_authors(num_authors, v, closeness, seed):
    """(first-token distribution, kernel) per author of the script's order-0 recipe: i.i.d. tokens."""
    rng = np.random.default_rng(seed)
    shared = rng.dirichlet(np.ones(v))
    rows = [closeness * shared + (1 - closeness) * rng.dirichlet(np.ones(v)) for _ in range(num_authors)]
    return [(row, np.tile(row, (v, 1))) for row in rows]


def _hierarchical_authors(num_sources, per_source, v, source_closeness, author_closeness, seed):
    """(uniform first token, kernel) per author of hierarchical_markov_authors' documented recipe, in
    global order (source-major), and each author's source."""
    rng = np.random.default_rng(seed)
    common = _rows(rng, v)
    authors, source_of = [], []
    for s in range(num_sources):
        base = source_closeness * common + (1 - source_closeness) * _rows(rng, v)
        for _ in range(per_source):
            authors.append((np.full(v, 1 / v), author_closeness * base + (1 - author_closeness) * _rows(rng, v)))
            source_of.append(s)
    return authors, np.array(source_of)


def _author_likelihoods(authors, v, length):
    """All sequences [V^n, n] and p_a(x_<=t) for every author, sequence and t = 0..n ([K, V^n, n + 1])."""
    seqs = np.array(list(itertools.product(range(v), repeat=length)))
    like = np.ones((len(authors), len(seqs), length + 1))
    for a, (first, kernel) in enumerate(authors):
        for t in range(length):
            step = first[seqs[:, 0]] if t == 0 else kernel[seqs[:, t - 1], seqs[:, t]]
            like[a, :, t + 1] = like[a, :, t] * step
    return seqs, like


def _entropy(p, axis):
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=axis)


def _kl(p, q):
    return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0), axis=-1)


def _mixture_kl_oracle(authors, v, length):
    """Per-position E_x KL(p(.|x<t) || q(.|x<t)), t = 0..n-1, for q = each author and the MAP author
    (uniform prior)."""
    seqs, like = _author_likelihoods(authors, v, length)
    weight = like[:, :, -1].mean(0)  # uniform prior: P(x) = mean_a p_a(x)
    singles, map_author = np.zeros((len(authors), length)), np.zeros(length)
    for t in range(length):
        post = like[:, :, t] / like[:, :, t].sum(0)  # [K, V^n]
        if t == 0:
            own = np.stack([np.broadcast_to(first, (len(seqs), v)) for first, _ in authors])  # [K, V^n, V]
        else:
            own = np.stack([kernel[seqs[:, t - 1]] for _, kernel in authors])
        bayes = np.einsum("ks,ksv->sv", post, own)
        singles[:, t] = [weight @ _kl(bayes, own[a]) for a in range(len(authors))]
        chosen = np.argmax(post, axis=0)  # ties (the uniform prior at t = 0) go to the first author
        map_author[t] = weight @ _kl(bayes, own[chosen, np.arange(len(seqs))])
    return singles, map_author


def _hierarchy_oracle(authors, source_of, v, length):
    """E H(source | x_<=t) and E H(author | source, x_<=t), t = 0..n, uniform priors."""
    _, like = _author_likelihoods(authors, v, length)
    weight = like[:, :, -1].mean(0)
    post = like / like.sum(0)  # [K, V^n, n + 1]
    post_source = np.stack([post[source_of == s].sum(0) for s in np.unique(source_of)])
    h_source = weight @ _entropy(post_source, axis=0)
    return h_source, weight @ _entropy(post, axis=0) - h_source


# --------------------------------------------------------------------------------------------------
# C1
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_c01_experiment_against_enumeration_and_drawing(tmp_path, monkeypatch):
    c1 = _load(EXPERIMENTS / "c01_posterior_mixture.py", "experiment_c01_posterior_mixture")
    from _common import Args, Training

    from toymodels.runs import ModelSize

    length = 6
    grid = c1.Grid(mixture=c1.Mixture(num_authors=3, vocab_size=3, closeness=0.3, process_seed=2),
                   training=Training(ModelSize(num_layers=1, d_model=16, num_heads=2), steps=10, batch_size=16, length=length),
                   num_seeds=2, heldout=400, ridge=1e-3,
                   hierarchy=c1.Hierarchy(num_sources=2, authors_per_source=2, vocab_size=3, source_closeness=0.0,
                                          author_closeness=0.9, process_seed=1, enum_length=5, mc_length=12, num_samples=400))
    path = c1.main(Args(profile="quick", out=str(tmp_path / "results"), seed=3), grid)
    assert path == tmp_path / "results" / "c01_posterior_mixture" / "quick.json"
    assert str(tmp_path) not in path.read_text()
    record = results.read_json(path)

    # Single authors and the MAP author against the enumerated expectation (held-out Monte Carlo, 5 s.e.;
    # 4 curves x 6 positions). At t = 0 the MAP author is author 0 (a tie); its KL there is not 0.
    singles, map_author = _mixture_kl_oracle(_unigram_authors(3, 3, 0.3, 2), 3, length)
    measured = [record["single"][f"author{a}"] for a in range(3)] + [record["map_author"]]
    for exact, got in zip(list(singles) + [map_author], measured):
        kl, se = np.asarray(got["kl"]), np.asarray(got["stderr"])
        assert np.all(np.abs(kl - exact) <= 5 * se + 1e-9), (kl, exact, se)
    assert record["best_single"] == min(record["single"], key=lambda a: record["single"][a]["per_token"])

    model = record["transformer"]
    assert np.asarray(model["kl_per_seed"]).shape == (2, length)
    assert np.all(np.isfinite(model["kl_per_seed"])) and np.min(model["kl_per_seed"]) >= 0
    assert np.allclose(model["kl"], np.mean(model["kl_per_seed"], axis=0))
    for row in record["probes"]["per_layer"]:  # embedding + 1 block
        assert row["r2"]["n"] == 2 and row["r2"]["mean"] <= 1 + 1e-9 and row["r2_shuffled"]["mean"] <= 1 + 1e-9
    assert len(record["probes"]["per_layer"]) == 2

    # The hierarchy: exact curves equal the oracle; Monte Carlo within 5 s.e. of it (2 curves x 5 lengths);
    # both exact curves never increase.
    authors, source_of = _hierarchical_authors(2, 2, 3, 0.0, 0.9, 1)
    h_source, h_within = _hierarchy_oracle(authors, source_of, 3, 5)
    exact, mc = record["hierarchy"]["exact"], record["hierarchy"]["monte_carlo"]
    np.testing.assert_allclose(exact["source"], h_source, atol=1e-9)
    np.testing.assert_allclose(exact["within"], h_within, atol=1e-9)
    assert np.all(np.diff(h_source) <= 1e-12) and np.all(np.diff(h_within) <= 1e-12)
    for name, oracle in (("source", h_source), ("within", h_within)):
        assert mc[name][0] == pytest.approx(math.log(2), abs=1e-12)
        got, se = np.asarray(mc[name])[1:6], np.asarray(mc[f"{name}_stderr"])[1:6]
        assert np.all(np.abs(got - oracle[1:]) <= 5 * se + 1e-9)

    draw_and_check(tmp_path, monkeypatch, "c01_posterior_mixture")


# --------------------------------------------------------------------------------------------------
# C11
# --------------------------------------------------------------------------------------------------

_AGREE, _DIFFER, _HALF = [[0.9, 0.1]] * 2, [[0.1, 0.9]] * 2, [[0.5, 0.5]] * 2


@given(pa=st.floats(0.05, 0.95), pb=st.floats(0.05, 0.95), signal=st.floats(0.55, 0.95))
def test_c11_factorisation_numbers_closed_form(pa, pb, signal):
    """A's first token says whether a == b (token 0 with probability `signal` if so); B's is uniform. After
    one token the joint posterior is proportional to prior_a(a) prior_b(b) P(x_1 | a == b): its distance
    to the product of its marginals is computed here in closed form and compared with the script's."""
    import jax

    from toymodels.processes.dialog import coupled_dialog, dialog

    c11 = _c11()
    agree, differ = [[signal, 1 - signal]] * 2, [[1 - signal, signal]] * 2
    prior_a, prior_b = np.array([pa, 1 - pa]), np.array([pb, 1 - pb])
    process = coupled_dialog([[agree, differ], [differ, agree]], [[_HALF] * 2] * 2, prior_a, prior_b, turn_length=1)
    tokens = np.array([[0, 1], [1, 0]])
    check = c11.factorisation(process, tokens)

    expected_tv, expected_mi, expected_max = [], [], 0.0
    for first in (0, 1):
        like = np.array([[signal if (a == b) == (first == 0) else 1 - signal for b in (0, 1)] for a in (0, 1)])
        joint = prior_a[:, None] * prior_b[None] * like
        joint /= joint.sum()
        product = joint.sum(1)[:, None] * joint.sum(0)[None]
        expected_tv.append(0.5 * np.abs(joint - product).sum())
        expected_mi.append(np.sum(joint * np.log(joint / product)))
        expected_max = max(expected_max, np.abs(joint - product).max())
    # t = 0: the prior factorises; t = 1 above; t = 2: B's uniform token adds nothing.
    np.testing.assert_allclose(check["tv"], [0.0, np.mean(expected_tv), np.mean(expected_tv)], atol=1e-12)
    np.testing.assert_allclose(check["mutual_information"], [0.0, np.mean(expected_mi), np.mean(expected_mi)], atol=1e-12)
    assert check["max_abs"] == pytest.approx(expected_max, abs=1e-12)

    independent = dialog([agree, differ], [_HALF, [[0.3, 0.7]] * 2], prior_a, prior_b, turn_length=1)
    draws = independent.sample(jax.random.key(0), 16, 6)
    assert c11.factorisation(independent, draws)["max_abs"] < 1e-12


@pytest.mark.slow
def test_c11_experiment_and_drawing(tmp_path, monkeypatch):
    c11 = _c11()
    from _common import Args, Training

    from toymodels.runs import ModelSize

    length = 8
    grid = c11.Grid(dialog=c11.Dialog(num_types_a=2, num_types_b=2, vocab_size=3, turn_length=2, process_seed=0),
                    training=Training(ModelSize(num_layers=1, d_model=16, num_heads=2), steps=10, batch_size=16, length=length),
                    num_seeds=2, heldout=200, ridge=1e-3)
    path = c11.main(Args(profile="quick", out=str(tmp_path / "results"), seed=5), grid)
    record = results.read_json(path)
    assert str(tmp_path) not in path.read_text()

    checks = record["factorisation"]
    assert checks["dialog"]["max_abs"] < 1e-12 and checks["dialog"]["mean_mutual_information"] < 1e-12
    assert checks["coupled_dialog"]["max_abs"] > 1e-3  # a generic coupled dialog does not factorise
    assert checks["coupled_dialog"]["tv"][0] == pytest.approx(0.0, abs=1e-15)  # the prior does
    for name in c11.TARGETS:
        rows = record["probes"]["per_layer"][name]
        assert len(rows) == 2 and all(r["r2"]["n"] == 2 and r["r2"]["mean"] <= 1 + 1e-9 for r in rows)
    for name in c11.TARGETS:
        for who in "AB":
            rows = record["probes"]["by_next_speaker"][name][who]
            assert len(rows) == 2 and all(r["n"] == 2 and r["mean"] <= 1 + 1e-9 for r in rows)
    example = record["example"]
    for name in ("type_a", "type_b"):
        exact = np.asarray(example["exact"][name])
        assert exact.shape == (length, 2) and np.allclose(exact.sum(-1), 1)
        assert np.asarray(example["decoded"][name]).shape == (length, 2)

    draw_and_check(tmp_path, monkeypatch, "c11_several_minds")
