"""C13: a transformer trained on Mess3 carries the exact belief state linearly in its residual stream.

Reproduces the Mess3 result of Shai et al. 2024: Mess3 with x = 0.05, alpha = 0.85; a transformer of
4 layers, d_model 64, one attention head of width 8, context 10 (MLP width 256), trained by next-token
prediction with our engine (several seeds in one vmapped program). At each budget of training tokens
seen per seed, on held-out sequences (toymodels.data.heldout_batch, never trained on):

  belief probes   per residual stream (embedding, block 1..4; at the last budget also all five
                  concatenated), a least-squares linear probe from residual position t to the exact
                  belief after t tokens (toymodels.probes; held-out sequences split into
                  probe-training and probe-test halves);
                  held-out MSE (mean over examples and the 3 belief coordinates) and R^2;
  control         the same probes fitted to beliefs permuted across examples: held-out R^2 about 0
                  (a chance fit spreads it by about 2 / sqrt(probe-training examples), 0.02 here);
  next-token      (last budget) the same probes to the exact next-token distribution p(. | x<t) (C13's
                  "latent posterior vs next-token distribution" question; for Mess3 the two are an
                  invertible linear map of each other, see theory/claims/c13_belief_geometry.py);
  loss / optimal  (optimal + KL) / optimal, where optimal = H(X_1..X_10) / 10 is the exact
                  position-averaged Bayes loss (theory.claims.c13_belief_geometry.optimal_loss, by
                  enumeration) and KL the held-out per-token KL(p || q) at sampled prefixes, an
                  unbiased, low-variance estimate of the model's excess expected loss. The raw held-out
                  loss over the optimum is stored too (its sampling error is ~0.5%, too coarse for 1.002).

Targets: final-layer belief-probe MSE <= 0.0025 and loss <= 1.002 x optimal, both by 3.2M tokens.
For the simplex figure, the final layer's probe predictions on held-out examples of the first seed
are stored at every budget next to the exact beliefs. Runs in float32.

    python scripts/experiments/c13_belief_geometry.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from theory.claims.c13_belief_geometry import SHAI_2024, bayes_loss_per_position, optimal_loss
from toymodels.data import heldout_batch
from toymodels.evaluation import compare_conditionals, summarize
from toymodels.optimizer import OptimizerConfig
from toymodels.probes import align_targets, probe_layers, shuffled_control, split_sequences
from toymodels.processes import mess3
from toymodels.results import run_metadata, write_json_atomic
from toymodels.training import TrainConfig, train, unstack
from toymodels.transformer import TransformerConfig
from toymodels.transformer_predictor import TransformerPredictor

NAME = "c13_belief_geometry"
CONTEXT = 10
MODEL = TransformerConfig(vocab_size=3, context=CONTEXT, num_layers=4, d_model=64, num_heads=1, head_dim=8)
LAYERS = ("embedding",) + tuple(f"block {i + 1}" for i in range(MODEL.num_layers))
TARGETS = {"mse": 0.0025, "loss_ratio": 1.002, "tokens": 3_200_000}


@dataclasses.dataclass(frozen=True)
class Grid:
    num_seeds: int  # models trained together (one vmapped program); seeds derive from the root seed
    token_budgets: tuple[int, ...]  # tokens seen per seed at which to evaluate (rounded up to whole steps)
    batch_size: int  # sequences of length 10 per step and seed
    learning_rate: float  # peak AdamW learning rate (5% warmup, cosine decay to 10% over the run)
    probe_sequences: int  # held-out sequences for probes and losses (x 10 positions)
    train_fraction: float = 0.5  # fraction of the held-out sequences that fit the probes
    ridge: float = 0.0  # probe ridge penalty (0: least squares)
    simplex_points: int = 1500  # held-out probe predictions stored for the simplex figure

    def __post_init__(self):
        if self.num_seeds < 1 or self.batch_size < 1 or self.probe_sequences < 4 or self.simplex_points < 1:
            raise ValueError("num_seeds, batch_size, simplex_points must be >= 1 and probe_sequences >= 4")
        if not self.token_budgets or min(self.token_budgets) < 1 or list(self.token_budgets) != sorted(set(self.token_budgets)):
            raise ValueError(f"token_budgets must be increasing positive ints, got {self.token_budgets}")
        if not (self.learning_rate > 0 and 0 < self.train_fraction < 1 and self.ridge >= 0):
            raise ValueError("learning_rate must be > 0, train_fraction in (0, 1), ridge >= 0")

    @property
    def steps(self) -> tuple[int, ...]:
        """Training step at which each budget is evaluated (the first step with at least that many tokens)."""
        return tuple(math.ceil(b / (self.batch_size * CONTEXT)) for b in self.token_budgets)


_BUDGETS = (50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000)
PROFILES = {
    # 2 x 3.2M training tokens: 3.6 minutes on 2 CPU cores (8-12 minutes when other jobs share them).
    "quick": Grid(num_seeds=2, token_budgets=_BUDGETS, batch_size=64, learning_rate=1e-3, probe_sequences=2000),
    "full": Grid(num_seeds=8, token_budgets=_BUDGETS + (6_400_000, 12_800_000), batch_size=64, learning_rate=1e-3,
                 probe_sequences=4000),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """C13 Mess3 belief-geometry reproduction: see the module docstring."""

    profile: Literal["quick", "full"] = "quick"  # quick: 2 seeds to 3.2M tokens on a CPU; full: 8 seeds to 12.8M
    out: str = "results"  # results directory; the run is written to <out>/c13_belief_geometry/<profile>.json
    seed: int = 0  # root seed: training seeds root * 1000 + i, the held-out data and every probe split


@lru_cache(maxsize=4)
def _outputs(model_config: TransformerConfig):
    """Jitted (params, tokens) -> (log q [N, L, V] float32, residuals [Y, N, L, D]) of one model,
    read at full precision (TransformerPredictor.outputs)."""

    def outputs(params, tokens):
        return TransformerPredictor(model_config, params).outputs(tokens)

    return jax.jit(outputs)


def _scores(layer_probes) -> dict:
    return {"r2": layer_probes.test.r2, "mse": layer_probes.test.mse, "r2_per_dim": layer_probes.test.r2_per_dim,
            "train_r2": layer_probes.train.r2}


def evaluate(params, data: dict, optimal: float, grid: Grid, key, per_layer: bool) -> tuple[dict, np.ndarray]:
    """One model at one budget: losses against Bayes, belief and control probes per layer, and (if
    `per_layer`: the last budget, which the per-layer figure panel and table read) the next-token and
    concatenated-layer probes; also the final layer's held-out belief predictions for the simplex figure."""
    log_q, residuals = _outputs(MODEL)(params, data["tokens"])
    loss = summarize(compare_conditionals(data["log_p"], log_q, data["tokens"]))
    options = dict(key=key, train_fraction=grid.train_fraction, ridge=grid.ridge)
    belief = probe_layers(residuals, data["beliefs"], **options)
    row = {
        "kl": loss["kl"], "kl_stderr": loss["kl_stderr"], "model_loss": loss["model_loss"], "bayes_loss": loss["bayes_loss"],
        "loss_ratio": (optimal + loss["kl"]) / optimal, "loss_ratio_stderr": loss["kl_stderr"] / optimal,
        "loss_ratio_raw": loss["model_loss"] / optimal, "kl_per_position": loss["kl_per_position"],
        "belief": _scores(belief), "control": _scores(shuffled_control(residuals, data["beliefs"], **options)),
    }
    if per_layer:
        every_layer = jnp.concatenate(list(residuals), axis=-1)[None]  # [1, N, L, Y * D]
        row["next_token"] = _scores(probe_layers(residuals, data["next_token"], **options))
        row["concatenated"] = _scores(probe_layers(every_layer, data["beliefs"], **options))
    test = data["test_rows"]
    final = residuals[-1][test].reshape(-1, MODEL.d_model)[: grid.simplex_points]
    predicted = final @ belief.probes.weights[-1] + belief.probes.bias[-1]
    row = jax.tree.map(lambda x: np.asarray(x, np.float64), row)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}, np.asarray(predicted)


