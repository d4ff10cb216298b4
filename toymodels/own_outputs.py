"""Training on own outputs (C12): refit a model, generation after generation, on data it generated.

Generation 0 is fitted to N sequences from the true process P (or given). Generation k >= 1 is fitted
to a dataset of N - round(alpha N) sequences sampled from generation k - 1 and round(alpha N) fresh
sequences from P; with `accumulate`, every earlier dataset is kept too (data grow by N a generation,
and generation 0's real data never leave). Each generation records the exact forward KL
F = KL(P_n || Q_k,n) (infinite once Q_k has lost a sequence P produces) and generation KL
G = KL(Q_k,n || P_n), by enumeration of V^n (theory.divergence).

The loop is generic over a *fitter*, an object with
    fit(key, tokens [N, L], previous_model) -> model
    sample(model, key, num_sequences, length) -> tokens [num_sequences, length]
    predictor(model) -> a Predictor (for the exact divergences)
so it is validated first with models that are fitted exactly, the categorical and Markov maximum-
likelihood fits of theory/claims/c12_own_outputs.py, against C12's closed-form facts (lost support is
never regained without fresh data; accumulated data keep generation 0's support), then run with
transformers trained on the fixed dataset (`TransformerFitter`, through data.DatasetProcess).
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from theory.claims.c12_own_outputs import markov_mle, smoothed_mle
from theory.divergence import forward_kl, generation_kl
from toymodels.data import DatasetProcess
from toymodels.evaluation import EvalConfig
from toymodels.processes import make_process, markov_chain
from toymodels.results import run_metadata, write_json_atomic
from toymodels.runs import ModelSize, parse_process_kwargs
from toymodels.sampling import generate
from toymodels.training import TrainConfig, train, unstack
from toymodels.transformer import TransformerConfig
from toymodels.transformer_predictor import TransformerPredictor

# Sub-streams of each generation's key.
OWN, FRESH, FIT = 0, 1, 2


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def iid_process(probs):
    """The process whose tokens are i.i.d. draws from `probs` (a Markov chain with identical rows)."""
    probs = np.asarray(probs, np.float64)
    return markov_chain(np.tile(probs, (probs.size, 1)), initial=probs)


@partial(jax.jit, static_argnames=("shape",))
def _categorical_sample(key, logits, shape):
    return jax.random.categorical(key, logits, shape=shape).astype(jnp.int32)


@jax.jit
def _generation_keys(key, generation):
    """The OWN, FRESH and FIT keys of one generation: fold_in(fold_in(key, generation), stream)."""
    root = jax.random.fold_in(key, generation)
    return tuple(jax.random.fold_in(root, stream) for stream in (OWN, FRESH, FIT))


# --------------------------------------------------------------------------------------------------
# Fitters
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CategoricalFitter:
    """An i.i.d. categorical model over V tokens, fitted by (smoothed) maximum likelihood: the token
    frequencies of the whole dataset (C12's smoothed_mle). With length-1 sequences this is exactly
    C12's categorical refit."""

    vocab_size: int
    smoothing: float = 0.0  # additive smoothing lambda (0: the MLE)

    def fit(self, key, tokens, previous=None) -> np.ndarray:
        counts = np.bincount(np.asarray(tokens).ravel(), minlength=self.vocab_size).astype(np.float64)
        return np.asarray(smoothed_mle(counts, self.smoothing))

    def sample(self, model, key, num_sequences: int, length: int):
        with np.errstate(divide="ignore"):
            logits = np.log(model)
        return _categorical_sample(key, logits, shape=(int(num_sequences), int(length)))

    def predictor(self, model):
        return iid_process(model)


@dataclasses.dataclass(frozen=True)
class MarkovFitter:
    """A first-order Markov chain fitted by maximum likelihood: first-token frequencies and the
    transition count ratios of C12's markov_mle. Rows never visited keep the previous model's rows
    (`keep_unvisited`, which makes lost support absorbing) or become uniform."""

    vocab_size: int
    keep_unvisited: bool = True

    def fit(self, key, tokens, previous=None) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.asarray(tokens)
        initial = np.bincount(tokens[:, 0], minlength=self.vocab_size) / tokens.shape[0]
        rows = previous[1] if (previous is not None and self.keep_unvisited) else None
        return initial, markov_mle(tokens, self.vocab_size, previous=rows)

    def sample(self, model, key, num_sequences: int, length: int):
        return self.predictor(model).sample(key, num_sequences, length)

    def predictor(self, model):
        return markov_chain(model[1], initial=model[0])


@dataclasses.dataclass(frozen=True)
class TransformerFitter:
    """A transformer trained by training.train on the fixed dataset (a DatasetProcess: batches are rows
    drawn with replacement). Fresh parameters each generation, or the previous generation's
    (`warm_start`). The run's seed is drawn from the fit key, so the loop's key fixes everything."""

    model_config: TransformerConfig
    train_config: TrainConfig  # its seeds are replaced by one seed drawn from the key
    warm_start: bool = False

    def fit(self, key, tokens, previous=None):
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        config = dataclasses.replace(self.train_config, seeds=(seed,), learning_rates=())
        data = DatasetProcess(np.asarray(tokens), self.model_config.vocab_size)
        start = previous if (previous is not None and self.warm_start) else None
        result = train(data, self.model_config, config, quiet=True, initial_params=start)
        return unstack(result.state.params, 0)

    def sample(self, model, key, num_sequences: int, length: int):
        return generate(self.predictor(model), key, num_sequences, length)

    def predictor(self, model):
        return TransformerPredictor(self.model_config, model)


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


class OwnOutputsResult(NamedTuple):
    """What `own_outputs_loop` returns."""

    records: list  # per generation: {"generation", "dataset_size", "forward_kl", "generation_kl", ...}
    models: list  # the fitted model of every generation (row 0: generation 0)


def measure(process, predictor, length: int) -> dict:
    """Exact F and G over `length` tokens with their off-support fractions (enumeration)."""
    forward = forward_kl(process, predictor, length)
    backward = generation_kl(process, predictor, length)
    return {"forward_kl": forward.value, "forward_off_support": forward.off_support_fraction,
            "generation_kl": backward.value, "generation_off_support": backward.off_support_fraction}


def own_outputs_loop(fitter, process, key, *, generations: int, num_samples: int, length: int,
                     alpha: float = 0.0, accumulate: bool = False, initial: Any = None,
                     divergence_length: int | None = None) -> OwnOutputsResult:
    """Run the loop of the module docstring for `generations` refits after generation 0.

    Generation k uses fold_in(key, k) and its sub-streams OWN, FRESH, FIT. `initial`: generation 0's
    model (default: fitted to N sequences of the process). F and G are measured over
    `divergence_length` tokens (default `length`; 0: not measured, for fast Monte Carlo studies).
    """
    _check_int("generations", generations, 0)
    _check_int("num_samples", num_samples, 1)
    _check_int("length", length, 1)
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    divergence_length = length if divergence_length is None else divergence_length
    _check_int("divergence_length", divergence_length, 0)
    if divergence_length > length:
        raise ValueError(f"divergence_length {divergence_length} exceeds length {length}")
    num_fresh = int(round(alpha * num_samples))

    records, models, data = [], [], None
    for k in range(generations + 1):
        own_key, fresh_key, fit_key = _generation_keys(key, k)
        if k == 0 and initial is not None:
            model = initial
        else:
            if k == 0:
                new = np.asarray(process.sample(fresh_key, num_samples, length))
            else:
                # alpha near 1 can leave no own samples (or no fresh ones): samplers reject a count of 0.
                parts = []
                if num_samples - num_fresh:
                    parts.append(np.asarray(fitter.sample(models[-1], own_key, num_samples - num_fresh, length)))
                if num_fresh:
                    parts.append(np.asarray(process.sample(fresh_key, num_fresh, length)))
                new = np.concatenate(parts).astype(np.int32)
            data = np.concatenate([data, new]) if (accumulate and data is not None) else new
            model = fitter.fit(fit_key, data, models[-1] if models else None)
        models.append(model)
        record = {"generation": k, "dataset_size": 0 if data is None else int(data.shape[0])}
        if divergence_length:
            record.update(measure(process, fitter.predictor(model), divergence_length))
        records.append(record)
    return OwnOutputsResult(records, models)


# --------------------------------------------------------------------------------------------------
# The command line's view (scripts/own_outputs.py)
# --------------------------------------------------------------------------------------------------

FITTERS = ("categorical", "markov", "transformer")
OWN_OUTPUTS_FILE = "own_outputs.json"


@dataclasses.dataclass(frozen=True)
class OwnOutputsRunConfig:
    """Refit a model on its own generations for several generations, for each fraction of fresh data."""

    out: str  # output directory (own_outputs.json is written there)
    process: str = "markov_chain"  # the true process's family (toymodels.processes.families())
    process_kwargs: str = '{"transition": [[0.8, 0.15, 0.05], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]]}'  # JSON
    fitter: str = "transformer"  # "categorical" or "markov" (exact MLE fits) or "transformer"
    generations: int = 4  # refits after generation 0
    num_samples: int = 256  # N: sequences per generation
    length: int = 6  # L: tokens per sequence (the transformer's context)
    alphas: tuple[float, ...] = (0.0, 0.5)  # fractions of fresh data from the true process, one loop each
    accumulate: bool = False  # keep every earlier generation's data too
    divergence_length: int = 0  # exact F and G over this many tokens (0: length)
    smoothing: float = 0.0  # additive smoothing of the categorical fit
    seed: int = 0  # the loop's key
    model: ModelSize = ModelSize(num_layers=1, d_model=32, num_heads=2)  # transformer fitter's size
    train: TrainConfig = TrainConfig(steps=300, batch_size=64, evaluation=EvalConfig(final=False))  # its run

    def __post_init__(self):
        if not self.out:
            raise ValueError("out must name an output directory")
        if self.fitter not in FITTERS:
            raise ValueError(f"fitter must be one of {FITTERS}, got {self.fitter!r}")
        parse_process_kwargs(self.process_kwargs)
        for name, minimum in (("generations", 0), ("num_samples", 1), ("length", 1), ("divergence_length", 0),
                              ("seed", 0)):
            _check_int(name, getattr(self, name), minimum)
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        if not self.alphas or any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"alphas must be one or more numbers in [0, 1], got {self.alphas}")
        if self.train.learning_rates:  # the fitter trains one model per generation: one rate
            raise ValueError("train.learning_rates is not used by the own-outputs loop (one model per "
                             "generation); set train.optimizer.learning_rate instead")

    def make_fitter(self, vocab_size: int):
        if self.fitter == "categorical":
            return CategoricalFitter(vocab_size, self.smoothing)
        if self.fitter == "markov":
            return MarkovFitter(vocab_size)
        train_config = dataclasses.replace(self.train, sequence_length=self.length)
        return TransformerFitter(self.model.config(vocab_size, self.length), train_config)


def run(config: OwnOutputsRunConfig) -> dict:
    """Run the loop for every alpha and write OUT/own_outputs.json; return its record."""
    began = time.perf_counter()
    process = make_process(config.process, **parse_process_kwargs(config.process_kwargs))
    fitter = config.make_fitter(process.vocab_size)
    loops = []
    for alpha in config.alphas:
        result = own_outputs_loop(fitter, process, jax.random.key(config.seed), generations=config.generations,
                                  num_samples=config.num_samples, length=config.length, alpha=alpha,
                                  accumulate=config.accumulate, divergence_length=config.divergence_length or None)
        loops.append({"alpha": alpha, "accumulate": config.accumulate, "records": result.records})
    record = {"config": dataclasses.asdict(config), "loops": loops, "wall_s": time.perf_counter() - began,
              "metadata": run_metadata()}
    if isinstance(fitter, TransformerFitter):  # what each fit ran with: train's seeds and length are replaced
        record["fit_train"] = {**dataclasses.asdict(fitter.train_config),
                               "seeds": "one per generation, drawn from the loop's fit key"}
    write_json_atomic(Path(config.out) / OWN_OUTPUTS_FILE, record)
    return record
