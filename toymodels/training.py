"""Training: the run config, the train state, one pure train step, and the loop over seeds, devices
and restarts.

One run trains S slots at once: the slots are seeds x learning_rates, each with its own parameters,
optimizer state and (per seed) data stream, stacked on a leading axis and advanced by one jitted,
donating program: the batch of every slot is drawn on device from the process (data.py), then
`train_step` runs over the slot axis (vmapped; on CPU a loop per device; see `_slot_mode`). The
slot axis is split over the "seeds" axis of a device mesh and each slot's batch over its "data"
axis (sharding.py), so one CPU, fake CPU devices, GPUs or several `jax.distributed` hosts run the
same code. The loop records metrics every `log_every` steps (read one step late, so the host never
stalls the device), shows a tqdm bar, evaluates against the exact Bayes predictor (evaluation.py)
and saves orbax checkpoints (checkpoints.py): a rerun with the same output directory resumes from
the latest one and ends with bit-identical parameters.

Each slot's peak learning rate is part of its state and multiplies the update of a unit-peak AdamW
(optimizer.py), so a vector of learning rates trains in one program. Everything is float32
(parameters, activations, optimizer moments, the loss) whether or not x64 mode is on; token ids are
int32. Shape legend: S slots, B batch, L sequence length, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Int
from tqdm.auto import tqdm

from toymodels.checkpoints import Checkpointer, abstract_like, restore_latest
from toymodels.data import draw_batch, init_key
from toymodels.evaluation import EvalConfig, Evaluator
from toymodels.optimizer import OptimizerConfig, _check_float, make_optimizer, make_schedule
from toymodels.results import read_json
from toymodels.run_files import (CHECKPOINT_DIR, CONFIG_FILE, METRICS_FILE, config_record, truncate_metrics,
                                 write_config)
from toymodels.sharding import DATA, SEEDS, batch_sharding, fetch, make_mesh, replicated, slot_sharding, state_shardings
from toymodels.transformer import TransformerConfig, apply, graphdef_for, init_params, param_shapes
from toymodels.transformer_predictor import TransformerPredictor

def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run of S = len(seeds) * len(learning_rates) slots, trained together."""

    steps: int = 1000  # optimizer steps (also the length of the learning-rate schedule)
    batch_size: int = 64  # B: sequences per step for each slot
    sequence_length: int = 32  # L: tokens per training sequence (at most the model's context)
    seeds: tuple[int, ...] = (0,)  # one slot per seed (x learning rate); a seed fixes init and data
    learning_rates: tuple[float, ...] = ()  # peak learning rates to sweep; empty: optimizer.learning_rate
    optimizer: OptimizerConfig = OptimizerConfig()  # AdamW and its schedule
    evaluation: EvalConfig = EvalConfig()  # held-out evaluation against the exact Bayes predictor
    log_every: int = 100  # read and record metrics every this many steps (and after the last step)
    checkpoint_every: int = 0  # save a checkpoint every this many steps (0: only after the last step)
    keep_checkpoints: int = 2  # checkpoints kept on disk (the newest ones)
    num_devices: int = 0  # devices of the mesh (0: every device of every process; 1: unsharded)

    def __post_init__(self):
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("sequence_length", self.sequence_length, 1)
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "learning_rates", tuple(float(lr) for lr in self.learning_rates))
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
                raise ValueError(f"seeds must be ints in [0, 2**31), got {seed!r}")
        for lr in self.learning_rates:
            _check_float("learning_rates", lr, 0.0, open_low=True)
        for name, kind in (("optimizer", OptimizerConfig), ("evaluation", EvalConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be an {kind.__name__}, got {getattr(self, name)!r}")
        if len(set(self.slots)) != len(self.slots):
            raise ValueError(f"seeds x learning_rates has repeated slots: {self.slots}")
        _check_int("log_every", self.log_every, 1)
        _check_int("checkpoint_every", self.checkpoint_every, 0)
        _check_int("keep_checkpoints", self.keep_checkpoints, 1)
        _check_int("num_devices", self.num_devices, 0)

    @property
    def slots(self) -> tuple[tuple[int, float], ...]:
        """(seed, peak learning rate) of every slot, seed-major: slot i * len(lrs) + j is (seeds[i], lrs[j])."""
        rates = self.learning_rates or (self.optimizer.learning_rate,)
        return tuple((int(seed), float(lr)) for seed in self.seeds for lr in rates)

    @classmethod
    def from_dict(cls, record: dict) -> TrainConfig:
        """Inverse of dataclasses.asdict (as read back from JSON: lists for tuples)."""
        record = dict(record)
        record["optimizer"] = OptimizerConfig(**record.get("optimizer", {}))
        record["evaluation"] = EvalConfig(**record.get("evaluation", {}))
        record["seeds"] = tuple(record.get("seeds", (0,)))
        record["learning_rates"] = tuple(record.get("learning_rates", ()))
        return cls(**record)


# --------------------------------------------------------------------------------------------------
# State and step
# --------------------------------------------------------------------------------------------------


class TrainState(NamedTuple):
    """Everything a step reads; one slot, or S slots stacked on a leading axis of every leaf."""

    params: nnx.State  # model parameters (float32), as transformer.init_params returns them
    opt_state: optax.OptState  # clipping and AdamW state (moments in float32, int32 counts)
    step: Array  # int32 []: optimizer steps taken
    seed: Array  # int32 []: the slot's seed; its initial parameters and batches derive from it
    learning_rate: Array  # float32 []: the slot's peak learning rate


def init_state(model_config: TransformerConfig, optimizer: optax.GradientTransformation, seed, learning_rate) -> TrainState:
    """The state of one slot before its first step (vmap over seeds and learning rates to stack)."""
    params = init_params(model_config, init_key(seed))[1]
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), jnp.asarray(seed, jnp.int32),
                      jnp.asarray(learning_rate, jnp.float32))


