"""What every learned-model experiment shares: its command line, training seeds through the engine,
confidence intervals across seeds, and the result record.

An experiment script is `python scripts/experiments/<name>.py --profile quick|full --out RESULTS`; it
writes RESULTS/<name>/<profile>.json (atomically) and keeps its training runs under
RESULTS/<name>/<profile>-train/<tag>/, so a killed experiment resumes its trainings from their last
checkpoints on the next call and a finished one is not retrained.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import tyro
from scipy import stats

from toymodels.data import EXPERIMENT_STREAM, stream_key
from toymodels.optimizer import OptimizerConfig
from toymodels.probes import probe_layers, shuffled_control
from toymodels.results import run_metadata, write_json_atomic
from toymodels.runs import ModelSize
from toymodels.training import TrainConfig, train, unstack
from toymodels.transformer_predictor import TransformerPredictor


@dataclasses.dataclass(frozen=True)
class Args:
    """Run one experiment."""

    profile: Literal["quick", "full"] = "quick"  # quick: minutes on a 2-core CPU; full: the paper's numbers (GPU/TPU)
    out: str = "results"  # results directory; writes <out>/<experiment>/<profile>.json
    seed: int = 0  # root seed: training seeds and every evaluation key derive from it


def parse_args(doc: str | None) -> Args:
    return tyro.cli(Args, description=doc)


@dataclasses.dataclass(frozen=True)
class Training:
    """How an experiment trains its transformers (one engine run trains every seed at once)."""

    size: ModelSize
    steps: int
    batch_size: int
    length: int  # training sequence length = the model's context
    learning_rate: float = 3e-3  # peak of AdamW's warmup-then-cosine schedule

    def train_config(self, seeds: tuple[int, ...]) -> TrainConfig:
        optimizer = OptimizerConfig(learning_rate=self.learning_rate)
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, sequence_length=self.length, seeds=seeds,
                           optimizer=optimizer, log_every=max(1, self.steps // 10), checkpoint_every=max(1, self.steps // 4))


@dataclasses.dataclass
class Trained:
    """A finished engine run: one Predictor per seed and the final evaluation against Bayes."""

    predictors: list[TransformerPredictor]
    evaluation: dict  # per-slot arrays of toymodels.evaluation (kl, loss_ratio, ...), as lists
    seeds: tuple[int, ...]
    wall_s: float
    params: Any = None  # every seed's parameters, stacked (what `train_seeds(initial_params=...)` takes)


def train_seeds(process, training: Training, seeds: tuple[int, ...], run_dir: Path, info: dict,
                initial_params=None) -> Trained:
    """Train one model per seed on `process` (one program) in `run_dir` (resumed if present); with
    `initial_params` (a Trained's params), fine-tune those models instead of fresh ones."""
    began = time.perf_counter()
    model_config = training.size.config(process.vocab_size, training.length)
    result = train(process, model_config, training.train_config(seeds), out_dir=run_dir, run_info=info,
                   quiet=not sys.stderr.isatty(), initial_params=initial_params)
    predictors = [TransformerPredictor(model_config, unstack(result.state.params, i)) for i in range(len(seeds))]
    evaluation = {k: np.asarray(v).tolist() for k, v in (result.evaluation or {}).items()}
    return Trained(predictors, evaluation, tuple(seeds), time.perf_counter() - began, result.state.params)


def seeds_for(root: int, count: int) -> tuple[int, ...]:
    """`count` distinct training seeds derived from the experiment's root seed."""
    return tuple(int(root) * 1000 + i for i in range(count))


def mean_ci(values, level: float = 0.95) -> dict:
    """Mean and a Student-t confidence interval across seeds (half-width 0 for a single value; infinite
    values give an infinite mean and no interval)."""
    x = np.asarray(values, np.float64)
    mean = float(x.mean())
    if x.size < 2 or not np.all(np.isfinite(x)):
        return {"mean": mean, "low": mean, "high": mean, "half_width": 0.0 if x.size < 2 else math.nan, "n": int(x.size)}
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "n": int(x.size)}


def binomial_stderr(fraction, count: int):
    """Standard error of a fraction of `count` independent draws."""
    f = np.asarray(fraction, np.float64)
    return np.sqrt(f * (1 - f) / max(count, 1))


def write_record(name: str, claim: str, args: Args, config: dict, measured: dict, began: float) -> Path:
    """Write <out>/<name>/<profile>.json with the config, seed, code version, device and wall time."""
    record = {"experiment": name, "claim": claim, "config": {"profile": args.profile, "seed": args.seed, **config},
              "metadata": {**run_metadata(), "wall_time_s": time.perf_counter() - began}, **measured}
    path = write_json_atomic(Path(args.out) / name / f"{args.profile}.json", record)
    print(f"{name}: wrote {path} in {record['metadata']['wall_time_s']:.0f} s", flush=True)
    return path


def run_dir(args: Args, name: str, tag: str) -> Path:
    return Path(args.out) / name / f"{args.profile}-train" / tag


def key(args: Args, *path: int):
    """An evaluation key: the experiment stream of the seed (toymodels.data.EXPERIMENT_STREAM), folded
    along `path`. Its own stream, so that no path gives a training run's key: key(seed) folded along
    (1, t) is the batch key of step t, and a held-out set drawn with it repeated that training batch."""
    k = stream_key(args.seed, EXPERIMENT_STREAM)
    for i in path:
        k = jax.random.fold_in(k, i)
    return k


def model_outputs(predictor: TransformerPredictor, tokens) -> tuple[np.ndarray, np.ndarray]:
    """A trained transformer's log q(x_t = v | x<t) [B, L, V] (float32) and its residual stream
    [N+1, B, L, D] (after the embedding and after each block; index t is the representation that predicts
    x_t, so it is probed against a latent's posterior after t tokens), from one jitted pass (for probes)."""
    log_q, residuals = _model_outputs(predictor, jax.numpy.asarray(tokens, jax.numpy.int32))
    return np.asarray(log_q), np.asarray(residuals)


@jax.jit
def _model_outputs(predictor: TransformerPredictor, tokens):
    # The predictor is a pytree with its config static: one compilation per architecture and shape.
    return predictor.outputs(tokens)


def probe_scores(residuals, targets, *, key, ridge: float = 0.0, train_fraction: float = 0.5) -> tuple[dict, object]:
    """Linear probes from every layer's residual stream [Y, B, L, D] to targets [B, L, K] (toymodels.probes,
    sequences split by `key`) and their shuffled-target controls on the same split: held-out R^2 and MSE
    per layer as lists ({"r2", "r2_shuffled", "mse", "mse_shuffled", "r2_train"}), and the fitted probes
    (weights [Y, D, K], bias [Y, K])."""
    real = probe_layers(residuals, targets, key=key, train_fraction=train_fraction, ridge=ridge)
    control = shuffled_control(residuals, targets, key=key, train_fraction=train_fraction, ridge=ridge)
    scores = {"r2": real.test.r2, "r2_shuffled": control.test.r2, "mse": real.test.mse, "mse_shuffled": control.test.mse,
              "r2_train": real.train.r2}
    return {name: np.asarray(value, np.float64).tolist() for name, value in scores.items()}, real.probes
