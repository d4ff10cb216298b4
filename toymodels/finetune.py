"""Supervised fine-tuning (C9): continue training a model on data from another process.

C9 says fine-tuning reweights the population of personas a model already simulates. On a persona
stage, data drawn from a subset of the personas in proportion to the prior are exactly the stage
whose prior is restricted to the subset (`processes.personas.restrict_prior`), so the exact answer
fine-tuning should approach is that restricted-prior Bayes mixture: a model fine-tuned to the limit
has forward KL F_n = KL(P_target,n || Q_n) -> 0 to it, starting near KL(P_target,n || P_base,n) (the
gap of a model that is exactly Bayes for the base mixture).

Fine-tuning here is `training.train` started from given parameters (its `initial_params` hook):
the same jitted step, optimizer, seeds x learning-rate slots, checkpoints and held-out evaluation as
pre-training. `finetune` adds the exact forward KL to named reference processes, by enumeration of
V^n (theory.divergence), before the first step and every `kl_every` steps. `FinetuneRunConfig` /
`run` are the command line's view (scripts/finetune.py): a base run directory written by
scripts/train.py, a persona subset or another process, and a TrainConfig.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from theory.divergence import forward_kl
from toymodels.processes import make_process
from toymodels.processes.personas import restrict_prior
from toymodels.results import read_json, run_metadata, write_json_atomic
from toymodels.runs import parse_process_kwargs
from toymodels.checkpoints import Checkpointer
from toymodels.run_files import CHECKPOINT_DIR, CONFIG_FILE
from toymodels.sharding import fetch
from toymodels.training import TrainConfig, TrainResult, load_predictor, train
from toymodels.transformer_predictor import TransformerPredictor

FINETUNE_FILE = "finetune.json"
KL_PROGRESS_FILE = "finetune_kl.json"  # the KL records so far, for a resumed run


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class FinetuneResult(NamedTuple):
    """What `finetune` returns."""

    train: TrainResult  # training.train's result (final stacked state, metric history, evaluation)
    kl: list  # per measured step: {"step", reference name: [F_n per slot]} (step 0 = the base model)


def persona_prior(process) -> np.ndarray:
    """The prior over the process's "persona" latent: its posterior before any token."""
    if "persona" not in getattr(process, "latents", {}):
        raise ValueError("process has no 'persona' latent; a persona subset needs a persona stage")
    empty = np.zeros((1, 0), np.int32)
    return np.asarray(process.posterior(empty, "persona"), np.float64)[0, 0]


def restricted_kwargs(name: str, kwargs: dict, subset) -> dict:
    """`kwargs` of the family `name` with its persona prior restricted to `subset` and renormalised:
    the process of fine-tuning data drawn from those personas in proportion to the prior. The family
    must take a `prior` argument (persona_stage, random_persona_stage)."""
    prior = restrict_prior(persona_prior(make_process(name, **kwargs)), list(subset))
    return {**kwargs, "prior": prior.tolist()}


def restricted_process(name: str, kwargs: dict, subset):
    """The process of `restricted_kwargs`: the reweighted Bayes mixture fine-tuning should approach."""
    return make_process(name, **restricted_kwargs(name, kwargs, subset))


def exact_kls(references: dict, predictor, length: int) -> dict[str, float]:
    """Forward KL F_n = KL(P_n || Q_n) of `predictor` to every reference process, by enumeration."""
    return {name: forward_kl(process, predictor, length).value for name, process in references.items()}


def finetune(process, base: TransformerPredictor, config: TrainConfig, *, references: dict | None = None,
             kl_length: int = 0, kl_every: int = 10, out_dir=None, run_info: dict | None = None,
             quiet: bool = True) -> FinetuneResult:
    """Fine-tune `base` on data from `process`: every slot of `config` starts from base.params.

    `base` is `training.load_predictor(run_dir, slot)` for a saved run, or
    `TransformerPredictor(model_config, params)` for parameters in memory.

    With `kl_length` > 0, records the exact forward KL over kl_length tokens from each of
    `references` (default {"target": process}) to every slot, at step 0 and every `kl_every` steps
    and after the last one (the enumeration of V^kl_length sequences must be affordable). With
    `out_dir` the run is written and resumed as training.train does, and the KL records are kept in
    OUT/finetune_kl.json as they are measured: a resumed run keeps those up to the checkpoint it resumes
    from (the later ones it measures again), so its curve equals an uninterrupted run's.
    """
    if not isinstance(base, TransformerPredictor):
        raise ValueError(f"base must be a TransformerPredictor, got {type(base).__name__}")
    _check_int("kl_length", kl_length, 0)
    _check_int("kl_every", kl_every, 1)
    if kl_length > config.sequence_length:
        raise ValueError(f"kl_length {kl_length} exceeds the training sequence_length {config.sequence_length}")
    references = {"target": process} if references is None else dict(references)
    num_slots, records = len(config.slots), []

    saved = Path(out_dir) / KL_PROGRESS_FILE if out_dir is not None else None

    def keep(*new) -> None:
        records.extend(new)
        if saved is not None and jax.process_index() == 0:
            write_json_atomic(saved, {"records": records})

    def measure(step: int, slot_params) -> None:
        per_slot = [exact_kls(references, TransformerPredictor(base.config, params), kl_length) for params in slot_params]
        keep({"step": step, **{name: [kls[name] for kls in per_slot] for name in references}})

    def callback(step: int, state) -> None:
        if kl_length and (step % kl_every == 0 or step == config.steps):
            stacked = fetch(state.params)  # one gather for every slot
            measure(step, [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_slots)])

    if kl_length:  # every slot starts from the base model: measure it once
        kls = exact_kls(references, base, kl_length)
        first = {"step": 0, **{name: [kls[name]] * num_slots for name in references}}
        keep(first, *(_resumed_records(Path(out_dir)) if out_dir is not None else []))
    result = train(process, base.config, config, out_dir=out_dir, run_info=run_info, callback=callback,
                   quiet=quiet, initial_params=base.params)
    return FinetuneResult(result, records)