def loss_fn(params: nnx.State, graphdef: nnx.GraphDef, tokens_BxL: Int[Array, "B L"]) -> Array:
    """Mean next-token cross-entropy -log q(x_t | x<t) over the batch and every position (nats)."""
    logits_BxLxV = apply(graphdef, params, tokens_BxL).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, tokens_BxL).mean()


def train_step(state: TrainState, tokens_BxL: Int[Array, "B L"], *, graphdef: nnx.GraphDef,
               optimizer: optax.GradientTransformation, data_axis: str | None = None) -> tuple[TrainState, dict[str, Array]]:
    """One AdamW step of one slot on one batch: (new state, {"loss", "grad_norm"} before the step).

    Inside `shard_map`, `data_axis` names the mesh axis the batch is split over: the loss and the
    gradients are averaged over it (equal shares, so this is the mean over the whole batch). That
    shard_map needs check_vma=False (as `_over_slots` sets it): with the check on, autodiff has already
    summed the gradients over `data_axis`, and this mean would leave them n_data times too large."""
    loss, grads = jax.value_and_grad(loss_fn)(state.params, graphdef, tokens_BxL)
    if data_axis is not None:
        loss, grads = jax.lax.pmean((loss, grads), data_axis)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: (state.learning_rate * u).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(params, opt_state, state.step + 1, state.seed, state.learning_rate)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def _slot_arrays(config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    seeds, rates = zip(*config.slots)
    return np.asarray(seeds, np.int32), np.asarray(rates, np.float32)


def abstract_states(model_config: TransformerConfig, config: TrainConfig) -> TrainState:
    """ShapeDtypeStructs of the stacked state of `config`'s slots (nothing is computed)."""
    init = jax.vmap(partial(init_state, model_config, make_optimizer(config.optimizer, config.steps)))
    return jax.eval_shape(init, *_slot_arrays(config))


def init_states(model_config: TransformerConfig, config: TrainConfig, mesh) -> TrainState:
    """The stacked initial state of every slot, each leaf's slot axis split over the mesh's seed axis.

    Each slot is drawn by one jitted single-slot initialiser (the same values as vmap over slots:
    random draws are per key), stacked on the host, and each device gets its rows: one compilation per
    model whatever the number of slots or the mesh (a vmapped initialiser compiles three times slower
    on CPU), and no collective, so every process of a multi-host run does the same independently."""
    init = _compiled_init(model_config, config.optimizer, config.steps)
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves),
                           *(jax.device_get(init(seed, rate)) for seed, rate in zip(*_slot_arrays(config))))
    sharding = slot_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), stacked)


