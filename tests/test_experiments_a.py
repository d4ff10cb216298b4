"""The C3, C6 and C7 experiments end to end on tiny grids (train, measure, write, draw), with the exact
parts of their records checked against oracles written here:

- C3: the hash-entropy floor and Q0's consistent fraction from the closed forms k log V and V^-k; Q0's
  Monte Carlo estimates within 5 s.e. of them; corrupted pairs re-checked by decoding the hash table;
  the AUC and threshold-accuracy helpers against brute-force pair counts and cuts.
- C6: the Bayes hallucination rate from (1-e)s / ((1-e)s + e), 0 with marking, the guessing entropy
  from the documented content distribution.
- C7: E[P(M | x_1..x_t)] under D, H and M rollouts against an enumeration of every sequence with a
  NumPy forward filter of the human HMM rebuilt from its documented recipe.
"""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from toymodels import results
from script_loader import EXPERIMENTS, draw_and_check
from script_loader import load_script as _load



@functools.cache
def _script(stem: str):
    return _load(EXPERIMENTS / f"{stem}.py", f"experiment_{stem}")


def _run(stem: str, grid, tmp_path: Path) -> dict:
    from _common import Args

    path = _script(stem).main(Args(profile="quick", out=str(tmp_path / "results"), seed=2), grid)
    assert path == tmp_path / "results" / stem / "quick.json"
    assert str(tmp_path) not in path.read_text()  # no absolute paths recorded
    record = results.read_json(path)
    assert {"code_version", "device", "wall_time_s"} <= set(record["metadata"])
    return record


def _tiny_training(length: int, **size):
    from _common import Training
    from toymodels.runs import ModelSize

    return Training(ModelSize(num_layers=1, d_model=16, num_heads=2, **size), steps=12, batch_size=16, length=length)


def test_experiment_keys_are_apart_from_training_keys():
    """No key an experiment draws its own samples with (held-out sets, rollouts) is a run's
    initialisation, batch or evaluation key: once key(args, 1, t) was the batch key of step t of the run
    with the experiment's seed, and C7's held-out set repeated a training batch."""
    _script("c07_generated_text")  # puts the experiments' folder, home of _common, on sys.path
    from _common import Args, key
    from toymodels.data import EVAL_STREAM, batch_key, init_key, stream_key

    def raw(k):
        return np.asarray(jax.random.key_data(k)).tobytes()

    training = {raw(k) for seed in range(4)
                for k in [init_key(seed), stream_key(seed, EVAL_STREAM)] + [batch_key(seed, t) for t in range(32)]}
    paths = [()] + [(i,) for i in range(8)] + [(i, j) for i in range(8) for j in range(32)]
    experiment = {raw(key(Args(profile="quick", out="-", seed=seed), *path)) for seed in range(4) for path in paths}
    assert len(experiment) == 4 * len(paths) and not training & experiment


# --------------------------------------------------------------------------------------------------
# C3: helpers against brute force, and the experiment
# --------------------------------------------------------------------------------------------------

scores = st.lists(st.integers(-3, 3), min_size=1, max_size=12).map(lambda v: np.asarray(v, np.float64))


@given(scores, scores)
def test_c03_auc_is_the_pairwise_win_rate(positive, negative):
    c3 = _script("c03_hash_payload")
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positive for n in negative)
    assert c3.auc(positive, negative) == pytest.approx(wins / (len(positive) * len(negative)), abs=1e-12)


@given(scores, scores, scores, scores)
def test_c03_threshold_accuracy_uses_the_best_cut_on_the_fit_half(fit_pos, fit_neg, test_pos, test_neg):
    c3 = _script("c03_hash_payload")

    def balanced_accuracy(cut, pos, neg):
        return 0.5 * (np.mean(pos > cut) + np.mean(neg <= cut))

    values = np.unique(np.concatenate([fit_pos, fit_neg]))
    cuts = np.concatenate([[values[0] - 1], (values[:-1] + values[1:]) / 2, [values[-1] + 1]])
    fit_acc = [balanced_accuracy(c, fit_pos, fit_neg) for c in cuts]  # what the helper maximises
    best = max(fit_acc)
    allowed = {balanced_accuracy(c, test_pos, test_neg) for c, a in zip(cuts, fit_acc) if a > best - 1e-12}
    assert min(abs(c3.threshold_accuracy(fit_pos, fit_neg, test_pos, test_neg) - a) for a in allowed) < 1e-12


