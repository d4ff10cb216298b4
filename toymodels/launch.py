"""Submitting a sweep as a Slurm job array through submitit: array task k runs shard k of n.

Each task is one process that calls `run_shard(sweep, out, k, n)`, i.e. `run_sweep` with an explicit
shard, so the tasks split the groups without overlap and a resubmission (or a requeued task) skips
the runs already written. `cluster="local"` runs the tasks as subprocesses of this machine (how the
launcher is tested without a cluster) and `cluster="debug"` in this process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from toymodels.sweep import Sweep, run_sweep

CLUSTERS = ("slurm", "local", "debug")


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """Where and how the sweep's shards run (submitit.AutoExecutor parameters)."""

    cluster: str = "slurm"  # "slurm", or "local" (subprocesses here) / "debug" (this process) for testing
    shards: int = 1  # array tasks; task k runs groups k, k + shards, ... of the sorted group ids
    folder: str = ""  # submitit's pickles and logs ("": OUT/submitit)
    timeout_min: int = 60  # wall-clock limit of each task, minutes
    cpus_per_task: int | None = None  # CPU cores per task (None: the cluster's default)
    gpus_per_node: int | None = None  # GPUs per task (None: the cluster's default)
    mem_gb: float | None = None  # memory per task, GB (None: the cluster's default)
    partition: str | None = None  # Slurm partition
    array_parallelism: int | None = None  # most array tasks running at once (None: submitit's 256)
    name: str = "toymodels-sweep"  # job name
    extra: str = "{}"  # further AutoExecutor parameters as a JSON object, e.g. '{"slurm_account": "x"}'

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise ValueError(f"cluster must be one of {CLUSTERS}, got {self.cluster!r}")
        for name in ("shards", "timeout_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        try:
            extra = json.loads(self.extra)
        except json.JSONDecodeError:
            extra = None
        if not isinstance(extra, dict):
            raise ValueError(f"extra must be a JSON object of executor parameters, got {self.extra!r}")

    def parameters(self) -> dict:
        """The AutoExecutor parameters (unset ones left to the cluster)."""
        params = {"timeout_min": self.timeout_min, "name": self.name, "cpus_per_task": self.cpus_per_task,
                  "gpus_per_node": self.gpus_per_node, "mem_gb": self.mem_gb, "slurm_partition": self.partition,
                  "slurm_array_parallelism": self.array_parallelism, **json.loads(self.extra)}
        return {k: v for k, v in params.items() if v is not None}


def run_shard(sweep: Sweep, out: str, index: int, count: int) -> dict:
    """One array task: shard `index` of `count` of the sweep (run_sweep's summary)."""
    return run_sweep(sweep, out, process_index=index, process_count=count)


def launch(sweep: Sweep, out, config: LaunchConfig = LaunchConfig()) -> list:
    """Submit the sweep's shards as one job array; return the submitit jobs (job.result() waits)."""
    import submitit

    out = Path(out).resolve()
    folder = Path(config.folder) if config.folder else out / "submitit"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=config.cluster)
    executor.update_parameters(**config.parameters())
    n = config.shards
    return executor.map_array(run_shard, [sweep] * n, [str(out)] * n, list(range(n)), [n] * n)