def start_from(states: TrainState, params: nnx.State, model_config: TransformerConfig, config: TrainConfig,
               mesh) -> TrainState:
    """`states` (from init_states) with every slot's parameters replaced by `params` and its optimizer
    state initialised for them: where fine-tuning starts. `params` is one model's parameters (shared
    by every slot) or a stack of S = len(config.slots), as training leaves them; seeds, learning
    rates and step counts are kept, so each slot's data stream is its seed's as usual."""
    num_slots = len(config.slots)
    expected = param_shapes(model_config)
    same_tree = jax.tree.structure(params) == jax.tree.structure(expected)
    shapes = [(tuple(np.shape(x)), jnp.dtype(x.dtype)) for x in jax.tree.leaves(params)] if same_tree else []
    one = [(tuple(x.shape), jnp.dtype(x.dtype)) for x in jax.tree.leaves(expected)]
    if same_tree and shapes == one:
        params = jax.tree.map(lambda x: np.broadcast_to(x, (num_slots,) + x.shape), fetch(params))
    elif not same_tree or shapes != [((num_slots,) + shape, dtype) for shape, dtype in one]:
        raise ValueError(f"initial_params must match the model config (one model's parameters, or a stack of "
                         f"{num_slots} for the run's slots) in structure, shapes and dtypes")
    host = fetch(params)
    opt_state = jax.vmap(make_optimizer(config.optimizer, config.steps).init)(host)
    sharding = slot_sharding(mesh)
    place = partial(jax.tree.map, lambda x: jax.make_array_from_callback(
        np.shape(x), sharding, lambda index, x=np.asarray(x): x[index]))
    return states._replace(params=place(host), opt_state=place(jax.device_get(opt_state)))


@lru_cache(maxsize=16)
def _compiled_init(model_config: TransformerConfig, optimizer: OptimizerConfig, steps: int) -> Callable:
    return jax.jit(partial(init_state, model_config, make_optimizer(optimizer, steps)))


def _draw(process, seed_and_step, *, batch_size: int, length: int):
    return draw_batch(process, *seed_and_step, batch_size, length)


def _loop_over_slots(step_one: Callable, state: TrainState, tokens_SxBxL):
    """step_one on every slot in turn: unbatched for one slot, else a `lax.map` loop."""
    if tokens_SxBxL.shape[0] == 1:
        one, metrics = step_one(jax.tree.map(lambda x: x[0], state), tokens_SxBxL[0])
        return jax.tree.map(lambda x: x[None], (one, metrics))
    return jax.lax.map(lambda args: step_one(*args), (state, tokens_SxBxL))


def _slot_mode(model_config: TransformerConfig, mesh) -> str:
    """How a step runs over the slots: "vmap" batches them into one program that XLA partitions over
    the mesh (accelerators); "loop_per_device" has each device loop over its own slots unbatched (CPUs:
    ops run one after another anyway, so batching gains nothing, and a size-1 vmap even costs about
    15%); "vmap_per_device" has each device batch its own slots (accelerators, for models XLA cannot
    partition)."""
    if mesh.devices.flat[0].platform == "cpu":
        return "loop_per_device"
    # The fused attention kernel is opaque to XLA's partitioner, which may gather every device's inputs
    # to run it whole on each; so on several devices each runs its own share.
    if model_config.attention == "pallas" and mesh.devices.size > 1:
        return "vmap_per_device"
    return "vmap"


def _over_slots(step_one: Callable, state: TrainState, tokens_SxBxL, mesh, mode: str):
    """step_one applied to every slot as `mode` (see _slot_mode) says. Per device (`shard_map`),
    each device takes its slots and its share of their batches, and the gradients are averaged over
    the devices that share a slot's batch."""
    if mode == "vmap":
        return jax.vmap(step_one)(state, tokens_SxBxL)
    local_step = partial(step_one, data_axis=DATA)
    local = partial(_loop_over_slots, local_step) if mode == "loop_per_device" else jax.vmap(local_step)
    # check_vma=False: with it on, differentiating the local loss with respect to the parameters (the
    # same on every device of the "data" axis) would sum their gradients over "data" by itself, one
    # all-reduce per parameter inside the backward pass, and train_step's mean would then see n_data
    # times the mean gradient (Adam hides the factor, clipping and the logged grad_norm did not). Off,
    # each device differentiates its own loss and train_step averages once.
    return jax.shard_map(local, mesh=mesh, in_specs=(P(SEEDS), P(SEEDS, DATA)), out_specs=P(SEEDS),
                         check_vma=False)(state, tokens_SxBxL)


