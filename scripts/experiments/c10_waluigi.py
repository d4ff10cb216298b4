"""C10: Waluigi collapse in a trained model, against the exact collapse curve.

Data: the waluigi process (toymodels/processes/waluigi.py) with exact imitation: persona W (prior pi_W)
imitates the good persona G and reveals itself with probability rho per token. Transformers (several
seeds, trained together) learn it; then, per temperature tau and per seed, we sample rollouts from the
model and measure

  revealed(n)     the fraction of rollouts whose first n tokens contain the reveal token (binomial s.e.),
  posterior_w(n)  the mean over rollouts of the exact Bayes posterior P(W | x_1..x_n) (process.posterior).

Comparison: exact Bayes generation. At tau = 1 the closed form is revealed(n) = pi_W (1 - (1 - rho)^n),
and posterior_w(n) stays at pi_W (a martingale); at tau != 1 the tempered Bayes predictor is sampled with
many more rollouts. Across seeds: mean and 95% Student-t interval. What it shows: whether a trained
model's collapse follows the exact curve, and how temperature bends it.

    python scripts/experiments/c10_waluigi.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from _common import Args, Training, binomial_stderr, key, mean_ci, parse_args, run_dir, seeds_for, train_seeds, write_record
from toymodels.predictors import with_temperature
from toymodels.processes import make_process
from toymodels.runs import ModelSize
from toymodels.sampling import generate

NAME = "c10_waluigi"


@dataclasses.dataclass(frozen=True)
class Grid:
    prior_w: float
    reveal_prob: float
    vocab_size: int
    training: Training
    num_seeds: int
    temperatures: tuple[float, ...]
    num_rollouts: int  # per seed and temperature
    num_exact_rollouts: int  # tempered Bayes predictor, per temperature


PROFILES = {
    "quick": Grid(prior_w=0.3, reveal_prob=0.05, vocab_size=4,
                  training=Training(ModelSize(num_layers=2, d_model=32, num_heads=2), steps=800, batch_size=64, length=40),
                  num_seeds=3, temperatures=(0.7, 1.0, 1.3), num_rollouts=2000, num_exact_rollouts=20000),
    "full": Grid(prior_w=0.3, reveal_prob=0.05, vocab_size=4,
                 training=Training(ModelSize(num_layers=4, d_model=64, num_heads=4), steps=5000, batch_size=256, length=64),
                 num_seeds=8, temperatures=(0.5, 0.7, 1.0, 1.3, 1.6), num_rollouts=20000, num_exact_rollouts=200000),
}


def collapse_curves(process, tokens) -> tuple[np.ndarray, np.ndarray]:
    """revealed(n) and posterior_w(n) for n = 1..L, over rollouts `tokens` [R, L]."""
    reveal = process.info["reveal_token"]
    revealed = np.cumsum(np.asarray(tokens) == reveal, axis=1) > 0
    posterior = np.asarray(process.posterior(tokens, "persona"))[:, 1:, 1]  # entry n: after x_1..x_n
    return revealed.mean(axis=0), posterior.mean(axis=0)


def measure(grid: Grid, args: Args) -> dict:
    process = make_process("waluigi", prior_w=grid.prior_w, reveal_prob=grid.reveal_prob, vocab_size=grid.vocab_size)
    seeds = seeds_for(args.seed, grid.num_seeds)
    info = {"process": {"name": "waluigi", "kwargs": {"prior_w": grid.prior_w, "reveal_prob": grid.reveal_prob,
                                                       "vocab_size": grid.vocab_size}}}
    trained = train_seeds(process, grid.training, seeds, run_dir(args, NAME, "models"), info)
    length = grid.training.length
    n = np.arange(1, length + 1)
    rows = []
    for t_index, tau in enumerate(grid.temperatures):
        exact_tokens = generate(with_temperature(process, tau), key(args, t_index, 0), grid.num_exact_rollouts, length)
        exact_revealed, exact_posterior = collapse_curves(process, exact_tokens)
        per_seed = [collapse_curves(process, generate(with_temperature(q, tau), key(args, t_index, 1 + s), grid.num_rollouts, length))
                    for s, q in enumerate(trained.predictors)]
        revealed = np.stack([r for r, _ in per_seed])
        posterior = np.stack([p for _, p in per_seed])
        rows.append({
            "temperature": tau, "n": n,
            "model_revealed": revealed, "model_revealed_stderr": binomial_stderr(revealed, grid.num_rollouts),
            "model_posterior_w": posterior,
            "model_revealed_final": mean_ci(revealed[:, -1]), "model_posterior_w_final": mean_ci(posterior[:, -1]),
            "bayes_revealed": exact_revealed, "bayes_revealed_stderr": binomial_stderr(exact_revealed, grid.num_exact_rollouts),
            "bayes_posterior_w": exact_posterior,
        })
        print(f"  tau={tau:g}: revealed by {length}: model {rows[-1]['model_revealed_final']['mean']:.4f}"
              f" +- {rows[-1]['model_revealed_final']['half_width']:.4f}, Bayes {exact_revealed[-1]:.4f}", flush=True)
    closed_form = grid.prior_w * (1 - (1 - grid.reveal_prob) ** n)
    return {"rows": rows, "closed_form": {"n": n, "revealed": closed_form, "posterior_w": np.full(length, grid.prior_w)},
            "training": {"seeds": seeds, "evaluation": trained.evaluation, "wall_s": trained.wall_s}}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact posteriors and Bayes rollouts in float64
    return write_record(NAME, "C10", args, {"grid": dataclasses.asdict(grid)}, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
