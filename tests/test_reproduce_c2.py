"""The C2 experiment end to end on a tiny grid (result file, oracle values, figure, table), and the
atomic result-file writer."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from toymodels import results
from script_loader import ROOT, draw_and_check
from script_loader import load_script as _load_script



def test_c2_experiment_and_drawing(tmp_path, monkeypatch):
    c2 = _load_script(ROOT / "scripts" / "experiments" / "c2_sticky_marker.py", "experiment_c2_sticky_marker")
    grid = c2.Grid(eps=(0.01, 0.1), enum_lengths=(1, 2, 3), mc_lengths=(12,), num_samples=500)
    path = c2.main("quick", tmp_path / "results", seed=3, grid=grid)
    assert path == tmp_path / "results" / "c2_sticky_marker" / "quick.json"

    text = path.read_text()
    assert str(tmp_path) not in text and str(ROOT) not in text  # no absolute paths recorded
    record = results.read_json(path)
    assert {"code_version", "versions", "device", "utc", "wall_time_s", "x64"} <= set(record["metadata"])
    assert {"platform", "kind", "count"} <= set(record["metadata"]["device"])
    assert record["config"]["seed"] == 3 and record["config"]["grid"]["eps"] == [0.01, 0.1]

    rows = record["enumeration"]
    assert {(r["eps"], r["predictor"], r["n"]) for r in rows} == {
        (e, q, n) for e in grid.eps for q in ("perfect", "imperfect") for n in grid.enum_lengths}
    for r in rows:  # oracles computed here, not read from the file
        assert r["cost"] / r["n"] == pytest.approx(-math.log(1 - r["eps"]), abs=1e-9)
        bound = 1 - (1 - r["eps"]) ** r["n"]
        assert r["generation_kl"] == math.inf
        assert r["generation_off_support"] == pytest.approx(bound, abs=1e-9)
        assert r["tv"] >= bound - 1e-12
        if r["predictor"] == "perfect":
            assert r["tv"] == pytest.approx(bound, abs=1e-9)
    for r in record["monte_carlo"]:
        # 10 batches: the batch-means stderr has 9 degrees of freedom; 6 of them is a safe margin.
        closed = 1 - (1 - r["eps"]) ** r["n"]
        assert 0 < r["p_marker_stderr"] and abs(r["p_marker"] - closed) < 6 * r["p_marker_stderr"]
        assert r["generation_kl"] == math.inf
        # For Q = P, TV_n is exactly the closed form; for the imperfect Q it is at least that.
        assert 0 < r["tv_perfect_stderr"] and abs(r["tv_perfect"] - closed) < 6 * r["tv_perfect_stderr"]
        assert r["tv_imperfect"] > closed - 6 * r["tv_imperfect_stderr"]

    draw_and_check(tmp_path, monkeypatch, "c2_sticky_marker")
    assert "0.99996" in (tmp_path / "paper" / "tables" / "c2_sticky_marker.md").read_text()  # P(g in 1000), eps 0.01


def test_draw_skips_missing_results(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "paper"))
    draw = _load_script(ROOT / "paper" / "draw.py", "paper_draw")
    assert draw.main(["--results", str(tmp_path), "--paper", str(tmp_path / "paper")]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "paper").exists()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "r.json")


def test_write_json_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    with pytest.raises(TypeError):  # fails while serialising: nothing is created
        results.write_json_atomic(path, {"ok": 1, "bad": object()})
    assert not path.exists() and _leftovers(tmp_path) == []

    results.write_json_atomic(path, {"old": 1})
    with pytest.raises(TypeError):
        results.write_json_atomic(path, {"new": [1, 2], "bad": object()})
    assert results.read_json(path) == {"old": 1}

    def failing_fsync(fd):  # fails after the temp file holds the new text, before the rename
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        results.write_json_atomic(path, {"new": 2})
    assert results.read_json(path) == {"old": 1} and _leftovers(tmp_path) == []


def test_write_json_round_trips_non_finite_and_numpy(tmp_path):
    record = {"inf": math.inf, "ninf": -math.inf, "nan": math.nan, "array": np.array([[1.5, np.inf], [-np.inf, np.nan]]),
              "scalars": (np.float32(0.25), np.int64(7), np.bool_(True)), "nested": {"x": [np.float64(-np.inf)]}}
    path = results.write_json_atomic(tmp_path / "sub" / "r.json", record)

    def strict(token):
        raise ValueError(f"non-standard JSON token {token}")

    json.loads(path.read_text(), parse_constant=strict)  # strict JSON: no NaN/Infinity tokens
    back = results.read_json(path)
    assert back["inf"] == math.inf and back["ninf"] == -math.inf and math.isnan(back["nan"])
    assert back["array"][0] == [1.5, math.inf] and back["array"][1][0] == -math.inf and math.isnan(back["array"][1][1])
    assert back["scalars"] == [0.25, 7, True] and back["nested"] == {"x": [-math.inf]}