@lru_cache(maxsize=16)
def _compiled_step(model_config: TransformerConfig, optimizer: OptimizerConfig, steps: int, batch_size: int,
                   length: int, mesh) -> Callable:
    step_one = partial(train_step, graphdef=graphdef_for(model_config), optimizer=make_optimizer(optimizer, steps))
    mode = _slot_mode(model_config, mesh)

    def step(state: TrainState, process) -> tuple[TrainState, dict[str, Array]]:
        draw = partial(_draw, process, batch_size=batch_size, length=length)
        if mesh.devices.flat[0].platform == "cpu":
            # The same batches as vmap (random draws are per key); on CPU the loop runs as fast and
            # compiles in half the time. Accelerators draw all slots in parallel.
            tokens_SxBxL = jax.lax.map(draw, (state.seed, state.step))
        else:
            tokens_SxBxL = jax.vmap(draw)((state.seed, state.step))
        tokens_SxBxL = jax.lax.with_sharding_constraint(tokens_SxBxL, batch_sharding(mesh))
        return _over_slots(step_one, state, tokens_SxBxL, mesh, mode)

    # A single sharding is a prefix of the whole state: every leaf's slot axis over "seeds".
    return jax.jit(step, in_shardings=(slot_sharding(mesh), replicated(mesh)),
                   out_shardings=(slot_sharding(mesh), replicated(mesh)), donate_argnums=0)


def compiled_step(model_config: TransformerConfig, config: TrainConfig, mesh) -> Callable:
    """The jitted, donating step of the whole stacked state: (state, process) -> (state, metrics [S]).

    It draws each slot's batch of (seed, step) from the process on device, then applies train_step
    to every slot (`_over_slots`). Cached: runs with the same model, optimizer, sizes and mesh share
    one jitted function, and processes of one family and size share its compilation (a process is a pytree
    argument, its numbers are leaves)."""
    return _compiled_step(model_config, config.optimizer, config.steps, config.batch_size, config.sequence_length, mesh)


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------


class TrainResult(NamedTuple):
    """What `train` returns."""

    state: TrainState  # the stacked final state (sharded over the mesh)
    history: list  # every record written to metrics.jsonl, in order (also without an output directory)
    evaluation: dict | None  # the final Evaluator output (per-slot arrays), if config.evaluation.final


def _devices(num_devices: int):
    if num_devices == 0:
        return None
    if num_devices > jax.device_count():
        raise ValueError(f"num_devices={num_devices} but only {jax.device_count()} devices exist")
    return jax.devices()[:num_devices]


def _plain_metrics(step: int, metrics: dict, schedule, rates: np.ndarray, elapsed: float) -> dict:
    record = {"step": step, **{k: np.asarray(v, np.float64).tolist() for k, v in metrics.items()}}
    record["learning_rate"] = (rates * float(schedule(step - 1, xp=np))).tolist()  # the rate step `step` used
    record["elapsed_s"] = round(elapsed, 3)
    return record


