"""Sweeps: a grid of runs over config fields, grouped into vmapped programs, resumable and shardable.

A `Sweep` is a base config, axes {dotted field path: values} and a run function (sweep_grid.py
expands and groups them). `run_sweep(sweep, out)` computes the groups of this process's shard and
writes each finished run atomically to OUT/runs/<run_id>.json, so that
  - a restart skips finished runs, and a kill at any moment loses at most the runs in flight: a
    result file is whole or absent (temp file + os.replace), one file per run id, never two;
  - every group gets a work directory OUT/groups/<group_id>/ (its config's `out` field, if it has
    one), where the training engine keeps checkpoints and resumes from them;
  - several processes or hosts split one grid without overlap: process k of n takes the groups
    k, k+n, ... of the group ids in sorted order (`process_shard` says where k and n come from).
Runs are keyed by what they compute (config and run function), so a grid may grow in the same
directory; a finished run is never recomputed, even after the code changes (each result file records
its code version): a group some of whose runs are finished trains only the others (`_pending_part`).
Two processes must not run the same shard of one directory at once (nothing locks a group: both
would train it, into one work directory); a resubmitted job should wait for the first to stop.
OUT/sweep.json records the latest grid and its groups. `load_results(OUT)` (sweep_results.py) reads
the result files into a DataFrame; launch.py submits the shards as a Slurm job array.

The run function takes a config and returns a JSON-able dict of metrics. For a group of several slots
it must say which metrics belong to which slot, in one of two forms: {"per_slot": [dict per slot, in
config.train.slots order], **shared} (shared entries go to every run), or the record of
toymodels.runs.run (the default), whose per-slot evaluation, final training loss and divergences
are split out. A function that cannot train slots together runs with `group=False`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from toymodels.results import read_json, run_metadata, write_json_atomic
from toymodels.sweep_grid import Group, Run, assign, canonical, config_hash, expand, group_runs, with_slots
from toymodels.sweep_results import RUNS_DIR, load_results

__all__ = ["DEFAULT_FN", "Sweep", "load_results", "parse_axis", "process_shard", "run_sweep"]

DEFAULT_FN = "toymodels.runs:run"  # train transformers and evaluate them against the Bayes predictor
SPEC_FILE, GROUPS_DIR = "sweep.json", "groups"


def function_name(fn: Callable | str) -> str:
    """"module:qualname" of a top-level function (what submitit pickles and a result file records)."""
    if isinstance(fn, str):
        if fn.count(":") != 1 or not all(fn.split(":")):
            raise ValueError(f"fn must be 'module:function', got {fn!r}")
        return fn
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not callable(fn) or not module or "<" in qualname or "." in qualname:
        raise ValueError(f"fn must be a top-level function importable by name (not a lambda, closure or method), got {fn!r}")
    return f"{module}:{qualname}"


def resolve_function(name: str) -> Callable[[Any], dict]:
    """The function named "module:qualname"."""
    module, _, qualname = function_name(name).partition(":")
    try:
        return getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"fn {name!r} cannot be imported: {error}") from None


def parse_axis(text: str) -> tuple[str, list]:
    """'model.num_layers=[1, 2]' -> ("model.num_layers", [1, 2]): a dotted path, '=', a JSON list."""
    path, sep, values = text.partition("=")
    try:
        parsed = json.loads(values) if sep else None
    except json.JSONDecodeError:
        parsed = None
    if not path or not isinstance(parsed, list):
        raise ValueError(f"an axis must be 'dotted.path=JSON list', e.g. 'model.num_layers=[1, 2]', got {text!r}")
    return path.strip(), parsed


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid of runs: base config x axes, computed by `fn`, slots grouped into shared programs."""

    base: Any  # a frozen dataclass config, e.g. toymodels.runs.RunConfig (its `out` is set per group)
    axes: Any = ()  # {dotted path: [values]} (stored as ((path, (values...)), ...), in the given order)
    fn: Any = DEFAULT_FN  # the run function, top-level: a callable or "module:function"
    group: bool = True  # train runs that differ only in seed and learning rate as slots of one program
    max_group_size: int = 0  # most slots per group (0: no limit)

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.base) or isinstance(self.base, type):
            raise ValueError(f"base must be a dataclass config instance, got {self.base!r}")
        items = self.axes.items() if isinstance(self.axes, dict) else self.axes
        axes = []
        for item in items:
            path, values = item
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not list(values):
                raise ValueError(f"axis {path!r} needs a non-empty list of values, got {values!r}")
            axes.append((str(path), tuple(values)))
        if len({path for path, _ in axes}) != len(axes):
            raise ValueError(f"axes repeat a path: {[path for path, _ in axes]}")
        object.__setattr__(self, "axes", tuple(axes))
        object.__setattr__(self, "fn", function_name(self.fn))
        if not isinstance(self.group, bool):
            raise ValueError(f"group must be a bool, got {self.group!r}")
        self.groups()  # validates every axis value and max_group_size now, not in a job later

    def runs(self) -> list[Run]:
        """Every run of the grid (sweep_grid.expand)."""
        return expand(self.base, self.axes, self.fn)

    def groups(self) -> list[Group]:
        """The runs' groups, sorted by id (sweep_grid.group_runs)."""
        return group_runs(self.runs(), self.fn, self.max_group_size, self.group)

    def spec(self) -> dict:
        """What OUT/sweep.json holds: the grid, and each group's run ids (all deterministic)."""
        return {
            "base": canonical(self.base), "base_type": f"{type(self.base).__module__}:{type(self.base).__qualname__}",
            "axes": [[path, list(values)] for path, values in self.axes], "fn": self.fn, "group": self.group,
            "max_group_size": self.max_group_size,
            "groups": [{"group_id": g.group_id, "runs": [r.run_id for r in g.runs]} for g in self.groups()],
        }