def _resumed_records(out: Path) -> list:
    """KL records after step 0 that a previous run of `out` measured up to its latest checkpoint."""
    if not (out / KL_PROGRESS_FILE).exists() or not (out / CHECKPOINT_DIR).exists():
        return []
    with Checkpointer(out / CHECKPOINT_DIR, every=0) as checkpointer:
        start = checkpointer.latest_step() or 0
    return [r for r in read_json(out / KL_PROGRESS_FILE)["records"] if 0 < r["step"] <= start]


def kl_curves(records: list, name: str = "target") -> tuple[np.ndarray, np.ndarray]:
    """(steps [T], F_n [T, S]) of one reference from `finetune`'s KL records."""
    return np.asarray([r["step"] for r in records]), np.asarray([r[name] for r in records], np.float64)


# --------------------------------------------------------------------------------------------------
# The command line's view
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinetuneRunConfig:
    """Fine-tune a trained run on another process (by default its own, restricted to a persona subset)."""

    out: str  # output directory (training files as scripts/train.py writes them, plus finetune.json)
    base: str  # run directory of the model to fine-tune (written by scripts/train.py)
    seed_index: int = 0  # which slot of the base run (an index into its TrainConfig.slots)
    process: str = ""  # process family of the fine-tuning data ("": the base run's family)
    process_kwargs: str = ""  # its keyword arguments as a JSON object ("": the base run's)
    subset: tuple[int, ...] = ()  # persona indices: fine-tune on the prior restricted to these (C9)
    train: TrainConfig = TrainConfig(steps=300, batch_size=64, sequence_length=8)  # fine-tuning run
    kl_length: int = 6  # exact forward KL over this many tokens by enumeration (0: none)
    kl_every: int = 10  # measure it every this many steps
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        if not self.out or not self.base:
            raise ValueError("out and base must name directories")
        _check_int("seed_index", self.seed_index, 0)
        object.__setattr__(self, "subset", tuple(int(i) for i in self.subset))
        if self.process_kwargs:
            parse_process_kwargs(self.process_kwargs)
        _check_int("kl_length", self.kl_length, 0)
        _check_int("kl_every", self.kl_every, 1)

    def processes(self) -> tuple[tuple[str, dict], object, object]:
        """((family, kwargs) of the fine-tuning data, the base run's process, the fine-tuning process)."""
        record = read_json(Path(self.base) / CONFIG_FILE)
        if "process" not in record:
            raise ValueError(f"{self.base} does not record its process; pass --process and --process-kwargs")
        base_name, base_kwargs = record["process"]["name"], record["process"]["kwargs"]
        name = self.process or base_name
        kwargs = parse_process_kwargs(self.process_kwargs) if self.process_kwargs else (base_kwargs if name == base_name else {})
        if self.subset:
            kwargs = restricted_kwargs(name, kwargs, self.subset)
        return (name, kwargs), make_process(base_name, **base_kwargs), make_process(name, **kwargs)


def run(config: FinetuneRunConfig) -> dict:
    """Fine-tune, measure the exact KL curves, and write OUT/finetune.json; return its record."""
    began = time.perf_counter()
    (name, kwargs), base_process, target = config.processes()
    base = load_predictor(config.base, config.seed_index)
    references = {"target": target, "base_process": base_process}
    info = {"process": {"name": name, "kwargs": kwargs}, "finetune": {"base": config.base, "seed_index": config.seed_index}}
    result = finetune(target, base, config.train, references=references, kl_length=config.kl_length,
                      kl_every=config.kl_every, out_dir=config.out, run_info=info, quiet=config.quiet)
    record = {
        "run": {k: v for k, v in dataclasses.asdict(config).items() if k != "train"},
        "train": dataclasses.asdict(config.train),
        "process": info["process"],
        "slots": [{"seed": seed, "learning_rate": lr} for seed, lr in config.train.slots],
        "kl": result.kl,
        "final_loss": next((r["loss"] for r in reversed(result.train.history) if "loss" in r), None),
    }
    if config.kl_length:
        # The exact answer's starting gap: a model that is exactly Bayes for the base mixture.
        record["kl_target_to_base_process"] = forward_kl(target, base_process, config.kl_length).value
    record["wall_s"] = time.perf_counter() - began
    record["metadata"] = run_metadata()
    if jax.process_index() == 0:
        write_json_atomic(Path(config.out) / FINETUNE_FILE, record)
    return record
