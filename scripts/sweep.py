"""Sweep training runs over a grid of config fields; resumable, shardable, and submittable to Slurm.

The base run takes the flags of scripts/train.py (with --out the sweep directory); each --axes entry
is 'dotted.path=JSON list'. Runs that differ only in seed and learning rate train as slots of one
vmapped program. Example (2 depths x 4 seeds x 2 learning rates = 16 runs in 2 programs):

  python scripts/sweep.py --out results/sweeps/depth --process mess3 --process-kwargs '{"x": 0.05}' \\
      --train.steps 2000 --axes 'model.num_layers=[1, 2]' 'train.seeds=[0, 1, 2, 3]' 'train.learning_rates=[[1e-3, 3e-3]]'

Rerunning the same command skips finished runs. Split one grid over processes with
TOYMODELS_PROCESS_INDEX / TOYMODELS_PROCESS_COUNT (or a Slurm job array), or submit it as a job
array with --submit --launch.shards 8 --launch.partition gpu --launch.gpus-per-node 1. Results:
OUT/runs/<run_id>.json, one per run; `toymodels.sweep.load_results(OUT)` reads them into a DataFrame.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import tyro

from toymodels.host import split_host_cpu
from toymodels.launch import LaunchConfig, launch
from toymodels.runs import RunConfig
from toymodels.sweep import DEFAULT_FN, Sweep, parse_axis, run_sweep


@dataclasses.dataclass(frozen=True)
class SweepArgs:
    """A sweep: the base run, the axes, and where it runs."""

    run: Annotated[RunConfig, tyro.conf.arg(name="")]  # the base run; --out is the sweep directory
    axes: tuple[str, ...] = ()  # 'dotted.path=JSON list', e.g. 'model.num_layers=[1, 2]' 'train.seeds=[0, 1]'
    fn: str = DEFAULT_FN  # the run function, 'module:function' (config -> dict of metrics)
    group: bool = True  # train runs that differ only in seed and learning rate as slots of one program
    max_group_size: int = 0  # most slots per program (0: no limit)
    process_index: int | None = None  # this process's shard (None: from the environment)
    process_count: int | None = None  # number of shards (None: from the environment)
    split: bool = True  # under jax.distributed: False runs every group on all processes together
    plan: bool = False  # only print the runs and groups
    submit: bool = False  # submit the shards through submitit (--launch.*) instead of running here
    wait: bool = False  # with --submit: wait for the jobs and print their summaries
    launch: LaunchConfig = LaunchConfig()  # the job array (with --submit)


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the command line (or `argv`) and plan, run or submit the sweep; return the summaries."""
    args = tyro.cli(SweepArgs, args=argv, description=__doc__)
    sweep = Sweep(args.run, dict(parse_axis(a) for a in args.axes), fn=args.fn, group=args.group,
                  max_group_size=args.max_group_size)
    out = args.run.out
    if args.plan:
        groups = sweep.groups()
        for group in groups:
            print(f"group {group.group_id}: {len(group.runs)} runs")
            for run in group.runs:
                print(f"  {run.run_id}  {run.name}")
        print(f"{sum(len(g.runs) for g in groups)} runs in {len(groups)} groups")
        return []
    if args.submit:
        jobs = launch(sweep, out, args.launch)
        print(f"submitted {len(jobs)} tasks: {', '.join(job.job_id for job in jobs)}")
        summaries = [job.result() for job in jobs] if args.wait else []
    else:
        summaries = [run_sweep(sweep, out, process_index=args.process_index, process_count=args.process_count,
                               split=args.split, quiet=args.run.quiet)]
    for summary in summaries:
        print(json.dumps(summary))
    return summaries


if __name__ == "__main__":
    split_host_cpu()  # one JAX device per core (toymodels/host.py); before JAX starts
    main()
