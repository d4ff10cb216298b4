"""The C5, C8, C9, C10 and C12 experiments end to end on tiny grids: train, measure, write, draw.

`test_c08_through_sweep_figure_and_table` is the one end-to-end experiment CI runs (not slow): C8 trains
through the sweep runner, the result record is checked against the sweep's own result files, the figure
and table are drawn from the record alone, and a rerun trains nothing. The other experiments run their
reduced grids under the `slow` marker; their exact reference curves are checked against closed forms.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from script_loader import load_script

from toymodels.results import read_json
from toymodels.runs import ModelSize

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "scripts" / "experiments"
TINY = ModelSize(num_layers=1, d_model=8, num_heads=2, mlp_width=16)


def _load(path: Path, name: str):
    """The script at `path` as module `name`, executed once per test session."""
    return sys.modules[name] if name in sys.modules else load_script(path, name)


def _experiment(stem: str):
    return _load(EXPERIMENTS / f"{stem}.py", f"experiment_{stem}")


def _draw(tmp_path: Path, stem: str) -> list[Path]:
    if str(ROOT / "paper") not in sys.path:
        sys.path.insert(0, str(ROOT / "paper"))
    plot = _load(ROOT / "paper" / "plots" / f"{stem}.py", f"plots.{stem}")
    paths = plot.draw(read_json(tmp_path / "results" / stem / "quick.json"), tmp_path / "paper" / "figures",
                      tmp_path / "paper" / "tables")
    for suffix in ("pdf", "png"):
        assert (tmp_path / "paper" / "figures" / f"{stem}.{suffix}").stat().st_size > 0
    for suffix in ("md", "tex"):
        assert (tmp_path / "paper" / "tables" / f"{stem}.{suffix}").stat().st_size > 0
    return paths


def _args(module, tmp_path: Path):
    return module.Args(profile="quick", out=str(tmp_path / "results"), seed=0)


def _training(module, steps: int, length: int, batch_size: int = 16):
    return module.Training(TINY, steps=steps, batch_size=batch_size, length=length)


def test_c08_through_sweep_figure_and_table(tmp_path):
    """C8 on a tiny grid runs through the sweep runner: one result file per (process, mode, seed); the
    record's per-seed KLs are those files' KLs, its gaps are the paired differences, the figure and
    table are drawn from the record, a rerun reuses every finished run (no new result files), and a
    rerun with an edited grid reads only its own runs, not the earlier grid's beside them."""
    c08 = _experiment("c08_myopia")
    grid = c08.Grid(vocab_size=3, delay=2, num_seeds=2, training=_training(c08, steps=4, length=6))
    c08.main(_args(c08, tmp_path), grid)
    record = read_json(tmp_path / "results" / "c08_myopia" / "quick.json")
    sweep_root = tmp_path / "results" / "c08_myopia" / "quick-sweep"
    files = {p.stem: read_json(p) for p in sweep_root.glob("*/runs/*.json")}
    assert len(files) == 2 * 2 * 2  # processes x modes x seeds
    for row in record["rows"]:
        run = files[row["run_id"]]
        assert run["config"]["model"]["myopic"] == (row["mode"] == "myopic") and run["seed"] == row["seed"]
        assert np.allclose(row["kl_per_position"], run["metrics"]["kl_per_position"], rtol=0, atol=0)
    answers = np.asarray(record["answer_positions"])
    assert answers.tolist() == [t for t in range(6) if t % 3 == 2]
    for summary in record["summary"]:
        kl = {mode: np.array([r["kl_answers" if summary["positions"] == "answers" else "kl_all"]
                              for r in sorted(record["rows"], key=lambda r: r["seed"])
                              if r["process"] == summary["process"] and r["mode"] == mode]) for mode in ("full", "myopic")}
        assert math.isclose(summary["gap"]["mean"], float(np.mean(kl["myopic"] - kl["full"])), rel_tol=1e-12, abs_tol=1e-15)
    _draw(tmp_path, "c08_myopia")
    table = (tmp_path / "paper" / "tables" / "c08_myopia.md").read_text()
    assert "precaching (permutation)" in table and "Markov control" in table
    mtimes = {p: p.stat().st_mtime_ns for p in sweep_root.glob("*/runs/*.json")}
    c08.main(_args(c08, tmp_path), grid)
    assert {p: p.stat().st_mtime_ns for p in sweep_root.glob("*/runs/*.json")} == mtimes
    # An edited profile sweeps into the same directories: the record holds only the new grid's runs.
    longer = c08.Grid(vocab_size=3, delay=2, num_seeds=2, training=_training(c08, steps=5, length=6))
    c08.main(_args(c08, tmp_path), longer)
    record = read_json(tmp_path / "results" / "c08_myopia" / "quick.json")
    files = {p.stem: read_json(p) for p in sweep_root.glob("*/runs/*.json")}
    assert len(files) == 2 * 2 * 2 * 2 and len(record["rows"]) == 2 * 2 * 2
    assert {files[row["run_id"]]["config"]["train"]["steps"] for row in record["rows"]} == {5}