# --------------------------------------------------------------------------------------------------
# Which process runs what
# --------------------------------------------------------------------------------------------------


def _env_pair(index_name: str, count_name: str, offset_name: str | None = None) -> tuple[int, int] | None:
    index, count = os.environ.get(index_name), os.environ.get(count_name)
    if index is None and count is None:
        return None
    if index is None or count is None:
        raise ValueError(f"set both {index_name} and {count_name}, or neither")
    try:
        return int(index) - int(os.environ.get(offset_name, 0) if offset_name else 0), int(count)
    except ValueError:
        raise ValueError(f"{index_name}={index!r} and {count_name}={count!r} must be integers") from None


def process_shard(index: int | None = None, count: int | None = None, use_jax: bool = True) -> tuple[int, int, str]:
    """(k, n, source): this process runs shard k of n. The first that applies: the arguments;
    TOYMODELS_PROCESS_INDEX / TOYMODELS_PROCESS_COUNT; jax.process_index() / jax.process_count() if
    jax.distributed is initialised (and `use_jax`); a Slurm job array (SLURM_ARRAY_TASK_ID minus
    SLURM_ARRAY_TASK_MIN, of SLURM_ARRAY_TASK_COUNT: a contiguous array); else 0 of 1."""
    if (index is None) != (count is None):
        raise ValueError("pass both process_index and process_count, or neither")
    pair, source = ((index, count), "arguments") if index is not None else (None, "")
    if pair is None and (pair := _env_pair("TOYMODELS_PROCESS_INDEX", "TOYMODELS_PROCESS_COUNT")):
        source = "TOYMODELS_PROCESS_INDEX"
    if pair is None and use_jax:
        import jax

        if jax.distributed.is_initialized():
            pair, source = (jax.process_index(), jax.process_count()), "jax.distributed"
    if pair is None and (pair := _env_pair("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")):
        source = "SLURM_ARRAY_TASK_ID"
    k, n = pair if pair is not None else (0, 1)
    for name, value in (("process_index", k), ("process_count", n)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r} (from {source})")
    if not 0 <= k < n:
        raise ValueError(f"process index {k} must lie in [0, process count {n}) (from {source})")
    return k, n, source or "single process"


# --------------------------------------------------------------------------------------------------
# Splitting a group's result into its runs
# --------------------------------------------------------------------------------------------------


