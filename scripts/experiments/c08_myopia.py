"""C8: transformers are not myopic: gradients from later tokens build computation at earlier positions.

The same transformer is trained with full gradients and with myopic gradients (the loss at position t
does not flow into keys and values of positions < t; TransformerConfig.myopic) on two processes with the
same entropy rate and unigram statistics (toymodels/processes/precaching.py):

  precaching  blocks of d uniform inputs followed by an answer that folds them through a random Latin
              square ("permutation"): carrying the running fold forward at input positions is worthless
              for the loss there, so only the answer's gradient can build it;
  control     a first-order Markov chain, where there is nothing to pre-compute.

Measured per seed, on held-out data, against the exact Bayes predictor: the per-token KL from Bayes to
the model, at answer positions and over all positions (toymodels.evaluation). The comparison is the
paired gap KL(myopic) - KL(full) (same seed: same initialisation and data stream), with a 95% Student-t
interval over seeds. Expected: a clear positive gap on precaching and a gap near 0 on the control.
The trainings run through the sweep runner (toymodels.sweep): per process, a grid over the gradient
mode whose seeds train as vmapped slots of one program, one result file per (mode, seed).

    python scripts/experiments/c08_myopia.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from _common import Args, Training, mean_ci, parse_args, seeds_for, write_record
from toymodels.runs import ModelSize, RunConfig
from toymodels.sweep import Sweep, load_results, run_sweep

NAME = "c08_myopia"
PROCESSES = ("precaching", "precaching_control")


@dataclasses.dataclass(frozen=True)
class Grid:
    vocab_size: int
    delay: int
    training: Training  # size.myopic is overridden per mode
    num_seeds: int


PROFILES = {
    "quick": Grid(vocab_size=3, delay=2, num_seeds=5,
                  training=Training(ModelSize(num_layers=2, d_model=32, num_heads=2), steps=1500, batch_size=32, length=24)),
    "full": Grid(vocab_size=5, delay=5, num_seeds=10,
                 training=Training(ModelSize(num_layers=3, d_model=64, num_heads=4), steps=8000, batch_size=256, length=60)),
}


def process_kwargs(name: str, grid: Grid) -> dict:
    base = {"vocab_size": grid.vocab_size, "delay": grid.delay}
    return {**base, "operation": "permutation"} if name == "precaching" else base


def answer_positions(grid: Grid) -> np.ndarray:
    """0-based positions t with t mod (d + 1) = d: the answers of precaching (and the same slots of the control)."""
    t = np.arange(grid.training.length)
    return t[t % (grid.delay + 1) == grid.delay]


def sweep_process(name: str, grid: Grid, args: Args):
    """Full and myopic training of every seed on one process, through the sweep runner (resumable; each
    (mode, seed) run is its own result file); returns the runs as a DataFrame."""
    seeds = seeds_for(args.seed, grid.num_seeds)
    out = Path(args.out) / NAME / f"{args.profile}-sweep" / name
    base = RunConfig(out=str(out), process=name, process_kwargs=json.dumps(process_kwargs(name, grid)),
                     model=grid.training.size, train=grid.training.train_config(seeds), quiet=True)
    sweep = Sweep(base, {"model.myopic": [False, True]})
    run_sweep(sweep, out, process_index=0, process_count=1, quiet=True)
    # Only this grid's runs: the directory also keeps those of other seeds or an edited profile.
    frame = load_results(out, run_ids={run.run_id for run in sweep.runs()})
    if len(frame) != len(sweep.runs()):
        raise RuntimeError(f"{out} holds {len(frame)} of this grid's {len(sweep.runs())} runs after the sweep")
    return frame


def measure(grid: Grid, args: Args) -> dict:
    answers = answer_positions(grid)
    rows, summary = [], []
    for name in PROCESSES:
        frame = sweep_process(name, grid, args).sort_values("seed")
        kl = {}
        for myopic in (False, True):
            mode = "myopic" if myopic else "full"
            runs = frame[frame["model.myopic"] == myopic]
            per_position = np.stack([np.asarray(v, np.float64) for v in runs["kl_per_position"]])  # [seeds, L]
            kl[mode] = {"all": per_position.mean(axis=1), "answers": per_position[:, answers].mean(axis=1)}
            for s, run in enumerate(runs.itertuples()):
                rows.append({"process": name, "mode": mode, "seed": int(run.seed), "kl_per_position": per_position[s],
                             "kl_all": kl[mode]["all"][s], "kl_answers": kl[mode]["answers"][s],
                             "loss_ratio": float(run.loss_ratio), "run_id": run.run_id})
            print(f"  {name} {mode}: KL/token {kl[mode]['all'].mean():.4f}, at answers {kl[mode]['answers'].mean():.4f}",
                  flush=True)
        for where in ("all", "answers"):
            gap = mean_ci(kl["myopic"][where] - kl["full"][where])  # paired: both modes of a seed share init and data
            summary.append({"process": name, "positions": where, "full": mean_ci(kl["full"][where]),
                            "myopic": mean_ci(kl["myopic"][where]), "gap": gap})
            print(f"  {name} gap ({where}): {gap['mean']:.4f} [{gap['low']:.4f}, {gap['high']:.4f}]", flush=True)
    return {"rows": rows, "summary": summary, "answer_positions": answers, "seeds": seeds_for(args.seed, grid.num_seeds)}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    return write_record(NAME, "C8", args, {"grid": dataclasses.asdict(grid)}, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
