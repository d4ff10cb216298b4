"""C7: do a trained model's own outputs look model-made? (generated text in the training data)

Data: D = (1 - beta) H + beta M (toymodels/processes/generated.py, generated_text_mixture): H is a
random hidden Markov model (the "human" process; a small Dirichlet concentration makes it fairly
predictable, so that a distortion of it can be noticed) and M an earlier model of H, here H at a
temperature tau (toymodels.predictors.with_temperature).
Two choices of M, one training each (several seeds trained together):
  flatter  tau > 1: M spreads its probability more than H, the kind of error a finitely trained
           predictor tends to make (too little confidence) -- measured below, not assumed;
  sharper  tau < 1: M is over-confident, the opposite kind of error.
Measured per seed, always with the exact posterior pi_t = P(M | x_1..x_t) (process.posterior):
  model     mean pi_t over the trained predictor's own rollouts (temperature 1), t = 1..L, with the
            s.e. over rollouts; at t = L the mean and 95% Student-t interval across seeds.
  entropy   how the predictor errs: its mean next-token entropy minus the exact Bayes entropy of D,
            on held-out data (teacher-forced; > 0 means flatter than Bayes, like tau > 1).
References, Monte Carlo with many rollouts: exact Bayes generation (rollouts of D itself: a martingale,
E[pi_t] = beta exactly at every t, the closed form drawn as a line), H's rollouts (E[pi_t] falls) and
M's rollouts (E[pi_t] rises). The question is open (CLAIMS.md C7): the measurement says on which side of
beta the predictor's rollouts fall, for each M.

    python scripts/experiments/c07_generated_text.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from _common import Args, Training, key, mean_ci, parse_args, run_dir, seeds_for, train_seeds, write_record
from toymodels.predictors import PytreeNode
from toymodels.predictors import with_temperature
from toymodels.processes import generated_text_mixture, random_hmm
from toymodels.runs import ModelSize
from toymodels.sampling import generate

NAME = "c07_generated_text"
MODEL_INDEX = 1  # the mixture's components are (human, model): posterior column 1 is P(M | x)


@dataclasses.dataclass(frozen=True)
class Grid:
    temperatures: tuple[tuple[str, float], ...]  # (name, tau) of each M
    beta: float  # fraction of generated documents in the data
    vocab_size: int  # of H (and M)
    num_states: int  # hidden states of H
    concentration: float  # Dirichlet concentration of H's rows (random_hmm): small is more predictable
    human_seed: int  # draws H
    training: Training  # its length is the rollout length L
    num_seeds: int
    num_rollouts: int  # per seed
    num_reference: int  # rollouts of D, H and M each
    num_heldout: int  # data sequences for the entropy diagnostic

    def __post_init__(self):
        if not 0 < self.beta < 1:
            raise ValueError(f"beta must lie in (0, 1), got {self.beta}")
        if not self.temperatures or any(tau <= 0 for _, tau in self.temperatures):
            raise ValueError("temperatures must name at least one positive tau")
        if self.num_seeds < 1 or min(self.num_rollouts, self.num_reference, self.num_heldout) < 2:
            raise ValueError("num_seeds >= 1 and at least 2 rollouts and held-out sequences are needed")


PROFILES = {
    "quick": Grid(temperatures=(("flatter", 1.5), ("sharper", 0.6)), beta=0.3, vocab_size=3, num_states=2,
                  concentration=0.2, human_seed=1,
                  training=Training(ModelSize(num_layers=2, d_model=32, num_heads=2), steps=400, batch_size=64, length=24),
                  num_seeds=3, num_rollouts=2000, num_reference=8000, num_heldout=1000),
    "full": Grid(temperatures=(("flatter", 1.5), ("sharper", 0.6)), beta=0.3, vocab_size=3, num_states=2,
                 concentration=0.2, human_seed=1,
                 training=Training(ModelSize(num_layers=4, d_model=64, num_heads=4), steps=8000, batch_size=256, length=64,
                                   learning_rate=1e-3),
                 num_seeds=8, num_rollouts=20000, num_reference=100000, num_heldout=10000),
}


class TrainingData(PytreeNode):
    """The data mixture as the training engine's data source. The engine draws batches inside jit, where
    MixtureProcess.sample cannot run (it reads its weights on the host); this draws a full batch from each
    component and keeps each row's component, the same distribution, traceably. Everything else is the
    mixture's own."""

    _data_fields = ("mixture",)

    def __init__(self, mixture):
        self.mixture = mixture

    vocab_size = property(lambda self: self.mixture.vocab_size)
    max_length = property(lambda self: self.mixture.max_length)

    def log_conditionals(self, tokens):
        return self.mixture.log_conditionals(tokens)

    def log_prob(self, tokens):
        return self.mixture.log_prob(tokens)

    def sample(self, rng_key, num_sequences: int, length: int):
        choice_key, human_key, model_key = jax.random.split(rng_key, 3)
        human, model = self.mixture.components
        which = jax.random.categorical(choice_key, self.mixture.log_weights, shape=(num_sequences,))
        from_human = human.sample(human_key, num_sequences, length)
        from_model = generate(model, model_key, num_sequences, length)
        return jnp.where((which == MODEL_INDEX)[:, None], from_model, from_human).astype(jnp.int32)


