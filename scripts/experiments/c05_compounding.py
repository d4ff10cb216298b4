"""C5: do errors compound in long rollouts? Teacher-forced loss vs the divergence of the model's own text.

Data: a stationary, ergodic first-order Markov chain on V tokens (random kernel, started from its
stationary law), so the exact theory predicts TV_n -> 1 and G_n / n -> a positive rate for any
imperfect model that stays inside the support. Transformers of two sizes (several seeds each, trained
briefly so that they stay imperfect) are rolled out at several temperatures tau. Per model and tau, all
against the exact log p_data (theory.divergence, chain-rule Monte Carlo with standard errors):

  F_n / n   forward KL per token (teacher forced on data), against n;
  G_n / n   generation KL per token on the model's own rollouts, against n;
  (1 + TV_n) / 2   the accuracy of the best (likelihood-ratio) discriminator between n-token rollouts
            and data, against n;
  trap rate the fraction of rollouts whose last `trap_window` tokens repeat with period 1 or 2, against
            the same rate on data (exact rollouts of the chain).

Across seeds: mean and 95% Student-t interval. What it shows: whether per-token generation divergence
grows with n (compounding) or stays flat (a constant rate, as the theory predicts for a Markov P and a
model of fixed per-step error), and how fast discrimination approaches certainty.

    python scripts/experiments/c05_compounding.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from _common import Args, Training, binomial_stderr, key, mean_ci, parse_args, run_dir, seeds_for, train_seeds, write_record
from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import with_temperature
from toymodels.processes import make_process
from toymodels.runs import ModelSize
from toymodels.sampling import generate

NAME = "c05_compounding"


@dataclasses.dataclass(frozen=True)
class Grid:
    vocab_size: int
    concentration: float  # Dirichlet concentration of the chain's rows (small: peaked, trap-prone)
    chain_seed: int
    sizes: tuple[tuple[str, ModelSize], ...]
    steps: int
    batch_size: int
    length: int
    num_seeds: int
    temperatures: tuple[float, ...]
    num_samples: int  # Monte Carlo sequences per divergence
    trap_window: int


PROFILES = {
    "quick": Grid(vocab_size=4, concentration=0.5, chain_seed=0,
                  sizes=(("1 layer, d=16", ModelSize(num_layers=1, d_model=16, num_heads=2)),
                         ("2 layers, d=32", ModelSize(num_layers=2, d_model=32, num_heads=2))),
                  steps=150, batch_size=32, length=48, num_seeds=3, temperatures=(0.5, 0.8, 1.0, 1.2),
                  num_samples=1000, trap_window=8),
    "full": Grid(vocab_size=8, concentration=0.5, chain_seed=0,
                 sizes=(("1 layer, d=32", ModelSize(num_layers=1, d_model=32, num_heads=2)),
                        ("2 layers, d=64", ModelSize(num_layers=2, d_model=64, num_heads=4)),
                        ("4 layers, d=128", ModelSize(num_layers=4, d_model=128, num_heads=4))),
                 steps=1000, batch_size=64, length=256, num_seeds=8, temperatures=(0.5, 0.8, 1.0, 1.2),
                 num_samples=10000, trap_window=16),
}


def chain(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The data chain's kernel (Dirichlet rows, numpy seed) and its stationary distribution."""
    rng = np.random.default_rng(grid.chain_seed)
    kernel = rng.dirichlet(np.full(grid.vocab_size, grid.concentration), size=grid.vocab_size)
    kernel = np.maximum(kernel, 1e-3)  # keep it ergodic with full support: the theory's setting
    kernel /= kernel.sum(axis=1, keepdims=True)
    values, vectors = np.linalg.eig(kernel.T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return kernel, stationary / stationary.sum()


def trap_rate(tokens, window: int) -> float:
    """Fraction of sequences whose last `window` tokens have period 1 or 2 (x_t = x_{t-2} throughout)."""
    tail = np.asarray(tokens)[:, -window:]
    return float(np.mean(np.all(tail[:, 2:] == tail[:, :-2], axis=1)))


def measure_model(process, q, tau: float, grid: Grid, keys) -> dict:
    tempered = with_temperature(q, tau)
    common = dict(method="monte_carlo", num_samples=grid.num_samples)
    f = forward_kl(process, tempered, grid.length, key=keys[0], **common)
    g = generation_kl(process, tempered, grid.length, key=keys[1], **common)
    tv = total_variation(process, tempered, grid.length, key=keys[2], **common)
    n = np.arange(1, grid.length + 1)
    rollouts = generate(tempered, keys[3], grid.num_samples, grid.length)
    return {"forward_per_token": np.cumsum(f.per_position) / n, "generation_per_token": np.cumsum(g.per_position) / n,
            "forward_stderr": f.stderr, "generation_stderr": g.stderr, "generation_off_support": g.off_support_fraction,
            "discriminator_accuracy": (1 + np.asarray(tv.per_position)) / 2, "tv_stderr": tv.stderr,
            "trap_rate": trap_rate(rollouts, grid.trap_window)}


def measure(grid: Grid, args: Args) -> dict:
    kernel, stationary = chain(grid)
    process = make_process("markov_chain", transition=kernel, initial=stationary)
    data = generate(process, key(args, 999), grid.num_samples * 10, grid.length)
    data_trap = trap_rate(data, grid.trap_window)
    seeds = seeds_for(args.seed, grid.num_seeds)
    rows = []
    for s_index, (label, size) in enumerate(grid.sizes):
        training = Training(size, steps=grid.steps, batch_size=grid.batch_size, length=grid.length)
        info = {"process": {"name": "markov_chain", "kwargs": {"transition": kernel.tolist(), "initial": stationary.tolist()}}}
        trained = train_seeds(process, training, seeds, run_dir(args, NAME, f"size{s_index}"), info)
        for t_index, tau in enumerate(grid.temperatures):
            per_seed = [measure_model(process, q, tau, grid, [key(args, s_index, t_index, m, e) for e in range(4)])
                        for m, q in enumerate(trained.predictors)]
            row = {"size": label, "temperature": tau, "n": np.arange(1, grid.length + 1)}
            for field in ("forward_per_token", "generation_per_token", "discriminator_accuracy"):
                row[field] = np.stack([m[field] for m in per_seed])
            for field in ("trap_rate", "generation_off_support", "forward_stderr", "generation_stderr", "tv_stderr"):
                row[field] = [m[field] for m in per_seed]
            row["final"] = {field: mean_ci(row[field][:, -1]) for field in ("forward_per_token", "generation_per_token",
                                                                           "discriminator_accuracy")}
            row["final"]["trap_rate"] = mean_ci(row["trap_rate"])
            rows.append(row)
            print(f"  {label}, tau={tau:g}: F/n {row['final']['forward_per_token']['mean']:.4f}, "
                  f"G/n {row['final']['generation_per_token']['mean']:.4f}, "
                  f"accuracy {row['final']['discriminator_accuracy']['mean']:.3f}, traps {np.mean(row['trap_rate']):.4f}"
                  f" (data {data_trap:.4f})", flush=True)
    return {"rows": rows, "data_trap_rate": data_trap,
            "data_trap_stderr": float(binomial_stderr(data_trap, grid.num_samples * 10)),
            "chain": {"kernel": kernel, "stationary": stationary}, "seeds": seeds}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact log p_data in float64
    config = {"grid": {**dataclasses.asdict(grid), "sizes": [[label, dataclasses.asdict(s)] for label, s in grid.sizes]}}
    return write_record(NAME, "C5", args, config, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