@pytest.mark.slow
def test_c10_collapse_experiment(tmp_path):
    """C10's record holds the closed form pi_W (1 - (1 - rho)^n); at temperature 1 the sampled Bayes curve
    agrees with it within 5 binomial standard errors at every n; the figure and table are drawn."""
    c10 = _experiment("c10_waluigi")
    grid = c10.Grid(prior_w=0.3, reveal_prob=0.1, vocab_size=3, training=_training(c10, steps=20, length=12),
                    num_seeds=2, temperatures=(1.0, 1.5), num_rollouts=200, num_exact_rollouts=4000)
    c10.main(_args(c10, tmp_path), grid)
    record = read_json(tmp_path / "results" / "c10_waluigi" / "quick.json")
    n = np.arange(1, 13)
    expected = 0.3 * (1 - 0.9**n)
    assert np.allclose(record["closed_form"]["revealed"], expected, rtol=1e-12)
    row = next(r for r in record["rows"] if r["temperature"] == 1.0)
    stderr = np.sqrt(expected * (1 - expected) / 4000)
    assert np.all(np.abs(np.asarray(row["bayes_revealed"]) - expected) <= 5 * stderr + 1e-12)
    assert np.asarray(row["model_revealed"]).shape == (2, 12)
    _draw(tmp_path, "c10_waluigi")


@pytest.mark.slow
def test_c05_compounding_experiment(tmp_path):
    """C5 on a tiny grid: discriminator accuracy lies in [1/2, 1] and is non-decreasing in n up to Monte
    Carlo noise; the trap rate of data is a fraction; the figure and table are drawn."""
    c05 = _experiment("c05_compounding")
    grid = c05.Grid(vocab_size=3, concentration=0.5, chain_seed=0, sizes=(("tiny", TINY),), steps=10, batch_size=16,
                    length=8, num_seeds=2, temperatures=(1.0, 1.5), num_samples=200, trap_window=4)
    c05.main(_args(c05, tmp_path), grid)
    record = read_json(tmp_path / "results" / "c05_compounding" / "quick.json")
    for row in record["rows"]:
        accuracy = np.asarray(row["discriminator_accuracy"])
        assert np.all((accuracy >= 0.5 - 1e-12) & (accuracy <= 1 + 1e-12))
    assert 0 <= record["data_trap_rate"] <= 1
    _draw(tmp_path, "c05_compounding")


@pytest.mark.slow
def test_c12_own_outputs_experiment(tmp_path):
    """C12 on a tiny grid: generation 0 of every loop has finite F and G; the Markov MLE without fresh data
    never regains support (its off-support mass never falls back to 0 once positive); drawn."""
    c12 = _experiment("c12_own_outputs")
    grid = c12.Grid(generations=2, num_samples=32, length=3, num_seeds=2, size=TINY, steps=10, batch_size=16)
    c12.main(_args(c12, tmp_path), grid)
    record = read_json(tmp_path / "results" / "c12_own_outputs" / "quick.json")
    for row in record["rows"]:
        assert np.asarray(row["forward_kl"]).shape == (2, 3)
        if row["fitter"] == "markov MLE" and row["setting"] == "own outputs":
            off = np.asarray(row["generation_off_support"])
            assert np.all(np.diff((off > 0).astype(int), axis=1) >= 0)
    _draw(tmp_path, "c12_own_outputs")


@pytest.mark.slow
def test_c09_reweighting_experiment(tmp_path):
    """C9 on a tiny grid: the RL optimum's hack rate never increases with beta (it concentrates on the
    proxy's argmax as beta falls); KL curves are finite and non-negative; drawn."""
    c09 = _experiment("c09_reweighting")
    grid = c09.Grid(num_seeds=2, finetune_steps=6, kl_length=4, kl_every=3, rl_steps=6, rl_batch=16, rl_length=3,
                    stage_training=_training(c09, steps=6, length=4), chain_training=_training(c09, steps=6, length=3),
                    betas=(0.1, 1.0), cap=1)
    c09.main(_args(c09, tmp_path), grid)
    record = read_json(tmp_path / "results" / "c09_reweighting" / "quick.json")
    hack = [row["optimum"]["hack_rate"] for row in record["rl"]["betas"]]
    assert hack[0] >= hack[1] - 1e-12
    for row in record["rl"]["betas"]:
        kl = np.asarray(row["kl_to_optimum"])
        assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-9)
    assert np.all(np.asarray(record["finetuning"]["kl_to_target"]) >= -1e-9)
    _draw(tmp_path, "c09_reweighting")


def test_profiles_are_valid():
    """Every experiment's quick and full profiles build (their configs validate) and keep at least 3 seeds."""
    for stem in ("c05_compounding", "c08_myopia", "c09_reweighting", "c10_waluigi", "c12_own_outputs"):
        module = _experiment(stem)
        for name, grid in module.PROFILES.items():
            assert grid.num_seeds >= 3, (stem, name)
            json.dumps(dataclasses.asdict(grid), default=str)


def test_table_cells_escape_for_latex():
    """Table text prints literally in LaTeX (specials escaped), "R^2" is set as maths, and a cell that is
    already $maths$ is kept."""
    simple_table = _load(ROOT / "paper" / "plots" / "simple_table.py", "plots.simple_table")
    assert simple_table.latex_escape("held-out R^2, 95% CI") == r"held-out $R^2$, 95\% CI"
    assert simple_table.latex_escape("1 - R^2 & a_b ~ x^y") == r"1 - $R^2$ \& a\_b \textasciitilde{} x\textasciicircum{}y"
    assert simple_table.latex_escape(r"$\le 1$") == r"$\le 1$"
