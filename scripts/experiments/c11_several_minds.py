"""C11: one residual stream carries the beliefs about two minds at once.

Data: a dialog of two agents A and B (toymodels.processes.dialog) with independent latent types
a ~ uniform(Ka), b ~ uniform(Kb); they alternate turns of `turn_length` tokens, and each token depends
only on its speaker's type: i.i.d. tokens per type (order 0, `unigram_dialog` below; both profiles) or
also on the previous token (order 1, random_dialog). Transformers (several seeds, trained together)
learn it. On one held-out batch x ~ P:

  probe R^2 per layer: linear probes (toymodels.probes, ridge; fitted on a random half of the held-out
  sequences, R^2 on the rest) from each layer's residual stream at position t to the exact posteriors
  after x<t (process.posterior entry t) over A's type, over B's type, and over the pair (the joint); each with a
  control probe fitted to targets shuffled across positions. Across seeds: mean and 95% Student-t
  interval. The claim's prediction: both marginal posteriors are decodable (R^2 near 1) from the same
  layer's residual stream, far above the shuffled control.

  factorisation (exact, no model): on held-out data of the dialog and of its coupled variant
  (coupled=True: each speaker's policy depends on both types), the joint posterior
  pi(a, b | x<t) against the product of its marginals pi(a | x<t) pi(b | x<t): the largest absolute
  difference, the mean total variation and the mean mutual information of the posterior (nats) per
  position. For the dialog they vanish up to float64 rounding; for the coupled dialog they do not.

  by next speaker: the same kind of probes (fitted on the first half of the sequences, every position)
  scored separately at the positions where A speaks next and where B does: is the silent agent's type
  decodable while the other one speaks?

  example: for one held-out sequence that no probe saw (the batch's last, left out of the probes' data),
  the exact marginal posteriors and the ones the last layer's probes decode (seed 0), position by position.

Randomness: held-out data key(seed, 1) (coupled: key(seed, 4)), probe splits and shuffles key(seed, 2, s).
Exact quantities in float64 (turns on x64 mode); models train in float32.

    python scripts/experiments/c11_several_minds.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from _common import (
    Args,
    Training,
    key,
    mean_ci,
    model_outputs,
    parse_args,
    probe_scores,
    run_dir,
    seeds_for,
    train_seeds,
    write_record,
)
from toymodels.probes import evaluate_probe, fit_probe
from toymodels.processes.dialog import coupled_dialog, dialog, random_dialog
from toymodels.runs import ModelSize

NAME = "c11_several_minds"
TARGETS = ("type_a", "type_b", "types")  # A's type, B's type, the pair


def unigram_dialog(num_types_a: int, num_types_b: int, vocab_size: int, turn_length: int, seed: int,
                   coupled: bool = False, closeness: float = 0.0):
    """The order-0 counterpart of random_dialog: each type of each agent (coupled: each pair of types, for
    each agent) speaks i.i.d. tokens from its own distribution, whatever the previous token. With
    rng = numpy.random.default_rng(seed): `shared` ~ Dirichlet(1) over V, then A's own distributions, then
    B's; each type speaks closeness * shared + (1 - closeness) * own. Uniform type priors."""
    rng = np.random.default_rng(seed)
    shared = rng.dirichlet(np.ones(vocab_size))
    shape_a, shape_b = ((num_types_a, num_types_b),) * 2 if coupled else ((num_types_a,), (num_types_b,))
    rows_a, rows_b = (closeness * shared + (1 - closeness) * rng.dirichlet(np.ones(vocab_size), size=shape)
                      for shape in (shape_a, shape_b))
    policies_a, policies_b = (np.repeat(rows[..., None, :], vocab_size, axis=-2) for rows in (rows_a, rows_b))
    priors = np.full(num_types_a, 1 / num_types_a), np.full(num_types_b, 1 / num_types_b)
    build = coupled_dialog if coupled else dialog
    return build(policies_a, policies_b, *priors, turn_length=turn_length)


