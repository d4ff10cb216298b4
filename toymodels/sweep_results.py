"""Reading a sweep's result files (OUT/runs/<run_id>.json, written by toymodels.sweep) into a table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toymodels.results import read_json

if TYPE_CHECKING:
    import pandas as pd

RUNS_DIR = "runs"

# Columns every table has, whatever the config and the metrics (see load_results).
FIXED_COLUMNS = (
    "run_id", "name", "group_id", "slot_index", "group_size", "fn", "seed", "learning_rate", "wall_s",
    "group_wall_s", "code_version", "dirty", "device", "device_count", "process_index", "process_count",
    "work_dir", "finished_utc",
)


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level with dotted keys; lists become tuples (hashable, so groupby works)."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def _row(record: dict) -> dict[str, Any]:
    config = flatten(record["config"])
    device = record.get("device") or {}
    worker = record.get("worker") or {}
    fixed = {
        "run_id": record["run_id"], "name": record["name"], "group_id": record["group_id"],
        "slot_index": record["slot_index"], "group_size": record["group_size"], "fn": record["fn"],
        "seed": record["seed"], "learning_rate": record["learning_rate"], "wall_s": record["wall_s"],
        "group_wall_s": record["group_wall_s"], "code_version": record["code_version"],
        "dirty": str(record["code_version"]).endswith("-dirty"),
        "device": f"{device.get('platform')}:{device.get('kind')}", "device_count": device.get("count"),
        "process_index": worker.get("process_index"), "process_count": worker.get("process_count"),
        "work_dir": record["work_dir"], "finished_utc": record["finished_utc"],
    }
    taken = set(fixed) | set(config)
    metrics = {(f"metrics.{k}" if k in taken else k): v for k, v in flatten(record["metrics"]).items()}
    return {**fixed, **config, **metrics}


def load_results(sweep_dir, run_ids=None) -> pd.DataFrame:
    """One row per finished run of the sweep in `sweep_dir` (a run is one seed slot), sorted by run_id.

    A directory keeps the runs of every grid swept into it (a grid may grow or change there); pass
    `run_ids` (e.g. `{run.run_id for run in sweep.runs()}`) to read only those runs, say one grid's.

    Columns:
      run_id          the run's id (hash of its config and run function); its file is runs/<run_id>.json
      name            the axis values that made it, e.g. 'model.num_layers=2,seed=0,lr=0.001'
      group_id        the program that computed it (runs of one group trained as vmapped slots)
      slot_index      its slot in that program (index into the group config's train.slots)
      group_size      slots in that program
      fn              the run function, "module:function"
      seed, learning_rate   the slot's seed and peak learning rate (None for configs without slots)
      <dotted config fields>  every field of the run's config except out and quiet, e.g. process,
                      process_kwargs, model.num_layers, train.steps, train.seeds (a one-seed tuple),
                      train.optimizer.weight_decay; tuples for list values
      <metrics>       the run function's metrics for this run, nested keys dotted (prefixed 'metrics.'
                      where a name clashes with a column above). For toymodels.runs.run: kl (mean
                      per-token KL from the exact Bayes predictor to the model on held-out data,
                      nats), kl_stderr, loss_ratio, model_loss, bayes_loss, final_loss (last logged
                      training loss), the *_per_position tuples and, if asked,
                      divergences.forward_kl.value, divergences.generation_kl.value, ...
      wall_s          the run's share of its group's wall time (group_wall_s / group_size), seconds
      group_wall_s    wall time of the run function's call for the whole group, seconds
      code_version    `git describe --always` of the code that ran, "-dirty" if it had changes
                      (toymodels.results.code_version; else the package version)
      dirty           whether that checkout had uncommitted changes
      device          "platform:kind" of the first device, e.g. "cpu:cpu"; device_count: devices seen
      process_index, process_count   the shard that computed it
      work_dir        the group's work directory (checkpoints), relative to sweep_dir
      finished_utc    when its result file was written (UTC, ISO 8601)
    An empty or missing runs/ directory gives an empty table with the fixed columns. Temp files of
    interrupted writes (hidden '*.tmp') are ignored.
    """
    import pandas as pd  # here, not at import: a sweep's worker processes never need it

    runs_dir = Path(sweep_dir) / RUNS_DIR
    paths = sorted(runs_dir.glob("*.json")) if runs_dir.is_dir() else []
    if run_ids is not None:
        wanted = {str(run_id) for run_id in ([run_ids] if isinstance(run_ids, str) else run_ids)}
        paths = [path for path in paths if path.stem in wanted]
    rows = [_row(read_json(path)) for path in paths]
    if not rows:
        return pd.DataFrame(columns=list(FIXED_COLUMNS))
    frame = pd.DataFrame(rows)
    return frame.sort_values("run_id", kind="stable").reset_index(drop=True)
