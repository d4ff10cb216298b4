"""C6: offscreen-text hallucination in trained models, against the Bayes rate (1-e)s / ((1-e)s + e).

Data: offscreen(s, e) (toymodels/processes/offscreen.py): a command, an output (genuinely empty with
probability e, else a content c that data processing strips with probability s, leaving the EMPTY
token), then a commentary that describes the true output. One training per grid point (s, e), several
seeds trained together. Per seed, with the exact process as the reference:

  rate        the model's hallucination rate: its probability that the commentary describes content
              ("say c" for some c) after a command and an EMPTY-looking output, averaged over commands
              with their exact probabilities P(m | EMPTY) (from process.log_prob). Read off the model's
              conditionals (no sampling noise). Exact Bayes: the same average of process.log_conditionals,
              and the closed form (1-e)s / ((1-e)s + e) (whatever the command).
  generated   the same rate in the model's own generations: among sampled documents whose output is
              EMPTY, the fraction whose commentary describes content (binomial s.e. per seed).
  copy        the model's commentary entropy (nats) after a visible content (exact Bayes: 0, a copy),
              averaged with the exact probabilities of (command, content).
Marked variant (offscreen(..., marked=True): a stripped output shows its own STRIPPED token): the rate
after EMPTY (exact Bayes 0: an EMPTY output is genuinely empty), and after STRIPPED the model's
commentary entropy against the exact guessing entropy H(c | command).
Fine-tuning on marked data (for each marked (s, e)): models trained on unmarked data in the marked
vocabulary (offscreen(..., reserve_stripped_token=True)) are fine-tuned on marked data for each of
`finetune_steps`; per length, the rate after EMPTY (the unmarked Bayes rate before, exact 0 for the
marked process) and after STRIPPED (exact 1).
Across seeds: mean and 95% Student-t interval. Not measured here (CLAIMS.md C6 also asks for it): a
linear probe separating copying from hallucinating states.

    python scripts/experiments/c06_offscreen.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from _common import Args, Training, binomial_stderr, key, mean_ci, parse_args, run_dir, seeds_for, train_seeds, write_record
from toymodels.processes import offscreen
from toymodels.runs import ModelSize
from toymodels.sampling import generate

NAME = "c06_offscreen"
LENGTH = 4  # command, output, commentary, end of document


@dataclasses.dataclass(frozen=True)
class Grid:
    strip_probs: tuple[float, ...]  # s values; every (s, e) pair is one training
    empty_probs: tuple[float, ...]  # e values
    marked: tuple[tuple[float, float], ...]  # (s, e) pairs also trained on marked data
    training: Training
    num_seeds: int
    num_generations: int  # sampled documents per seed for the generated rate
    num_contents: int = 3  # K
    num_commands: int = 2  # M
    finetune_steps: tuple[int, ...] = ()  # fine-tuning lengths on marked data, from unmarked models

    def __post_init__(self):
        for s, e in list(itertools.product(self.strip_probs, self.empty_probs)) + list(self.marked):
            if not (0 < s < 1 and 0 < e < 1):
                raise ValueError(f"strip and empty probabilities must lie in (0, 1), got s={s}, e={e}")
        if self.training.length < LENGTH:
            raise ValueError(f"training.length must be >= {LENGTH} (a whole document and its end)")
        if self.num_seeds < 1 or self.num_generations < 2:
            raise ValueError("num_seeds >= 1 and num_generations >= 2 are needed")
        if any(steps < 1 for steps in self.finetune_steps):
            raise ValueError(f"finetune_steps must be positive, got {self.finetune_steps}")


def _training(steps: int, batch: int, size: ModelSize, lr: float = 1e-2) -> Training:
    return Training(size, steps=steps, batch_size=batch, length=LENGTH, learning_rate=lr)


PROFILES = {
    "quick": Grid(strip_probs=(0.2, 0.5, 0.8), empty_probs=(0.1, 0.4), marked=((0.8, 0.1), (0.5, 0.4)),
                  training=_training(150, 256, ModelSize(num_layers=1, d_model=32, num_heads=2)),
                  num_seeds=3, num_generations=4000, finetune_steps=(10, 30, 100)),
    "full": Grid(strip_probs=(0.1, 0.3, 0.5, 0.7, 0.9), empty_probs=(0.05, 0.2, 0.4, 0.6), marked=((0.9, 0.05), (0.5, 0.2), (0.5, 0.6)),
                 training=_training(3000, 512, ModelSize(num_layers=2, d_model=64, num_heads=4), lr=3e-3),
                 num_seeds=8, num_generations=50000, finetune_steps=(30, 100, 300, 1000)),
}


def bayes_rate(s: float, e: float) -> float:
    """C6's closed form: P(commentary describes content | EMPTY shown) = (1-e)s / ((1-e)s + e)."""
    return (1 - e) * s / ((1 - e) * s + e)


