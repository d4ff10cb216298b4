"""Sweeps (toymodels.sweep, sweep_grid, sweep_results, launch, scripts/sweep.py).

Most tests use tests/sweep_worker.py's fake_run, whose per-slot metrics are a sha256 function of the
run's config and slot: `expected_metrics` recomputes them from a result file's own config, which is
the oracle that each slot of a group landed in its own run's file. Grid expansion is checked against
itertools.product, grouping against a plain-dict count of (family, set of learning rates) classes,
the kill test against an uninterrupted sweep, the shard split against round-robin over sorted group
ids, and the real-training test against the seeds and learning rates stored in the trained state.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from training_configs import LEARNING_RATES, MODEL, SEEDS, train_config
from sweep_worker import FAKE_FN, TOY_AXES, ToyRun, expected_metrics, make_sweep
from toymodels.evaluation import EvalConfig
from toymodels.launch import LaunchConfig, launch
from toymodels.results import read_json
from toymodels.runs import ModelSize, RunConfig
from toymodels.sweep import Sweep, parse_axis, process_shard, run_sweep, split_result
from toymodels.sweep_grid import IGNORED_FIELDS, group_runs, identity, set_field, split_slots
from toymodels.sweep_results import FIXED_COLUMNS, load_results
from toymodels.training import TrainConfig, load_run

# The real config type for the grid tests (worker processes use sweep_worker's light ToyRun).
BASE = RunConfig(out="-", model=ModelSize(num_layers=1, d_model=8, num_heads=2), train=TrainConfig(steps=5))
AXES = TOY_AXES  # 2 x 2 families, each 3 seeds x 2 rates: 24 runs
TESTS = Path(__file__).resolve().parent
WORKER = TESTS / "sweep_worker.py"
SHARD_VARIABLES = ("TOYMODELS_PROCESS_INDEX", "TOYMODELS_PROCESS_COUNT", "SLURM_ARRAY_TASK_ID",
                   "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SWEEP_TEST_SLEEP", "SWEEP_TEST_CALLS")


@pytest.fixture(autouse=True)
def _clean_shard_environment(monkeypatch):
    for name in SHARD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _worker_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SHARD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # fake_run needs no devices: start faster
    # On a GPU machine the workers would share its one GPU (and need NCCL between them); what is tested
    # here, how the sweep splits and records its runs, is the same on CPUs.
    env["JAX_PLATFORMS"] = "cpu"
    return {**env, **{k: str(v) for k, v in extra.items()}}


def _cell(run) -> tuple:
    return run.config.model.num_layers, json.loads(run.config.process_kwargs)["x"], run.seed, run.learning_rate


def _check_run_file(record: dict) -> None:
    """The run's metrics are fake_run's for its own config and slot, plus the group's shared metric."""
    expected = {**expected_metrics(record["config"], record["seed"], record["learning_rate"]),
                "layers": record["config"]["model"]["num_layers"]}
    assert record["metrics"] == json.loads(json.dumps(expected))


# --------------------------------------------------------------------------------------------------
# Grid and grouping
# --------------------------------------------------------------------------------------------------