@dataclasses.dataclass(frozen=True)
class Dialog:
    """The dialog: unigram_dialog (order 0) or random_dialog (order 1: each token depends on the previous)."""

    num_types_a: int
    num_types_b: int
    vocab_size: int
    turn_length: int
    process_seed: int
    order: int = 0  # 0: unigram_dialog; 1: random_dialog
    closeness: float = 0.0  # order 0: the fraction of every type's distribution that all types share

    def __post_init__(self):
        if self.order not in (0, 1):
            raise ValueError(f"order must be 0 (i.i.d. tokens per type) or 1 (Markov policies), got {self.order!r}")
        if not 0 <= self.closeness < 1 or (self.order == 1 and self.closeness):
            raise ValueError(f"closeness must lie in [0, 1) and be 0 for order 1, got {self.closeness!r}")

    def process(self, coupled: bool = False):
        if self.order == 1:
            return random_dialog(self.num_types_a, self.num_types_b, self.vocab_size, self.turn_length, self.process_seed,
                                 coupled=coupled)
        return unigram_dialog(self.num_types_a, self.num_types_b, self.vocab_size, self.turn_length, self.process_seed,
                              coupled=coupled, closeness=self.closeness)


@dataclasses.dataclass(frozen=True)
class Grid:
    dialog: Dialog
    training: Training
    num_seeds: int
    heldout: int  # held-out sequences (a random half fits the probes, the rest scores them; all enter the factorisation check)
    ridge: float  # probe ridge penalty (toymodels.probes)

    def __post_init__(self):
        if self.num_seeds < 1 or self.heldout < 4:
            raise ValueError(f"num_seeds must be >= 1 and heldout >= 4, got {self.num_seeds}, {self.heldout}")


PROFILES = {
    "quick": Grid(dialog=Dialog(num_types_a=3, num_types_b=3, vocab_size=4, turn_length=3, process_seed=0, closeness=0.3),
                  training=Training(ModelSize(num_layers=2, d_model=32, num_heads=2), steps=400, batch_size=32, length=36,
                                    learning_rate=1e-2),
                  num_seeds=3, heldout=1000, ridge=1e-3),
    "full": Grid(dialog=Dialog(num_types_a=3, num_types_b=3, vocab_size=4, turn_length=3, process_seed=0, closeness=0.3),
                 training=Training(ModelSize(num_layers=4, d_model=64, num_heads=4), steps=5000, batch_size=256, length=72),
                 num_seeds=8, heldout=8000, ridge=1e-3),
}


def factorisation(process, tokens) -> dict:
    """How far the exact joint posterior over (a, b) is from the product of its marginals, per position."""
    joint = np.asarray(process.posterior(tokens, "types"), np.float64)  # [N, L+1, Ka*Kb], index a * Kb + b
    post_a = np.asarray(process.posterior(tokens, "type_a"), np.float64)
    post_b = np.asarray(process.posterior(tokens, "type_b"), np.float64)
    product = (post_a[..., :, None] * post_b[..., None, :]).reshape(joint.shape)
    gap = np.abs(joint - product)
    ratio = np.where(joint > 0, np.log(np.where(joint > 0, joint, 1.0)) - np.log(np.where(product > 0, product, 1.0)), 0.0)
    mutual = np.sum(np.where(joint > 0, joint * ratio, 0.0), axis=-1)  # KL(joint || product) per sequence and t
    tv = 0.5 * gap.sum(-1)
    return {"max_abs": float(gap.max()), "tv": tv.mean(0), "mutual_information": mutual.mean(0),
            "mean_tv": float(tv.mean()), "mean_mutual_information": float(mutual.mean()),
            "max_mutual_information": float(mutual.max())}


def probe_targets(residuals, targets: dict, ridge: float, probe_key) -> tuple[dict, dict]:
    """Per target: held-out R^2 and MSE per layer of the probes and their shuffled controls, and the fitted
    probes. The last sequence is left out of the probes' data, to be decoded as the example."""
    scores, probes = {}, {}
    for index, (name, target) in enumerate(targets.items()):
        scores[name], probes[name] = probe_scores(residuals[:, :-1], target[:-1], key=jax.random.fold_in(probe_key, index),
                                                  ridge=ridge)
    return scores, probes


