"""C12: retraining on one's own outputs, generation after generation, measured exactly.

True process: a 3-token Markov chain. Generation 0 is fitted to N sequences of it; generation k + 1 is
fitted to N sequences sampled from generation k, either alone ("own outputs"), with a fraction alpha of
fresh data from the true process ("fresh"), or added to every earlier generation's data ("accumulate").
Two fitters see the same loop (toymodels.own_outputs.own_outputs_loop):

  transformer   a small transformer trained from scratch on the generation's dataset;
  markov MLE    the count-ratio transition estimate (the exactly fittable reference of C12's theory).

Measured per generation and per loop seed, exactly by enumeration of V^L (theory.divergence): the
forward KL F (prediction-loss gap on the true process) and the generation KL G, and the off-support
mass behind an infinite value. Across seeds: mean and 95% Student-t interval. Expected from C12: F and G
grow without fresh data (support loss and drift compound), stay bounded with fresh or accumulated data.

    python scripts/experiments/c12_own_outputs.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from _common import Args, key, mean_ci, parse_args, write_record
from toymodels.evaluation import EvalConfig
from toymodels.optimizer import OptimizerConfig
from toymodels.own_outputs import MarkovFitter, TransformerFitter, own_outputs_loop
from toymodels.processes import make_process
from toymodels.runs import ModelSize
from toymodels.training import TrainConfig

NAME = "c12_own_outputs"
TRANSITION = [[0.8, 0.15, 0.05], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]]
# (label, fraction of fresh data, accumulate every generation's data)
SETTINGS = (("own outputs", 0.0, False), ("fresh 50%", 0.5, False), ("accumulate", 0.0, True))


@dataclasses.dataclass(frozen=True)
class Grid:
    generations: int
    num_samples: int  # N sequences per generation
    length: int  # L tokens per sequence; F and G are exact over all V^L sequences
    num_seeds: int  # loop seeds (each: its own datasets, samples and initialisations)
    size: ModelSize
    steps: int  # training steps per transformer fit
    batch_size: int


PROFILES = {
    "quick": Grid(generations=4, num_samples=128, length=5, num_seeds=3,
                  size=ModelSize(num_layers=1, d_model=16, num_heads=2), steps=150, batch_size=64),
    "full": Grid(generations=10, num_samples=512, length=8, num_seeds=8,
                 size=ModelSize(num_layers=2, d_model=32, num_heads=2), steps=600, batch_size=128),
}


def fitters(grid: Grid, vocab_size: int) -> dict:
    train = TrainConfig(steps=grid.steps, batch_size=grid.batch_size, sequence_length=grid.length,
                        optimizer=OptimizerConfig(learning_rate=1e-2), evaluation=EvalConfig(final=False),
                        log_every=grid.steps, num_devices=1)
    return {"transformer": TransformerFitter(grid.size.config(vocab_size, grid.length), train),
            "markov MLE": MarkovFitter(vocab_size)}


def measure(grid: Grid, args: Args) -> dict:
    process = make_process("markov_chain", transition=np.asarray(TRANSITION))
    rows = []
    for f_index, (fitter_name, fitter) in enumerate(fitters(grid, process.vocab_size).items()):
        for label, alpha, accumulate in SETTINGS:
            per_seed = []
            for seed in range(grid.num_seeds):
                # The key depends on the fitter and seed only: every setting starts from the same generation 0.
                result = own_outputs_loop(fitter, process, key(args, f_index, seed), generations=grid.generations,
                                          num_samples=grid.num_samples, length=grid.length, alpha=alpha, accumulate=accumulate)
                per_seed.append(result.records)
            row = {"fitter": fitter_name, "setting": label, "alpha": alpha, "accumulate": accumulate,
                   "generation": list(range(grid.generations + 1))}
            for field in ("forward_kl", "generation_kl", "forward_off_support", "generation_off_support"):
                row[field] = np.array([[r[field] for r in records] for records in per_seed], np.float64)
            row["summary"] = [{field: mean_ci(row[field][:, g]) for field in ("forward_kl", "generation_kl")}
                              for g in range(grid.generations + 1)]
            rows.append(row)
            last = row["summary"][-1]
            print(f"  {fitter_name}, {label}: F {row['summary'][0]['forward_kl']['mean']:.4f} -> {last['forward_kl']['mean']:.4f},"
                  f" G {row['summary'][0]['generation_kl']['mean']:.4f} -> {last['generation_kl']['mean']:.4f}", flush=True)
    return {"rows": rows, "transition": TRANSITION}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact divergences in float64
    return write_record(NAME, "C12", args, {"grid": dataclasses.asdict(grid), "settings": SETTINGS},
                        measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