def test_grid_expansion_ids_stable_and_distinct():
    runs = Sweep(BASE, AXES, fn=FAKE_FN).runs()
    seeds = [s for value in AXES["train.seeds"] for s in (value if isinstance(value, list) else [value])]
    oracle = list(itertools.product([1, 2], [0.05, 0.1], seeds, [1e-3, 1e-2]))
    assert sorted(_cell(r) for r in runs) == sorted(oracle)
    assert len({r.run_id for r in runs}) == len({r.name for r in runs}) == len(oracle) == 24
    for run in runs:
        assert run.config.train.slots == ((run.seed, run.learning_rate),)

    # Ids depend on the computation only: not on axis order, output directory, verbosity, dict vs string.
    by_cell = {_cell(r): r.run_id for r in runs}
    reordered = Sweep(dataclasses.replace(BASE, out="elsewhere", quiet=True), dict(reversed(list(AXES.items()))),
                      fn=FAKE_FN, max_group_size=2)
    assert {_cell(r): r.run_id for r in reordered.runs()} == by_cell
    as_strings = Sweep(BASE, {**AXES, "process_kwargs": ['{"x": 0.05}', '{"x": 0.1}']}, fn=FAKE_FN)
    assert {_cell(r): r.run_id for r in as_strings.runs()} == by_cell

    def ids(process_kwargs):
        return [r.run_id for r in Sweep(dataclasses.replace(BASE, process_kwargs=process_kwargs), {"train.seeds": [0]},
                                        fn=FAKE_FN).runs()]

    # The base config's JSON text compares as data: key order and spacing do not change ids, values do.
    assert ids('{"x": 0.05, "alpha": 0.85}') == ids('{"alpha":0.85,  "x":0.05}') != ids('{"x": 0.05, "alpha": 0.8}')
    # A different computation or function gives different ids; repeated cells are one run.
    longer = Sweep(dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, steps=6)), AXES, fn=FAKE_FN)
    assert not {r.run_id for r in longer.runs()} & set(by_cell.values())
    other_fn = Sweep(BASE, AXES, fn="sweep_worker:expected_metrics")
    assert not {r.run_id for r in other_fn.runs()} & set(by_cell.values())
    overlapping = Sweep(BASE, {"train.seeds": [[0, 1], [1, 2]]}, fn=FAKE_FN)
    assert sorted(r.seed for r in overlapping.runs()) == [0, 1, 2]
    # Fields added later (ADDED_FIELDS) are left out of ids at their defaults, so runs recorded before
    # they existed keep their ids; another value is another computation.
    assert not {"dtype", "attention"} & set(identity(BASE)["model"])
    bf16 = Sweep(BASE, {"model.dtype": ["bfloat16"], "train.seeds": [0]}, fn=FAKE_FN).runs()[0]
    assert identity(bf16.config)["model"]["dtype"] == "bfloat16" and bf16.run_id not in by_cell.values()
    # A float field given an int (JSON writes 0.0 as 0) is the same computation, so the same id.
    decay = [Sweep(BASE, {"train.optimizer.weight_decay": [value]}, fn=FAKE_FN).runs()[0] for value in (0, 0.0)]
    assert decay[0].run_id == decay[1].run_id and decay[0].config == decay[1].config


RATES = (1e-3, 3e-3, 1e-2)


@given(cells=st.sets(st.tuples(st.integers(1, 2), st.integers(0, 3), st.sampled_from(RATES)), min_size=1, max_size=12),
       max_group_size=st.sampled_from([0, 1, 2, 3, 4, 6]), order=st.randoms(use_true_random=False))