def _from_run_record(record: dict, size: int) -> tuple[list[dict], dict]:
    # toymodels.runs.run: per-slot evaluation (with its seed and learning rate), per-slot final
    # training loss, and optionally per-slot divergences; the rest is the sweep's own bookkeeping.
    per_slot = [{} for _ in range(size)]
    for i, slot in enumerate(record.get("evaluation") or []):
        per_slot[i].update({k: v for k, v in slot.items() if k not in ("seed", "learning_rate")})
    final_loss = record.get("final_loss")
    for i in range(size):
        per_slot[i]["final_loss"] = final_loss[i] if isinstance(final_loss, list) else final_loss
        if record.get("divergences"):
            per_slot[i]["divergences"] = record["divergences"][i]
    return per_slot, {}


def split_result(result: dict, group: Group) -> list[dict]:
    """Each run's metrics from one call's result (the module docstring's two forms, or a plain dict
    for a single run)."""
    size = len(group.runs)
    if not isinstance(result, dict):
        raise ValueError(f"the run function must return a dict, got {type(result).__name__}")
    if "per_slot" in result:
        per_slot, shared = result["per_slot"], {k: v for k, v in result.items() if k != "per_slot"}
    elif "evaluation" in result and "slots" in result:
        per_slot, shared = _from_run_record(result, size)
    elif size == 1:
        per_slot, shared = [dict(result)], {}
    else:
        raise ValueError(f"a group of {size} slots needs per-slot metrics: return {{'per_slot': [...]}} "
                         "from the run function, or sweep with group=False")
    if len(per_slot) != size:
        raise ValueError(f"the run function returned {len(per_slot)} per-slot records for {size} slots")
    return [{**shared, **slot} for slot in per_slot]


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def _group_config(group: Group, out: Path) -> Any:
    names = {f.name for f in dataclasses.fields(group.config)}
    changes = {"out": str(out / GROUPS_DIR / group.group_id)} if "out" in names else {}
    if "quiet" in names:
        changes["quiet"] = True  # the sweep shows one bar over runs instead of one per training
    return dataclasses.replace(group.config, **changes)


def _remove_stale_temps(runs_dir: Path, run_ids: set[str]) -> None:
    # A kill during write_json_atomic leaves ".<run_id>.json.<random>.tmp". Only this shard's runs
    # are touched: another live process may be writing its own.
    for path in runs_dir.glob(".*.tmp"):
        if path.name[1:].split(".json.")[0] in run_ids:
            path.unlink(missing_ok=True)


def _done_ids(runs_dir: Path) -> set[str]:
    return {p.stem for p in runs_dir.glob("*.json")}


