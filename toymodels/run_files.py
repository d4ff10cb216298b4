"""What a training run's output directory holds, and how a rerun reuses it.

    config.json     {**run_info, "model", "train"}: the latest run's config (a resume may change how
                    the run is observed, OBSERVATION_FIELDS, never what it computes)
    metrics.jsonl   one JSON record per logged step or evaluation, appended as the run goes
    checkpoints/    the orbax checkpoints a killed run resumes from (toymodels.checkpoints)

training.train writes and reads them through these helpers; finetune and the scripts read the names.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from toymodels.results import read_json, write_json_atomic

CONFIG_FILE, METRICS_FILE, CHECKPOINT_DIR = "config.json", "metrics.jsonl", "checkpoints"

# Fields that change how a run is observed or laid out, not what it computes: a resumed run may differ
# in these (num_devices changes float rounding through the reduction order, not the algorithm).
OBSERVATION_FIELDS = ("evaluation", "log_every", "checkpoint_every", "keep_checkpoints", "num_devices")


def config_record(model_config, config, run_info: dict | None) -> dict:
    """config.json's record: run_info (e.g. the process) with the model and train configs."""
    return {**(run_info or {}), "model": dataclasses.asdict(model_config), "train": dataclasses.asdict(config)}


def write_config(out: Path, record: dict, write: bool = True) -> None:
    """Check that a resumed run computes the same thing as the one in `out` (every process checks), then
    (if `write`: the main process) write config.json. It is rewritten on resume: it states the latest
    run's settings, under which its evaluations are made."""
    path = out / CONFIG_FILE
    if path.exists():
        _check_resumable(path, record)
    if write:
        write_json_atomic(path, record)


def _check_resumable(path: Path, record: dict) -> None:
    """A run may only resume from a directory whose config computes the same thing."""
    old = read_json(path)

    def essence(r):
        return {**{k: v for k, v in r.items() if k != "train"},
                "train": {k: v for k, v in r["train"].items() if k not in OBSERVATION_FIELDS}}

    new = json.loads(json.dumps(essence(record), default=str))
    if essence(old) != new:
        raise ValueError(f"{path} holds a different run's config; use another output directory (or delete it)")


def truncate_metrics(path: Path, start: int, finished: bool = False) -> list:
    """Drop records after step `start` (logged by an interrupted run past its last checkpoint, and
    about to be logged again); return the records kept. A `finished` run (start = steps) is about to
    redo only its final evaluation, which comes after the last checkpoint: drop that record too."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r["step"] < start or (r["step"] == start and not (finished and "eval" in r))]
    if len(kept) != len(records):
        write_text = "".join(json.dumps(r) + "\n" for r in kept)
        temp = path.with_suffix(".tmp")
        temp.write_text(write_text)
        temp.replace(path)
    return kept
