"""A cheap stand-in for training, a light test grid, and a worker process for tests/test_sweep.py.

    python tests/sweep_worker.py OUT        # run the light grid into OUT (shard from the environment)
    SWEEP_TEST_JAX=PORT,ID,N python tests/sweep_worker.py OUT   # as process ID of a jax.distributed job

`fake_run` is a run function of the sweep contract: it returns per-slot metrics that depend only on
the config up to its slot fields and on the slot (seed, learning rate), through sha256, so they are
deterministic across processes and independent of how runs are grouped; `expected_metrics` is the
same rule written for a single run's record (the test's oracle). With SWEEP_TEST_SLEEP it sleeps
per call (so a kill lands mid-sweep); with SWEEP_TEST_CALLS it appends one line per call to that
file (which process computed which group).

`ToyRun` has the shape of toymodels.runs.RunConfig that the sweep relies on (out, quiet, a `train`
with seeds, learning_rates, optimizer.learning_rate and slots) without importing the training
engine, so worker processes start in half the time; the grid tests use the real RunConfig.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

FAKE_FN = "sweep_worker:fake_run"


@dataclasses.dataclass(frozen=True)
class ToyOptimizer:
    learning_rate: float = 1e-3  # peak learning rate when train.learning_rates is empty
    weight_decay: float = 0.0  # an extra field, carried along


@dataclasses.dataclass(frozen=True)
class ToyTrain:
    steps: int = 5  # a field outside the slots
    seeds: tuple[int, ...] = (0,)  # one slot per seed (x learning rate)
    learning_rates: tuple[float, ...] = ()  # empty: optimizer.learning_rate
    optimizer: ToyOptimizer = ToyOptimizer()

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "learning_rates", tuple(float(lr) for lr in self.learning_rates))

    @property
    def slots(self) -> tuple[tuple[int, float], ...]:
        """(seed, learning rate), seed-major, as TrainConfig.slots."""
        return tuple((s, lr) for s in self.seeds for lr in self.learning_rates or (self.optimizer.learning_rate,))


@dataclasses.dataclass(frozen=True)
class ToyModel:
    num_layers: int = 1
    d_model: int = 8


@dataclasses.dataclass(frozen=True)
class ToyRun:
    out: str = "-"  # set per group by the sweep
    process_kwargs: str = "{}"
    model: ToyModel = ToyModel()
    train: ToyTrain = ToyTrain()
    quiet: bool = False


TOY_AXES = {
    "model.num_layers": [1, 2],
    "process_kwargs": ['{"x": 0.05}', {"x": 0.1}],
    "train.seeds": [[0, 1], 2],
    "train.learning_rates": [[1e-3, 1e-2]],
}  # 2 x 2 families, each 3 seeds x 2 rates: 24 runs


def _unit(payload: dict) -> float:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _essence(record: dict) -> dict:
    # The run's config without where it runs and without its slot fields.
    record = {k: v for k, v in record.items() if k not in ("out", "quiet")}
    train = {k: v for k, v in record["train"].items() if k not in ("seeds", "learning_rates")}
    train["optimizer"] = {k: v for k, v in train["optimizer"].items() if k != "learning_rate"}
    return {**record, "train": train}


def expected_metrics(config_record: dict, seed: int, learning_rate: float) -> dict:
    """The metrics fake_run gives the slot (seed, learning_rate) of a config (as a JSON record)."""
    key = {"config": _essence(config_record), "seed": seed, "lr": learning_rate}
    loss = _unit(key)
    return {"loss": loss, "curve": [loss, loss / 2], "nested": {"kl": _unit({**key, "what": "kl"})}, "seed": seed}


def fake_run(config) -> dict:
    """The sweep's run-function contract, without training: {"per_slot": [...], shared metric}."""
    if os.environ.get("SWEEP_TEST_SLEEP"):
        time.sleep(float(os.environ["SWEEP_TEST_SLEEP"]))
    if os.environ.get("SWEEP_TEST_CALLS"):
        with open(os.environ["SWEEP_TEST_CALLS"], "a") as log:  # one short O_APPEND write per call
            log.write(json.dumps({"pid": os.getpid(), "out": Path(config.out).name}) + "\n")
    record = json.loads(json.dumps(dataclasses.asdict(config)))
    per_slot = [expected_metrics(record, seed, lr) for seed, lr in config.train.slots]
    return {"per_slot": per_slot, "layers": config.model.num_layers}


def make_sweep(max_group_size: int = 0):
    """The light test grid (ToyRun x TOY_AXES), computed by fake_run."""
    from toymodels.sweep import Sweep

    return Sweep(ToyRun(), TOY_AXES, fn=FAKE_FN, max_group_size=max_group_size)


def main(out: str) -> None:
    """Run the light grid into `out`; with SWEEP_TEST_JAX="port,process_id,num_processes", first join a
    jax.distributed cluster and run it twice: split by jax process into out/split, and with every
    process running every group together into out/together."""
    import jax

    from sweep_worker import make_sweep as imported_make_sweep  # the grid of the importable module
    from toymodels.sweep import run_sweep

    sweep = imported_make_sweep(int(os.environ.get("SWEEP_TEST_MAX_GROUP", "0")))
    if not os.environ.get("SWEEP_TEST_JAX"):
        print(json.dumps(run_sweep(sweep, out, quiet=True)))
        return
    port, process_id, num_processes = (int(x) for x in os.environ["SWEEP_TEST_JAX"].split(","))
    jax.config.update("jax_num_cpu_devices", 1)
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id,
                               initialization_timeout=60)
    summaries = [run_sweep(sweep, Path(out) / "split", quiet=True),
                 run_sweep(sweep, Path(out) / "together", split=False, quiet=True)]
    print(json.dumps(summaries))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