def test_c03_corrupted_pairs_are_one_digit_inconsistent_copies():
    import jax

    from toymodels.processes.hash_functions import payload_digits

    c3 = _script("c03_hash_payload")
    setting = c3.HashSetting("balanced", 3, 4, 2)
    process = setting.process()
    v, k, m = 3, 2, 4
    pairs = c3.corrupted_pairs(process, k + m + 1, 300, jax.random.key(0))
    table = np.asarray(process.hash_of)
    powers_m, powers_k = v ** np.arange(m - 1, -1, -1), v ** np.arange(k - 1, -1, -1)
    for clean, dirty, position in zip(pairs["clean"], pairs["dirty"], pairs["position"]):
        assert np.flatnonzero(clean != dirty).tolist() == [position]
        assert table[clean[k:k + m] @ powers_m] == clean[:k] @ powers_k  # data: consistent
        assert table[dirty[k:k + m] @ powers_m] != dirty[:k] @ powers_k  # corrupted: not
        assert (payload_digits(v, k, table[clean[k:k + m] @ powers_m]) == clean[:k]).all()
    assert 0.5 < pairs["kept_fraction"] <= 1 and len(pairs["clean"]) == round(300 * pairs["kept_fraction"])


@pytest.mark.slow
def test_c03_experiment_and_drawing(tmp_path, monkeypatch):
    c3 = _script("c03_hash_payload")
    v, k, m = 3, 1, 3
    grid = c3.Grid(hashes=(c3.HashSetting("modular", v, m, k),), training=_tiny_training(k + m + 1), num_seeds=2,
                   num_generations=600, num_verify=200)
    record = _run("c03_hash_payload", grid, tmp_path)
    (setting,) = record["settings"]
    exact = setting["exact"]
    assert exact["balanced"]  # prime V, k <= m: the modular hash is balanced
    assert exact["hash_entropy"] == pytest.approx(k * math.log(v), abs=1e-9)
    assert exact["q0_consistent"] == pytest.approx(v**-k, abs=1e-12) and exact["v_minus_k"] == pytest.approx(v**-k)
    q0 = setting["q0"]
    assert abs(q0["consistent"] - v**-k) < 5 * q0["consistent_stderr"]
    assert abs(q0["forward_kl"] - k * math.log(v)) < 5 * q0["forward_kl_stderr"] + 1e-6
    assert len(setting["models"]) == 2
    for model in setting["models"]:
        assert 0 <= model["consistent"] <= 1 and model["forward_kl"] >= 0
        assert model["exp_minus_forward_kl"] == pytest.approx(math.exp(-model["forward_kl"]))
        assert len(model["forward_kl_per_position"]) == k + m + 1
        verification = model["verification"]
        for name in ("tail", "head_llr", "probe"):
            assert 0 <= verification[name]["auc"] <= 1 and 0 <= verification[name]["accuracy"] <= 1
        assert len(verification["probe_layers"]) == 2  # the embedding and one block
    draw_and_check(tmp_path, monkeypatch, "c03_hash_payload")


# --------------------------------------------------------------------------------------------------
# C6
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_c06_experiment_against_the_closed_form_and_drawing(tmp_path, monkeypatch):
    c6 = _script("c06_offscreen")
    s, e, contents, commands = 0.6, 0.25, 3, 2
    grid = c6.Grid(strip_probs=(s,), empty_probs=(e,), marked=((s, e),), training=_tiny_training(4), num_seeds=2,
                   num_generations=300, num_contents=contents, num_commands=commands, finetune_steps=(2,))
    record = _run("c06_offscreen", grid, tmp_path)
    plain, marked = record["rows"]
    formula = (1 - e) * s / ((1 - e) * s + e)
    assert not plain["marked"] and marked["marked"]
    assert plain["closed_form"] == pytest.approx(formula, abs=1e-12)
    assert plain["bayes"] == pytest.approx(formula, abs=1e-9)
    assert marked["bayes"] == pytest.approx(0.0, abs=1e-12) and marked["closed_form"] == 0.0
    assert marked["bayes_stripped_rate"] == pytest.approx(1.0, abs=1e-9)
    # The documented default p(c | m): 1/2 on content m mod K plus 1/2 uniform; commands uniform.
    entropies = []
    for command in range(commands):
        p = np.full(contents, 0.5 / contents)
        p[command % contents] += 0.5
        entropies.append(-(p * np.log(p)).sum())
    assert marked["bayes_stripped_entropy"] == pytest.approx(np.mean(entropies), abs=1e-9)
    for row in (plain, marked):
        assert row["bayes_copy_entropy"] == pytest.approx(0.0, abs=1e-9)
        assert len(row["per_seed"]) == 2
        for seed in row["per_seed"]:
            assert 0 <= seed["rate"] <= 1 and seed["copy_entropy"] >= 0
            assert seed["generated_count"] > 0 and 0 <= seed["generated"] <= 1
    curve = record["closed_form_curves"]
    s_grid = np.asarray(curve["strip_prob"])
    np.testing.assert_allclose(curve["curves"][0]["rate"], (1 - e) * s_grid / ((1 - e) * s_grid + e), atol=1e-12)
    (finetune,) = record["finetune"]
    assert finetune["bayes_unmarked"] == pytest.approx(formula, abs=1e-12)
    assert [point["steps"] for point in finetune["points"]] == [0, 2]
    for point in finetune["points"]:
        assert len(point["per_seed_after_empty"]) == 2 and all(0 <= r <= 1 for r in point["per_seed_after_empty"])
        assert 0 <= point["rate_after_stripped"]["mean"] <= 1
    draw_and_check(tmp_path, monkeypatch, "c06_offscreen")