def heldout_data(process, grid: Grid, seed: int, key) -> dict:
    """Held-out tokens [N, 10], exact conditionals, probe targets, and the probe-test rows of `key`'s split."""
    tokens = heldout_batch(process, seed, grid.probe_sequences, CONTEXT)
    log_p = process.log_conditionals(tokens)
    return {"tokens": tokens, "log_p": log_p, "next_token": jnp.exp(log_p),
            "beliefs": align_targets(process.belief_states(tokens)),
            "test_rows": split_sequences(grid.probe_sequences, grid.train_fraction, jax.random.fold_in(key, 0))[1]}


def measure(grid: Grid, seed: int) -> dict:
    """Train grid.num_seeds models to the last budget, evaluating every budget on the way."""
    began = time.perf_counter()
    process = mess3(**SHAI_2024)
    per_position = bayes_loss_per_position(process, CONTEXT)
    optimal = optimal_loss(process, CONTEXT)
    probe_key = jax.random.fold_in(jax.random.key(seed), 1)
    data = heldout_data(process, grid, seed, probe_key)
    seeds = tuple(seed * 1000 + i for i in range(grid.num_seeds))
    config = TrainConfig(steps=grid.steps[-1], batch_size=grid.batch_size, sequence_length=CONTEXT, seeds=seeds,
                         optimizer=OptimizerConfig(learning_rate=grid.learning_rate), log_every=max(1, grid.steps[-1] // 20))
    config = dataclasses.replace(config, evaluation=dataclasses.replace(config.evaluation, final=False))
    rows, simplex, eval_seconds = [], {}, [0.0]
    budget_of = dict(zip(grid.steps, grid.token_budgets))

    def on_step(step: int, state) -> None:
        if step not in budget_of:
            return
        start = time.perf_counter()
        tokens = step * grid.batch_size * CONTEXT
        for index, run_seed in enumerate(seeds):
            row, predicted = evaluate(unstack(state.params, index), data, optimal, grid, probe_key,
                                      per_layer=step == grid.steps[-1])
            rows.append({"budget": budget_of[step], "tokens": tokens, "step": step, "seed": run_seed, **row})
            if index == 0:
                simplex[str(tokens)] = np.round(predicted, 5)
        eval_seconds[0] += time.perf_counter() - start
        mse = [r["belief"]["mse"][-1] for r in rows[-len(seeds):]]
        ratio = [r["loss_ratio"] for r in rows[-len(seeds):]]
        print(f"  {tokens / 1e6:6.2f}M tokens: final-layer probe MSE {np.mean(mse):.5f}, loss/optimal "
              f"{np.mean(ratio):.5f} ({time.perf_counter() - began:.0f} s)", flush=True)

    history = train(process, MODEL, config, callback=on_step, quiet=True).history
    exact = np.asarray(data["beliefs"])[np.asarray(data["test_rows"])].reshape(-1, 3)[: grid.simplex_points]
    return {
        "optimal": {"loss": optimal, "per_position": per_position, "heldout_bayes_loss": rows[0]["bayes_loss"]},
        "checkpoints": rows,
        "train_loss": [{"step": r["step"], "tokens": r["step"] * grid.batch_size * CONTEXT, "loss": r["loss"]}
                       for r in history if "loss" in r],
        "simplex": {"seed": seeds[0], "layer": LAYERS[-1], "exact": exact, "predicted": simplex},
        "seeds": seeds,
        "timing": {"wall_s": time.perf_counter() - began, "evaluation_s": eval_seconds[0],
                   "train_s": time.perf_counter() - began - eval_seconds[0]},
    }


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def summary(rows: list[dict]) -> list[dict]:
    """Per budget: mean and s.d. across seeds of the final-layer probe MSE and of loss / optimal, and
    whether every seed meets each target."""
    out = []
    for tokens in sorted({r["tokens"] for r in rows}):
        here = [r for r in rows if r["tokens"] == tokens]
        mse = np.array([r["belief"]["mse"][-1] for r in here])
        ratio = np.array([r["loss_ratio"] for r in here])
        out.append({"tokens": tokens, "num_seeds": len(here), "mse_mean": float(mse.mean()), "mse_sd": _sd(mse),
                    "loss_ratio_mean": float(ratio.mean()), "loss_ratio_sd": _sd(ratio),
                    "control_r2_mean": float(np.mean([r["control"]["r2"][-1] for r in here])),
                    "r2_mean": float(np.mean([r["belief"]["r2"][-1] for r in here])),
                    "mse_target_met": bool(np.all(mse <= TARGETS["mse"])),
                    "loss_target_met": bool(np.all(ratio <= TARGETS["loss_ratio"]))})
    return out


def main(profile: str = "quick", out: str | Path = "results", seed: int = 0, grid: Grid | None = None) -> Path:
    """Run C13 on `grid` (default: the profile's) and write the result file; returns its path."""
    grid = PROFILES[profile] if grid is None else grid
    print(f"{NAME}: profile {profile}, {grid.num_seeds} seeds, up to {grid.token_budgets[-1] / 1e6:g}M tokens each", flush=True)
    measured = measure(grid, seed)
    timing = measured.pop("timing")
    record = {
        "experiment": NAME, "claim": "C13",
        "config": {"profile": profile, "seed": seed, "grid": dataclasses.asdict(grid), "steps": grid.steps,
                   "model": dataclasses.asdict(MODEL), "process": {"name": "mess3", **SHAI_2024}, "layers": LAYERS,
                   "targets": TARGETS},
        "metadata": {**run_metadata(), "wall_time_s": timing["wall_s"], "timing": timing},
        **measured,
        "summary": summary(measured["checkpoints"]),
    }
    path = write_json_atomic(Path(out) / NAME / f"{profile}.json", record)
    for s in record["summary"]:
        print(f"  {s['tokens'] / 1e6:6.2f}M tokens: probe MSE {s['mse_mean']:.5f} +- {s['mse_sd']:.5f} "
              f"(target {TARGETS['mse']}: {'met' if s['mse_target_met'] else 'not met'}), loss/optimal "
              f"{s['loss_ratio_mean']:.5f} +- {s['loss_ratio_sd']:.5f} ({'met' if s['loss_target_met'] else 'not met'})")
    print(f"{NAME}: optimal loss {measured['optimal']['loss']:.5f} nats; wrote {path.name} in {timing['wall_s']:.0f} s "
          f"(training {timing['train_s']:.0f} s, evaluation {timing['evaluation_s']:.0f} s)", flush=True)
    return path


if __name__ == "__main__":
    config = tyro.cli(Config)
    main(config.profile, config.out, config.seed)