def test_grouping_partitions_into_rectangles_deterministically(cells, max_group_size, order):
    runs = [run for layers, seed, lr in sorted(cells)
            for run in split_slots(set_field(set_field(set_field(BASE, "model.num_layers", layers), "train.seeds", seed),
                                             "train.learning_rates", [lr]), FAKE_FN)]
    groups = group_runs(runs, FAKE_FN, max_group_size)
    members = [run for g in groups for run in g.runs]
    assert sorted(r.run_id for r in members) == sorted(r.run_id for r in runs)  # a partition
    assert [g.group_id for g in groups] == sorted({g.group_id for g in groups})
    for group in groups:
        # The group's config computes exactly its runs, slot by slot.
        assert group.config.train.slots == tuple((r.seed, r.learning_rate) for r in group.runs)
        assert [r.run_id for r in split_slots(group.config, FAKE_FN)] == [r.run_id for r in group.runs]
        assert len({r.config.model.num_layers for r in group.runs}) == 1
        assert max_group_size == 0 or len(group.runs) <= max_group_size
    if max_group_size == 0:  # one group per (layers, set of rates of a seed)
        rates = {}
        for layers, seed, lr in cells:
            rates.setdefault((layers, seed), set()).add(lr)
        assert len(groups) == len({(layers, frozenset(r)) for (layers, _), r in rates.items()})
    shuffled = list(runs)
    order.shuffle(shuffled)
    assert group_runs(shuffled, FAKE_FN, max_group_size) == groups


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="model.depth"):
        Sweep(BASE, {"model.depth": [1]}, fn=FAKE_FN)
    with pytest.raises(ValueError, match="non-empty"):
        Sweep(BASE, {"model.num_layers": []}, fn=FAKE_FN)
    with pytest.raises(ValueError, match="positions"):
        Sweep(BASE, {"model.positions": ["sideways"]}, fn=FAKE_FN)
    with pytest.raises(ValueError, match="top-level"):
        Sweep(BASE, {}, fn=lambda config: {})
    with pytest.raises(ValueError, match="max_group_size"):
        Sweep(BASE, {}, fn=FAKE_FN, max_group_size=-1)
    with pytest.raises(ValueError, match="JSON list"):
        parse_axis("model.num_layers=1,2")
    assert parse_axis("train.seeds=[0, 1]") == ("train.seeds", [0, 1])
    with pytest.raises(ValueError, match="process index"):
        process_shard(2, 2)
    with pytest.raises(ValueError, match="cluster"):
        LaunchConfig(cluster="moon")
    group = Sweep(BASE, AXES, fn=FAKE_FN).groups()[0]
    with pytest.raises(ValueError, match="per_slot"):
        split_result({"loss": 1.0}, group)


def test_process_shard_sources(monkeypatch, tmp_path):
    assert process_shard() == (0, 1, "single process")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert process_shard() == (1, 3, "SLURM_ARRAY_TASK_ID")
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert process_shard() == (1, 2, "jax.distributed")
    with pytest.raises(ValueError, match="split=False"):  # the default engine's programs span processes
        run_sweep(Sweep(BASE, {}), tmp_path)
    assert process_shard(use_jax=False)[2] == "SLURM_ARRAY_TASK_ID"
    monkeypatch.setenv("TOYMODELS_PROCESS_INDEX", "0")
    with pytest.raises(ValueError, match="both"):
        process_shard()
    monkeypatch.setenv("TOYMODELS_PROCESS_COUNT", "4")
    assert process_shard() == (0, 4, "TOYMODELS_PROCESS_INDEX")
    assert process_shard(3, 5)[:2] == (3, 5)


# --------------------------------------------------------------------------------------------------
# Running: kill and resume, several processes, submitit
# --------------------------------------------------------------------------------------------------