def train(process, model_config: TransformerConfig, config: TrainConfig, *, out_dir=None, run_info: dict | None = None,
          callback: Callable[[int, TrainState], None] | None = None, quiet: bool = False,
          initial_params: nnx.State | None = None) -> TrainResult:
    """Train every slot of `config` on data from `process`; resume from `out_dir` if it holds a run.

    With `out_dir`, writes config.json ({**run_info, "model", "train"}), appends metrics.jsonl (one
    JSON record per logged step or evaluation) and saves checkpoints/ every `checkpoint_every` steps
    and after the last step. `callback(step, state)` runs on the host after each step is dispatched,
    before that step's checkpoint (an exception from it stops the run as a kill would, after pending
    checkpoint writes finish).
    The progress bar shows when stderr is a terminal and not `quiet`. `initial_params` (fine-tuning):
    start every slot from these parameters instead of fresh ones (see `start_from`); a run that
    resumes from a checkpoint ignores them, since the checkpoint descends from them.
    """
    if model_config.vocab_size < process.vocab_size:
        raise ValueError(f"the model's vocab_size {model_config.vocab_size} is below the process's {process.vocab_size}")
    if config.sequence_length > model_config.context:
        raise ValueError(f"sequence_length {config.sequence_length} exceeds the model's context {model_config.context}")
    main = jax.process_index() == 0
    mesh = make_mesh(len(config.slots), config.batch_size, _devices(config.num_devices))
    abstract = abstract_states(model_config, config)
    shardings = state_shardings(mesh, abstract)
    out = Path(out_dir) if out_dir is not None else None
    checkpointer, start, history = None, 0, []
    if out is not None:
        write_config(out, config_record(model_config, config, run_info), write=main)
        checkpointer = Checkpointer(out / CHECKPOINT_DIR, config.checkpoint_every, config.keep_checkpoints)
    try:
        if checkpointer is not None and checkpointer.latest_step() is not None:
            start = checkpointer.latest_step()
            state = checkpointer.restore(abstract_like(abstract, shardings))
        else:
            state = init_states(model_config, config, mesh)
            if initial_params is not None:
                state = start_from(state, initial_params, model_config, config, mesh)
        if out is not None and main:
            history = truncate_metrics(out / METRICS_FILE, start, finished=start == config.steps)
        evaluator = None
        if config.evaluation.every or config.evaluation.final:
            evaluator = Evaluator(process, model_config, config.evaluation, config.sequence_length, mesh)
        step_fn = compiled_step(model_config, config, mesh)
        process_on_mesh = jax.device_put(jax.tree.map(np.asarray, process), replicated(mesh))
        schedule = make_schedule(config.optimizer, config.steps)
        rates = _slot_arrays(config)[1].astype(np.float64)
        log = (out / METRICS_FILE).open("a") if out is not None and main else None
        bar = tqdm(total=config.steps, initial=start, disable=quiet or not main or not sys.stderr.isatty(),
                   desc="train", unit="step", dynamic_ncols=True)
        began = time.perf_counter()

        def emit(record):
            history.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()

        def evaluate(step, params):
            result = evaluator(params)
            emit({"step": step, "eval": {k: v.tolist() for k, v in result.items()}})
            return result

        def log_step(step, metrics):
            if step % config.log_every == 0 or step == config.steps:
                emit(_plain_metrics(step, metrics, schedule, rates, time.perf_counter() - began))
                bar.set_postfix(loss=f"{np.mean(history[-1]['loss']):.4f}", refresh=False)

        def log_when_ready(step, metrics):
            jax.block_until_ready(metrics)
            log_step(step, metrics)

        previous = None  # (step, metrics) of the step dispatched before the current one
        try:
            for step in range(start, config.steps):
                state, metrics = step_fn(state, process_on_mesh)
                done = step + 1
                if previous is not None:
                    # Metrics one step late: wait for the previous step while this one runs. At most
                    # two steps are in flight, enough to hide dispatch; an unbounded queue of steps
                    # deadlocked XLA:CPU's collectives on 8 fake CPU devices (an all-reduce rendezvous
                    # that one device never reached, after a few hundred queued steps).
                    log_when_ready(*previous)
                previous = (done, metrics)
                if config.evaluation.every and done % config.evaluation.every == 0 and done < config.steps:
                    log_step(*previous)  # evaluation waits for this step anyway; keep records in order
                    previous = None
                    evaluate(done, state.params)
                if callback is not None:
                    # Before the step's checkpoint: whatever the callback records for this step (e.g.
                    # fine-tuning's KL curve) exists before a resume could start after it.
                    callback(done, state)
                if checkpointer is not None and done < config.steps and checkpointer.due(done):
                    if previous is not None:
                        # This step's record goes to the log before its checkpoint exists: a run that
                        # stops after the save resumes at this step and would never log it again.
                        log_when_ready(*previous)
                        previous = None
                    checkpointer.save(done, state)
                bar.update(1)
            if previous is not None:
                log_step(*previous)
            if checkpointer is not None:
                checkpointer.save(config.steps, state, force=True)
            evaluation = evaluate(config.steps, state.params) if config.evaluation.final else None
        finally:
            bar.close()
            if log is not None:
                log.close()
    finally:
        if checkpointer is not None:
            checkpointer.close()
    return TrainResult(state, history, evaluation)


# --------------------------------------------------------------------------------------------------
# Reading runs back
# --------------------------------------------------------------------------------------------------


def unstack(tree, index: int):
    """Slot `index` of a stacked pytree (each leaf's leading axis) as arrays on the default device,
    gathered from every process if the leaves are split across hosts (then a collective)."""
    return jax.tree.map(lambda x: jnp.asarray(x[index]), fetch(tree))


def load_run(out_dir) -> tuple[TransformerConfig, TrainConfig, TrainState]:
    """The model config, train config and latest stacked state of a run directory, on one local device."""
    out = Path(out_dir)
    record = read_json(out / CONFIG_FILE)
    model_config = TransformerConfig(**record["model"])
    config = TrainConfig.from_dict(record["train"])
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    state = restore_latest(out / CHECKPOINT_DIR, abstract_like(abstract_states(model_config, config), device))
    return model_config, config, state


def load_predictor(out_dir, seed_index: int = 0) -> TransformerPredictor:
    """Slot `seed_index` (an index into TrainConfig.slots) of the run saved in `out_dir`, as a Predictor."""
    model_config, config, state = load_run(out_dir)
    if not 0 <= seed_index < len(config.slots):
        raise ValueError(f"seed_index must be in [0, {len(config.slots)}), got {seed_index}")
    return TransformerPredictor(model_config, unstack(state.params, seed_index))