def _entropy(log_p: np.ndarray) -> np.ndarray:
    p = np.exp(log_p)
    return -np.sum(np.where(p > 0, p * np.where(p > 0, log_p, 0.0), 0.0), axis=-1)


def prefixes(process, shown: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents (m, shown, pad, pad) for every command m, and their exact weights P(m | shown)."""
    info = process.info
    commands = np.asarray(info["command_tokens"])
    tokens = np.zeros((len(commands), LENGTH), np.int32)
    tokens[:, 0], tokens[:, 1] = commands, shown
    log_joint = np.asarray(process.log_prob(jnp.asarray(tokens[:, :2])), np.float64)
    weights = np.exp(log_joint - np.logaddexp.reduce(log_joint))
    return tokens, weights


def commentary_stats(process, predictor, shown: int) -> dict:
    """After (m, shown): the weighted probability of a content commentary, and the weighted entropy."""
    tokens, weights = prefixes(process, shown)
    log_q = np.asarray(predictor.log_conditionals(jnp.asarray(tokens)), np.float64)[:, 2]
    describe = np.exp(log_q[:, list(process.info["commentary_tokens"])]).sum(axis=1)
    return {"rate": float(weights @ describe), "entropy": float(weights @ _entropy(log_q))}


def copy_entropy(process, predictor) -> float:
    """Commentary entropy after a visible content, averaged with exact weights P(m, c shown)."""
    info = process.info
    pairs = np.array(list(itertools.product(info["command_tokens"], info["content_tokens"])), np.int32)
    tokens = np.concatenate([pairs, np.zeros((len(pairs), LENGTH - 2), np.int32)], axis=1)
    log_joint = np.asarray(process.log_prob(jnp.asarray(pairs)), np.float64)
    weights = np.exp(log_joint - np.logaddexp.reduce(log_joint))
    log_q = np.asarray(predictor.log_conditionals(jnp.asarray(tokens)), np.float64)[:, 2]
    return float(weights @ _entropy(log_q))


def generated_rate(process, predictor, num: int, rng_key) -> dict:
    """Among the model's sampled documents with an EMPTY output, the fraction that describe content."""
    info = process.info
    tokens = np.asarray(generate(predictor, rng_key, num, LENGTH - 1))
    empty = tokens[:, 1] == info["empty_token"]
    describes = np.isin(tokens[:, 2], info["commentary_tokens"])
    count = int(empty.sum())
    rate = float(describes[empty].mean()) if count else float("nan")
    return {"generated": rate, "generated_stderr": float(binomial_stderr(rate, count)), "generated_count": count,
            "generated_empty_fraction": float(empty.mean())}


def measure_point(s: float, e: float, marked: bool, grid: Grid, args: Args, index: int) -> dict:
    process = offscreen(s, e, marked=marked, num_contents=grid.num_contents, num_commands=grid.num_commands)
    info = process.info
    kwargs = {"strip_prob": s, "empty_prob": e, "marked": marked, "num_contents": grid.num_contents,
              "num_commands": grid.num_commands}
    seeds = seeds_for(args.seed, grid.num_seeds)
    tag = f"{'marked' if marked else 'plain'}-s{s:g}-e{e:g}"
    trained = train_seeds(process, grid.training, seeds, run_dir(args, NAME, tag), {"process": {"name": "offscreen", "kwargs": kwargs}})
    bayes = commentary_stats(process, process, info["empty_token"])
    row = {"strip_prob": s, "empty_prob": e, "marked": marked, "closed_form": 0.0 if marked else bayes_rate(s, e),
           "bayes": bayes["rate"], "bayes_copy_entropy": copy_entropy(process, process), "seeds": seeds}
    per_seed = []
    for i, predictor in enumerate(trained.predictors):
        stats = commentary_stats(process, predictor, info["empty_token"])
        one = {"rate": stats["rate"], "copy_entropy": copy_entropy(process, predictor),
               **generated_rate(process, predictor, grid.num_generations, key(args, index, i))}
        if marked:
            guess = commentary_stats(process, predictor, info["stripped_token"])
            one |= {"stripped_rate": guess["rate"], "stripped_entropy": guess["entropy"]}
        per_seed.append(one)
    row["per_seed"] = per_seed
    names = ("rate", "copy_entropy", "generated") + (("stripped_rate", "stripped_entropy") if marked else ())
    row["summary"] = {name: mean_ci([r[name] for r in per_seed]) for name in names}
    if marked:
        guess = commentary_stats(process, process, info["stripped_token"])
        row |= {"bayes_stripped_rate": guess["rate"], "bayes_stripped_entropy": guess["entropy"]}
    row["training"] = {"evaluation": trained.evaluation, "wall_s": trained.wall_s}
    rate = row["summary"]["rate"]
    print(f"  s={s:g} e={e:g}{' marked' if marked else ''}: model {rate['mean']:.4f} +- {rate['half_width']:.4f},"
          f" Bayes {row['bayes']:.4f} (closed form {row['closed_form']:.4f}), generated"
          f" {row['summary']['generated']['mean']:.4f}", flush=True)
    return row


def measure_finetune(s: float, e: float, grid: Grid, args: Args) -> dict:
    """Unmarked-data models fine-tuned on marked data: rates after EMPTY and STRIPPED per length."""
    common = {"strip_prob": s, "empty_prob": e, "num_contents": grid.num_contents, "num_commands": grid.num_commands}
    marked = offscreen(marked=True, **common)
    info = marked.info
    seeds = seeds_for(args.seed, grid.num_seeds)
    tag = f"s{s:g}-e{e:g}"
    base = train_seeds(offscreen(reserve_stripped_token=True, **common), grid.training, seeds,
                       run_dir(args, NAME, f"reserved-{tag}"),
                       {"process": {"name": "offscreen", "kwargs": {**common, "reserve_stripped_token": True}}})
    stages = [(0, base)]
    for steps in grid.finetune_steps:
        tuned = train_seeds(marked, dataclasses.replace(grid.training, steps=steps), seeds,
                            run_dir(args, NAME, f"finetune{steps}-{tag}"),
                            {"process": {"name": "offscreen", "kwargs": {**common, "marked": True}},
                             "finetuned_from": f"reserved-{tag}"}, initial_params=base.params)
        stages.append((steps, tuned))
    points = []
    for steps, trained in stages:
        after_empty = [commentary_stats(marked, p, info["empty_token"])["rate"] for p in trained.predictors]
        after_stripped = [commentary_stats(marked, p, info["stripped_token"])["rate"] for p in trained.predictors]
        points.append({"steps": steps, "rate_after_empty": mean_ci(after_empty), "rate_after_stripped": mean_ci(after_stripped),
                       "per_seed_after_empty": after_empty})
    last = points[-1]["rate_after_empty"]
    print(f"  fine-tuned on marked data, s={s:g} e={e:g}: rate after EMPTY {points[0]['rate_after_empty']['mean']:.4f}"
          f" -> {last['mean']:.4f} +- {last['half_width']:.4f} in {points[-1]['steps']} steps", flush=True)
    return {"strip_prob": s, "empty_prob": e, "bayes_unmarked": bayes_rate(s, e), "seeds": seeds, "points": points}


def closed_form_curves(grid: Grid) -> dict:
    """The closed form on a dense s grid for every e (and every marked e), for the figure."""
    s = np.linspace(0.0, 1.0, 101)
    empties = sorted(set(grid.empty_probs) | {e for _, e in grid.marked})
    return {"strip_prob": s, "curves": [{"empty_prob": e, "rate": (1 - e) * s / ((1 - e) * s + e)} for e in empties]}


def measure(grid: Grid, args: Args) -> dict:
    points = [(s, e, False) for e in grid.empty_probs for s in grid.strip_probs] + [(s, e, True) for s, e in grid.marked]
    rows = [measure_point(s, e, marked, grid, args, i) for i, (s, e, marked) in enumerate(points)]
    finetune = [measure_finetune(s, e, grid, args) for s, e in grid.marked] if grid.finetune_steps else []
    return {"rows": rows, "closed_form_curves": closed_form_curves(grid), "finetune": finetune}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact rates and weights in float64 (training stays float32)
    return write_record(NAME, "C6", args, {"grid": dataclasses.asdict(grid)}, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