# --------------------------------------------------------------------------------------------------
# C7: an enumeration oracle for the reference curves
# --------------------------------------------------------------------------------------------------


def _human_hmm(vocab: int, states: int, concentration: float, seed: int):
    """random_hmm's documented recipe: rows of Dirichlet(concentration) over (token, next state), initial
    Dirichlet(1)."""
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.full(vocab * states, concentration), size=states)
    transitions = (joint / joint.sum(axis=1, keepdims=True)).reshape(states, vocab, states).transpose(1, 0, 2)
    return transitions, rng.dirichlet(np.ones(states))


def _expected_posteriors(vocab, states, concentration, seed, beta, tau, length) -> dict[str, np.ndarray]:
    """E[P(M | x_1..x_t)], t = 1..L, under D, H and M, by enumerating V^L with a NumPy forward filter."""
    transitions, initial = _human_hmm(vocab, states, concentration, seed)
    out = {name: np.zeros(length) for name in ("bayes", "human", "generator")}
    for x in itertools.product(range(vocab), repeat=length):
        belief, log_h, log_m, pis = initial.copy(), 0.0, 0.0, []
        for token in x:
            p = np.einsum("i,vij->v", belief, transitions)
            m = p ** (1 / tau) / np.sum(p ** (1 / tau))
            log_h, log_m = log_h + math.log(p[token]), log_m + math.log(m[token])
            belief = belief @ transitions[token] / p[token]
            pis.append(beta * math.exp(log_m) / ((1 - beta) * math.exp(log_h) + beta * math.exp(log_m)))
        h, g = math.exp(log_h), math.exp(log_m)
        for name, weight in (("bayes", (1 - beta) * h + beta * g), ("human", h), ("generator", g)):
            out[name] += weight * np.asarray(pis)
    return out


@pytest.mark.slow
def test_c07_experiment_against_enumeration_and_drawing(tmp_path, monkeypatch):
    c7 = _script("c07_generated_text")
    vocab, states, concentration, seed, beta, tau, length = 3, 2, 0.5, 1, 0.3, 1.6, 6
    grid = c7.Grid(temperatures=(("flatter", tau),), beta=beta, vocab_size=vocab, num_states=states,
                   concentration=concentration, human_seed=seed,
                   training=_tiny_training(length), num_seeds=2, num_rollouts=300, num_reference=4000, num_heldout=100)
    record = _run("c07_generated_text", grid, tmp_path)
    (row,) = record["rows"]
    exact = _expected_posteriors(vocab, states, concentration, seed, beta, tau, length)
    np.testing.assert_allclose(exact["bayes"], beta, atol=1e-12)  # the oracle itself: a martingale
    assert np.all(exact["human"] < beta) and np.all(exact["generator"] > beta)
    np.testing.assert_allclose(row["closed_form_bayes"], beta)
    for name in ("bayes", "human", "generator"):
        # 5 s.e. at each of L = 6 positions: a false alarm has probability below 1e-5.
        assert np.all(np.abs(np.asarray(row[name]) - exact[name]) < 5 * np.asarray(row[f"{name}_stderr"]) + 1e-9), name
    model = np.asarray(row["model"])
    assert model.shape == (2, length) and np.all((model >= 0) & (model <= 1))
    draw_and_check(tmp_path, monkeypatch, "c07_generated_text")
