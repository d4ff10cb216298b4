"""One training run from the command line's point of view: a process family by name, a model size, a
TrainConfig and an output directory, to result files (scripts/train.py is `tyro.cli(RunConfig)` + `run`).

The output directory holds
    config.json     the RunConfig, the process, the TransformerConfig and the TrainConfig
    metrics.jsonl   one JSON record per logged step or evaluation (training.train)
    checkpoints/    orbax checkpoints; the newest holds the final parameters
    final.json      per-slot evaluation against the exact Bayes predictor (and theory.divergence KLs
                    if asked), the slots, wall time and run_metadata() (versions, devices, code version)
A rerun with the same directory resumes (or, if finished, only re-evaluates); `load_predictor(out)`
gives a slot back as a TransformerPredictor.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import time
from pathlib import Path

import jax

from toymodels.evaluation import divergences
from toymodels.processes import make_process
from toymodels.results import run_metadata, write_json_atomic
from toymodels.training import TrainConfig, train, unstack
from toymodels.transformer import POSITIONS, TransformerConfig
from toymodels.transformer_predictor import TransformerPredictor

FINAL_FILE = "final.json"
DIVERGENCE_METHODS = ("enumeration", "monte_carlo")


def parse_process_kwargs(text: str) -> dict:
    """A process family's keyword arguments given on a command line as a JSON object."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"process_kwargs must be a JSON object, got {text!r}: {error}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"process_kwargs must be a JSON object, got {text!r}")
    return kwargs


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """The transformer's shape; its vocabulary comes from the process, its context from the sequence length."""

    num_layers: int = 2  # N: transformer blocks
    d_model: int = 64  # D: width of the residual stream
    num_heads: int = 4  # H: attention heads per block
    mlp_width: int | None = None  # M: hidden width of each MLP (None: 4 * d_model)
    positions: str = "learned"  # "learned" or "rotary" position information
    myopic: bool = False  # stop gradients into keys/values of earlier positions
    dtype: str = "float32"  # activations and key-value cache, e.g. "bfloat16" for GPU sweeps
    attention: str = "einsum"  # the full pass's attention (toymodels.transformer.ATTENTION), e.g. "pallas"

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")

    def config(self, vocab_size: int, context: int) -> TransformerConfig:
        """The TransformerConfig of this size for a vocabulary and a context (validated there)."""
        return TransformerConfig(vocab_size=vocab_size, context=context, **dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Train transformers on a process with exact ground truth, and evaluate them against it."""

    out: str  # output directory (created; a rerun with the same directory resumes)
    process: str = "mess3"  # process family name (toymodels.processes.families())
    process_kwargs: str = "{}"  # the family's keyword arguments as a JSON object, e.g. '{"x": 0.05}'
    model: ModelSize = ModelSize()  # transformer size
    train: TrainConfig = TrainConfig()  # steps, batch, seeds, learning rates, optimizer, evaluation
    divergence_length: int = 0  # also compute theory.divergence forward/generation KL at this length (0: no)
    divergence_method: str = "enumeration"  # "enumeration" (exact; V^length sequences) or "monte_carlo"
    divergence_samples: int = 4096  # Monte Carlo sequences per divergence
    divergence_seed: int = 0  # key of the Monte Carlo divergences
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        if not self.out:
            raise ValueError("out must name an output directory")
        parse_process_kwargs(self.process_kwargs)
        if self.divergence_method not in DIVERGENCE_METHODS:
            raise ValueError(f"divergence_method must be one of {DIVERGENCE_METHODS}, got {self.divergence_method!r}")
        for name in ("divergence_length", "divergence_samples", "divergence_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "divergence_samples" else 0):
                raise ValueError(f"{name} must be a non-negative int (divergence_samples >= 2), got {value!r}")
        if self.divergence_length > self.train.sequence_length:
            raise ValueError(f"divergence_length {self.divergence_length} exceeds sequence_length {self.train.sequence_length}")

    @property
    def kwargs(self) -> dict:
        """process_kwargs parsed."""
        return parse_process_kwargs(self.process_kwargs)

    def make_process(self):
        return make_process(self.process, **self.kwargs)


def _per_slot(evaluation: dict, slots) -> list[dict]:
    return [{"seed": seed, "learning_rate": lr, **{k: v[i] for k, v in evaluation.items()}}
            for i, (seed, lr) in enumerate(slots)]


def run(config: RunConfig) -> dict:
    """Train, evaluate, and write the output directory; return the final.json record."""
    began = time.perf_counter()
    process = config.make_process()
    model_config = config.model.config(process.vocab_size, config.train.sequence_length)
    info = {"process": {"name": config.process, "kwargs": config.kwargs}}  # with model and train: what is computed
    result = train(process, model_config, config.train, out_dir=config.out, run_info=info, quiet=config.quiet)
    slots = config.train.slots
    record = {
        "run": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("model", "train")},
        "slots": [{"seed": seed, "learning_rate": lr} for seed, lr in slots],
        "evaluation": _per_slot(result.evaluation, slots) if result.evaluation is not None else None,
        "evaluation_config": dataclasses.asdict(config.train.evaluation),  # the settings it was made with
        "final_loss": next((r["loss"] for r in reversed(result.history) if "loss" in r), None),
    }
    if config.divergence_length:
        key = jax.random.key(config.divergence_seed)
        record["divergences"] = [
            divergences(process, TransformerPredictor(model_config, unstack(result.state.params, i)), config.divergence_length,
                        config.divergence_method, key=key, num_samples=config.divergence_samples)
            for i in range(len(slots))
        ]
    record["wall_s"] = time.perf_counter() - began
    record["metadata"] = run_metadata()
    record["metadata"]["versions"].update({name: importlib.metadata.version(name) for name in ("optax", "orbax-checkpoint")})
    if jax.process_index() == 0:
        write_json_atomic(Path(config.out) / FINAL_FILE, record)
    return record