def run_sweep(sweep: Sweep, out, *, process_index: int | None = None, process_count: int | None = None,
              split: bool = True, quiet: bool = False) -> dict:
    """Run this process's share of the sweep into `out`; return a summary (counts, shard).

    Groups run in order of their ids; an exception from the run function stops the sweep (the runs
    written so far stay, and a rerun starts with the failed group).

    With `split` (the default) this process runs only its shard of the groups (`process_shard`).
    With split=False every process of a jax.distributed job runs every group of the shard given by the
    arguments, environment or Slurm array, together (for run functions whose programs span all
    processes, such as toymodels.runs.run), and process 0 writes the result files."""
    out = Path(out)
    runs_dir = out / RUNS_DIR
    runs_dir.mkdir(parents=True, exist_ok=True)
    index, count, source = process_shard(process_index, process_count, use_jax=split)
    writer = True
    if split and source == "jax.distributed" and sweep.fn == DEFAULT_FN:
        raise ValueError(f"{DEFAULT_FN} trains each group on every process's devices; under jax.distributed "
                         "pass split=False (every process runs every group together)")
    if not split:
        import jax

        writer = jax.process_index() == 0
    spec = sweep.spec()
    if writer and (not (out / SPEC_FILE).exists() or read_json(out / SPEC_FILE) != json.loads(json.dumps(spec))):
        write_json_atomic(out / SPEC_FILE, spec)  # the latest grid; every shard of one grid writes the same
    groups = assign(sweep.groups(), index, count)
    mine = {run.run_id for group in groups for run in group.runs}
    if writer:
        _remove_stale_temps(runs_dir, mine)
    done = _done_ids(runs_dir)
    todo = [g for g in groups if any(run.run_id not in done for run in g.runs)]
    if split:
        todo = [_pending_part(g, done, out, sweep.fn) for g in todo]
    else:
        todo = _agree(todo, groups)  # every process runs whole groups: the parts would need agreeing too
    fn = resolve_function(sweep.fn)
    metadata = run_metadata()  # the loaded code's version, read once: it cannot change mid-process
    worker = {"process_index": index, "process_count": count, "shard_source": source, "pid": os.getpid()}
    summary = {"process_index": index, "process_count": count, "shard_source": source, "groups": len(groups),
               "runs": len(mine), "already_done": len(mine & done), "written": 0, "groups_run": 0}
    bar = tqdm(total=len(mine), initial=len(mine & done), unit="run", desc="sweep", disable=quiet or not writer,
               dynamic_ncols=True)
    try:
        for group in todo:
            began = time.perf_counter()
            result = fn(_group_config(group, out))
            wall = time.perf_counter() - began
            summary["groups_run"] += 1
            if not writer:
                continue
            for slot, (run, metrics) in enumerate(zip(group.runs, split_result(result, group))):
                path = runs_dir / f"{run.run_id}.json"
                if run.run_id in done or path.exists():
                    continue  # finished before a kill that interrupted the rest of its group
                write_json_atomic(path, _record(sweep, group, slot, run, metrics, wall, metadata, worker))
                summary["written"] += 1
                bar.update(1)
    finally:
        bar.close()
    return summary


def _pending_part(group: Group, done: set[str], out: Path, fn_name: str) -> Group:
    """What is left of `group` to compute. The whole group if none of its runs is finished, or if its
    work directory exists (training started there, and resuming it costs less than starting afresh);
    otherwise the seeds x learning rates of its unfinished runs, a program of its own (own id and work
    directory). So a grid grown by a seed or a rate trains only the new runs, not again the old ones
    that now share their group."""
    pending = [run for run in group.runs if run.run_id not in done]
    if len(pending) == len(group.runs) or pending[0].seed is None or (out / GROUPS_DIR / group.group_id).exists():
        return group
    seeds = sorted({run.seed for run in pending})
    rates = sorted({run.learning_rate for run in pending})
    config = with_slots(group.config, seeds, rates)
    by_slot = {(run.seed, run.learning_rate): run for run in group.runs}
    return Group(config_hash(config, fn_name, "group"), config, tuple(by_slot[slot] for slot in config.train.slots))


def _agree(todo: list[Group], groups: list[Group]) -> list[Group]:
    """Under split=False, every process must run the same groups: process 0's view of what is done."""
    import jax

    if jax.process_count() == 1:
        return todo
    import numpy as np
    from jax.experimental import multihost_utils

    pending = {g.group_id for g in todo}
    mask = np.array([g.group_id in pending for g in groups], dtype=np.int32)
    mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
    return [g for g, flag in zip(groups, mask) if flag]


def _record(sweep: Sweep, group: Group, slot: int, run: Run, metrics: dict, wall: float, metadata: dict,
            worker: dict) -> dict:
    """A result file: the run (id, name, config, seed, learning rate), its group and slot, the run
    function, its metrics, wall times, the code version and device (run_metadata of the process
    that ran it), the shard that ran it, and the group's work directory relative to the sweep's."""
    return {
        "run_id": run.run_id, "name": run.name, "group_id": group.group_id, "slot_index": slot,
        "group_size": len(group.runs), "fn": sweep.fn,
        "config_type": f"{type(run.config).__module__}:{type(run.config).__qualname__}",
        "config": canonical(run.config), "seed": run.seed, "learning_rate": run.learning_rate,
        "metrics": metrics,
        "wall_s": wall / len(group.runs),  # the run's share: its group's slots trained in one program
        "group_wall_s": wall,
        "code_version": metadata["code_version"], "device": metadata["device"], "metadata": metadata,
        "worker": worker, "work_dir": f"{GROUPS_DIR}/{group.group_id}",
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