def posterior_curve(process, tokens) -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e. over rollouts [R, L] of pi_t = P(M | x_1..x_t), t = 1..L."""
    pi = np.asarray(process.posterior(jnp.asarray(tokens)), np.float64)[:, 1:, MODEL_INDEX]
    return pi.mean(axis=0), pi.std(axis=0, ddof=1) / np.sqrt(len(pi))


def entropy_gap(process, predictor, tokens) -> float:
    """Mean over positions and held-out sequences of H(q(.|x<t)) - H(p(.|x<t)) (nats)."""
    def entropy(log_c):
        log_c = np.asarray(log_c, np.float64)
        p = np.exp(log_c)
        return -np.sum(np.where(p > 0, p * np.where(p > 0, log_c, 0.0), 0.0), axis=-1)

    return float((entropy(predictor.log_conditionals(tokens)) - entropy(process.log_conditionals(tokens))).mean())


def measure_model(name: str, tau: float, grid: Grid, args: Args, index: int) -> dict:
    kwargs = {"vocab_size": grid.vocab_size, "num_states": grid.num_states, "concentration": grid.concentration,
              "seed": grid.human_seed}
    human = random_hmm(**kwargs)
    model = with_temperature(human, tau)
    process = generated_text_mixture(human, model, grid.beta)
    length = grid.training.length
    seeds = seeds_for(args.seed, grid.num_seeds)
    trained = train_seeds(TrainingData(process), grid.training, seeds, run_dir(args, NAME, f"{name}-tau{tau:g}"),
                          {"process": {"name": "generated_text_mixture", "human": {"random_hmm": kwargs},
                                       "model_temperature": tau, "beta": grid.beta}})
    references = {}
    for r, (label, source) in enumerate((("bayes", process), ("human", human), ("generator", model))):
        tokens = (source.sample(key(args, index, r), grid.num_reference, length) if hasattr(source, "sample")
                  else generate(source, key(args, index, r), grid.num_reference, length))
        references[label], references[f"{label}_stderr"] = posterior_curve(process, tokens)
    heldout = process.sample(key(args, index, 3), grid.num_heldout, length)
    curves, stderrs, gaps = [], [], []
    for s, predictor in enumerate(trained.predictors):
        mean, stderr = posterior_curve(process, generate(predictor, key(args, index, 4 + s), grid.num_rollouts, length))
        curves.append(mean)
        stderrs.append(stderr)
        gaps.append(entropy_gap(process, predictor, heldout))
    curves = np.stack(curves)
    final = mean_ci(curves[:, -1])
    row = {"name": name, "temperature": tau, "beta": grid.beta, "t": np.arange(1, length + 1), "seeds": seeds,
           "model": curves, "model_stderr": np.stack(stderrs), "model_final": final,
           "model_mean_over_t": mean_ci(curves.mean(axis=1)), "entropy_gap": gaps, "entropy_gap_summary": mean_ci(gaps),
           "bayes_entropy_gap_of_generator": entropy_gap(process, model, heldout), **references,
           "closed_form_bayes": np.full(length, grid.beta),
           "training": {"evaluation": trained.evaluation, "wall_s": trained.wall_s}}
    print(f"  M = {name} (tau {tau:g}): E[pi_L] model {final['mean']:.4f} +- {final['half_width']:.4f},"
          f" Bayes {references['bayes'][-1]:.4f} (exact {grid.beta}), H {references['human'][-1]:.4f},"
          f" M {references['generator'][-1]:.4f}; entropy gap {np.mean(gaps):+.4f} nats", flush=True)
    return row


def measure(grid: Grid, args: Args) -> dict:
    return {"rows": [measure_model(name, tau, grid, args, i) for i, (name, tau) in enumerate(grid.temperatures)]}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact posteriors in float64 (training stays float32)
    return write_record(NAME, "C7", args, {"grid": dataclasses.asdict(grid)}, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