def _wait_for_files(directory: Path, count: int, process: subprocess.Popen, limit_s: float = 150) -> None:
    deadline = time.monotonic() + limit_s
    while len(list(directory.glob("*.json"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the worker wrote too few results in time"
        time.sleep(0.02)


def test_kill_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    out, runs_dir = tmp_path / "killed", tmp_path / "killed" / "runs"
    worker = subprocess.Popen([sys.executable, str(WORKER), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_worker_env(SWEEP_TEST_SLEEP=0.5, SWEEP_TEST_MAX_GROUP=2))
    try:
        _wait_for_files(runs_dir, 4, worker)  # two groups of two done, the third asleep
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.communicate()
    sweep = make_sweep(2)
    before = {p.name: p.read_bytes() for p in runs_dir.glob("*.json")}
    assert 4 <= len(before) < 24
    for text in before.values():
        _check_run_file(json.loads(text))
    groups = sweep.groups()
    unfinished = [g for g in groups if any(f"{r.run_id}.json" not in before for r in g.runs)]
    stale = runs_dir / f".{unfinished[0].runs[0].run_id}.json.x1y2.tmp"  # as a kill inside a write leaves it
    stale.write_text('{"run_id": ')

    calls = tmp_path / "calls.log"
    monkeypatch.setenv("SWEEP_TEST_CALLS", str(calls))
    summary = run_sweep(sweep, out, quiet=True)
    ids = {r.run_id for r in sweep.runs()}
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(f"{i}.json" for i in ids)  # no temp file left
    assert {name: (runs_dir / name).read_bytes() for name in before} == before  # finished runs untouched
    recomputed = [json.loads(line)["out"] for line in calls.read_text().splitlines()]
    assert sorted(recomputed) == sorted(g.group_id for g in unfinished)
    assert summary["written"] == 24 - len(before) and summary["already_done"] == len(before)

    reference = tmp_path / "reference"
    run_sweep(sweep, reference, quiet=True)
    for run_id in ids:
        resumed, uninterrupted = read_json(runs_dir / f"{run_id}.json"), read_json(reference / "runs" / f"{run_id}.json")
        for field in ("metrics", "group_id", "slot_index", "config", "name", "seed", "learning_rate"):
            assert resumed[field] == uninterrupted[field], field
        _check_run_file(resumed)
    assert run_sweep(sweep, out, quiet=True)["groups_run"] == 0


def test_a_grown_grid_trains_only_its_new_runs(tmp_path, monkeypatch):
    """Seeds (0, 1) x two rates, then the grid grown to seeds (0, 1, 2) in the same directory: the new
    grid's one group holds four finished runs, so the second sweep computes only seed 2's two slots (one
    call, a program of two slots) and leaves the first four files untouched; `load_results` with
    `run_ids` reads either grid's runs."""
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("SWEEP_TEST_CALLS", str(calls))
    rates = [[1e-3, 1e-2]]
    small = Sweep(ToyRun(), {"train.seeds": [[0, 1]], "train.learning_rates": rates}, fn=FAKE_FN)
    grown = Sweep(ToyRun(), {"train.seeds": [[0, 1, 2]], "train.learning_rates": rates}, fn=FAKE_FN)
    out = tmp_path / "sweep"
    run_sweep(small, out, quiet=True)
    before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert len(before) == 4 and len(grown.groups()) == 1
    summary = run_sweep(grown, out, quiet=True)
    assert (summary["already_done"], summary["written"], summary["groups_run"]) == (4, 2, 1)
    assert len(calls.read_text().splitlines()) == 2  # one call per sweep
    assert {name: (out / "runs" / name).read_bytes() for name in before} == before
    records = [read_json(out / "runs" / f"{run.run_id}.json") for run in grown.runs()]
    for record in records:
        _check_run_file(record)
    assert sorted((r["seed"], r["group_size"]) for r in records if r["seed"] == 2) == [(2, 2), (2, 2)]
    assert sorted(load_results(out, run_ids={run.run_id for run in small.runs()})["seed"]) == [0, 0, 1, 1]
    assert len(load_results(out)) == 6 and run_sweep(grown, out, quiet=True)["groups_run"] == 0


def test_two_processes_split_the_grid(tmp_path):
    out, calls = tmp_path / "sweep", tmp_path / "calls.log"
    workers = [subprocess.Popen([sys.executable, str(WORKER), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_worker_env(TOYMODELS_PROCESS_INDEX=k, TOYMODELS_PROCESS_COUNT=2,
                                                SWEEP_TEST_CALLS=calls, SWEEP_TEST_MAX_GROUP=2))
               for k in range(2)]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    summaries = [json.loads(stdout.decode().strip().splitlines()[-1]) for stdout, _ in outputs]
    groups = sorted(make_sweep(2).groups(), key=lambda g: g.group_id)
    owner = {run.run_id: i % 2 for i, g in enumerate(groups) for run in g.runs}  # round-robin oracle
    records = [read_json(p) for p in (out / "runs").glob("*.json")]
    assert sorted(r["run_id"] for r in records) == sorted(owner)
    for record in records:
        assert record["worker"]["process_index"] == owner[record["run_id"]] and record["worker"]["process_count"] == 2
        _check_run_file(record)
    computed = [json.loads(line) for line in calls.read_text().splitlines()]
    assert sorted(c["out"] for c in computed) == sorted(g.group_id for g in groups)  # each group exactly once
    assert len({c["pid"] for c in computed}) == 2
    assert sorted(s["written"] for s in summaries) == [12, 12]


def test_jax_distributed_split_and_together(tmp_path):
    """Two processes of one jax.distributed job: split by jax.process_index(), then split=False, where
    both compute every group (the default engine's programs span processes) and process 0 writes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls = tmp_path / "calls.log"
    workers = [subprocess.Popen(["timeout", "200", sys.executable, str(WORKER), str(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_worker_env(SWEEP_TEST_JAX=f"{port},{k},2", SWEEP_TEST_CALLS=calls,
                                                                        SWEEP_TEST_MAX_GROUP=2))
               for k in range(2)]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    (split0, together0), (split1, together1) = (json.loads(o.decode().strip().splitlines()[-1]) for o, _ in outputs)
    groups = sorted(make_sweep(2).groups(), key=lambda g: g.group_id)
    owner = {run.run_id: i % 2 for i, g in enumerate(groups) for run in g.runs}
    assert [split0["shard_source"], split0["process_index"], split1["process_index"]] == ["jax.distributed", 0, 1]
    for mode in ("split", "together"):
        records = [read_json(p) for p in (tmp_path / mode / "runs").glob("*.json")]
        assert sorted(r["run_id"] for r in records) == sorted(owner)
        for record in records:
            _check_run_file(record)
            assert record["worker"]["process_index"] == (owner[record["run_id"]] if mode == "split" else 0)
    assert (together0["written"], together1["written"], together1["groups_run"]) == (24, 0, len(groups))
    computed = [json.loads(line)["out"] for line in calls.read_text().splitlines()]
    assert sorted(computed) == sorted([g.group_id for g in groups] * 3)  # once split, twice together


def test_launcher_through_submitit_local_executor(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _worker_env()["PYTHONPATH"])  # the jobs import sweep_worker
    sweep = Sweep(ToyRun(), {"model.num_layers": [1, 2], "train.seeds": [0, 1]}, fn=FAKE_FN)
    jobs = launch(sweep, tmp_path / "sweep", LaunchConfig(cluster="local", shards=2, timeout_min=5,
                                                          folder=str(tmp_path / "logs")))
    summaries = [job.result() for job in jobs]
    assert [(s["process_index"], s["process_count"], s["groups"], s["written"]) for s in summaries] == [(0, 2, 1, 2), (1, 2, 1, 2)]
    table = load_results(tmp_path / "sweep")
    assert len(table) == 4 and sorted(table["process_index"]) == [0, 0, 1, 1]
    for path in (tmp_path / "sweep" / "runs").glob("*.json"):
        _check_run_file(read_json(path))


# --------------------------------------------------------------------------------------------------
# Results table and command line
# --------------------------------------------------------------------------------------------------


def _leaf_fields(kind, prefix="") -> set[str]:
    names = set()
    for field in dataclasses.fields(kind):
        value = getattr(kind, field.name) if not isinstance(kind, type) else None
        if dataclasses.is_dataclass(value):
            names |= _leaf_fields(value, f"{prefix}{field.name}.")
        elif not (prefix == "" and field.name in IGNORED_FIELDS):
            names.add(f"{prefix}{field.name}")
    return names


def test_load_results_schema(tmp_path):
    assert list(load_results(tmp_path / "nothing").columns) == list(FIXED_COLUMNS)
    sweep = Sweep(BASE, {"model.num_layers": [1, 2], "train.learning_rates": [[1e-3, 1e-2]]}, fn=FAKE_FN)
    run_sweep(sweep, tmp_path, quiet=True)
    table = load_results(tmp_path)
    metric_columns = {"loss", "curve", "nested.kl", "layers", "metrics.seed"}  # fake_run's "seed" clashes
    assert set(table.columns) == set(FIXED_COLUMNS) | _leaf_fields(BASE) | metric_columns
    assert len(table) == 4 and list(table["run_id"]) == sorted(r.run_id for r in sweep.runs())
    for row in table.to_dict("records"):
        record = read_json(tmp_path / "runs" / f"{row['run_id']}.json")
        assert [row[k] for k in ("seed", "learning_rate", "group_id")] == [record[k] for k in ("seed", "learning_rate", "group_id")]
        assert row["loss"] == record["metrics"]["loss"] and row["curve"] == tuple(record["metrics"]["curve"])
        assert row["model.num_layers"] == record["config"]["model"]["num_layers"]
        assert row["metrics.seed"] == record["seed"]
        assert row["wall_s"] * row["group_size"] == pytest.approx(row["group_wall_s"])
    assert table["dirty"].dtype == bool and table["device"].iloc[0].startswith(f"{jax.default_backend()}:")
    assert set(table["learning_rate"]) == {1e-3, 1e-2} and set(table["train.seeds"]) == {(0,)}


def _script():
    spec = importlib.util.spec_from_file_location("sweep_script", TESTS.parent / "scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_command_line(tmp_path, capsys):
    main = _script().main
    args = ["--out", str(tmp_path), "--fn", FAKE_FN, "--model.d-model", "8", "--quiet",
            "--axes", "model.num_layers=[1, 2]", "train.seeds=[0, 1, 2]"]
    assert main([*args, "--plan"]) == [] and "6 runs in 2 groups" in capsys.readouterr().out
    [summary] = main(args)
    assert summary["written"] == 6 and main(args)[0]["written"] == 0
    assert sorted(load_results(tmp_path)["seed"]) == [0, 0, 1, 1, 2, 2]


# --------------------------------------------------------------------------------------------------
# The real engine
# --------------------------------------------------------------------------------------------------


def test_real_training_slots_split_into_run_files(tmp_path):
    # tests/training_configs.py's tiny run (1 layer, width 16, 6 steps, 4 slots), so that in a full
    # session it shares the compiled step and evaluation with test_training.py and test_train_script.py.
    base = RunConfig(out="-", process="mess3", process_kwargs='{"x": 0.05, "alpha": 0.85}',
                     model=ModelSize(num_layers=MODEL.num_layers, d_model=MODEL.d_model, num_heads=MODEL.num_heads,
                                     mlp_width=MODEL.mlp_width),
                     train=train_config(seeds=(0,), learning_rates=(), evaluation=EvalConfig(num_sequences=512)))
    sweep = Sweep(base, {"train.seeds": [list(SEEDS)], "train.learning_rates": [list(LEARNING_RATES)]})
    [group] = sweep.groups()
    summary = run_sweep(sweep, tmp_path, quiet=True)
    assert summary["written"] == 4 and summary["groups_run"] == 1
    table = load_results(tmp_path)
    assert len(table) == 4 and (table["group_size"] == 4).all()
    _, _, state = load_run(tmp_path / "groups" / group.group_id)
    final = read_json(tmp_path / "groups" / group.group_id / "final.json")
    for row in table.itertuples():
        # The trained state stores each slot's seed and learning rate: the split put each in its own file.
        assert int(state.seed[row.slot_index]) == row.seed
        assert np.float32(state.learning_rate[row.slot_index]) == np.float32(row.learning_rate)
        assert row.kl == final["evaluation"][row.slot_index]["kl"] and row.kl > 0
        assert np.isfinite(row.final_loss) and row.loss_ratio > 0
    again = run_sweep(sweep, tmp_path, quiet=True)
    assert again["groups_run"] == 0 and again["written"] == 0