def by_speaker(residuals, targets: dict, speaker_BxL, ridge: float) -> dict:
    """{target: {"A": [R^2 per layer], "B": [...]}}: probes fitted on the first half of the sequences (all
    positions) and scored on the second half separately where A and where B speaks the next token, i.e.
    is a silent agent's type still decodable while the other one speaks?"""
    half = residuals.shape[1] // 2
    out = {}
    for name, target in targets.items():
        out[name] = {"A": [], "B": []}
        for layer in range(residuals.shape[0]):
            probe = fit_probe(residuals[layer, :half].reshape(-1, residuals.shape[-1]),
                              target[:half].reshape(-1, target.shape[-1]), ridge)
            for index, label in enumerate("AB"):
                where = speaker_BxL[half:] == index
                score = evaluate_probe(probe, residuals[layer, half:][where], target[half:][where])
                out[name][label].append(float(score.r2))
    return out


def decode(probe, residuals_YxLxD) -> np.ndarray:
    """[L, K]: the last layer's probe applied to one sequence's last residual stream."""
    return np.asarray(residuals_YxLxD[-1] @ np.asarray(probe.weights[-1]) + np.asarray(probe.bias[-1]))


def measure(grid: Grid, args: Args) -> dict:
    began = time.perf_counter()
    process = grid.dialog.process()
    seeds = seeds_for(args.seed, grid.num_seeds)
    info = {"process": {"name": "unigram_dialog" if grid.dialog.order == 0 else "random_dialog",
                        "kwargs": dataclasses.asdict(grid.dialog)}}
    trained = train_seeds(process, grid.training, seeds, run_dir(args, NAME, "models"), info)
    print(f"  trained {len(seeds)} seeds in {trained.wall_s:.0f} s", flush=True)

    length = grid.training.length
    tokens = process.sample(key(args, 1), grid.heldout, length)
    targets = {name: np.asarray(process.posterior(tokens, name), np.float64)[:, :length] for name in TARGETS}
    speaker = np.argmax(np.asarray(process.posterior(tokens, "speaker"))[:, :length], axis=-1)  # 0: A speaks x_t
    per_seed, split = [], []
    for index, predictor in enumerate(trained.predictors):
        _, residuals = model_outputs(predictor, tokens)
        scores, probes = probe_targets(residuals, targets, grid.ridge, key(args, 2, index))
        per_seed.append(scores)
        split.append(by_speaker(residuals, targets, speaker, grid.ridge))
        if index == 0:
            decoded = {name: decode(probes[name], residuals[:, -1]) for name in TARGETS[:2]}
    layers = len(per_seed[0][TARGETS[0]]["r2"])
    summary = {name: [{"layer": layer, **{m: mean_ci([p[name][m][layer] for p in per_seed])
                                          for m in ("r2", "r2_shuffled", "mse", "mse_shuffled", "r2_train")}}
                      for layer in range(layers)]
               for name in TARGETS}
    for name in TARGETS:
        print(f"  probe R^2 per layer, {name}: " + ", ".join(
            f"{r['r2']['mean']:.3f} (shuffled {r['r2_shuffled']['mean']:.3f})" for r in summary[name]), flush=True)

    speaking = {name: {who: [mean_ci([r[name][who][layer] for r in split]) for layer in range(layers)] for who in "AB"}
                for name in TARGETS}
    exact = {name: targets[name][-1] for name in TARGETS[:2]}

    coupled = grid.dialog.process(coupled=True)
    checks = {"dialog": factorisation(process, tokens),
              "coupled_dialog": factorisation(coupled, coupled.sample(key(args, 4), grid.heldout, length))}
    for name, check in checks.items():
        print(f"  factorisation, {name}: max |joint - product| {check['max_abs']:.3g}, mean TV {check['mean_tv']:.3g}, "
              f"mean I(a; b | x<t) {check['mean_mutual_information']:.3g} nats", flush=True)
    print(f"  measured in {time.perf_counter() - began:.0f} s", flush=True)
    return {"positions": np.arange(length),
            "probes": {"per_layer": summary, "per_seed": per_seed, "by_next_speaker": speaking},
            "example": {"exact": exact, "decoded": decoded, "layer": layers - 1, "seed": seeds[0]},
            "factorisation": checks,
            "training": {"seeds": seeds, "evaluation": trained.evaluation, "wall_s": trained.wall_s}}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact posteriors (and the factorisation check) in float64
    return write_record(NAME, "C11", args, {"grid": dataclasses.asdict(grid)}, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
