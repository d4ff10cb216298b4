"""KL-regularised REINFORCE on a transformer policy, against its closed-form optimum (C9).

The objective over whole sequences x in V^L is

    J(pi) = E_{x~pi}[r(x)] - beta KL(pi || pi_base) = beta log Z_beta - beta KL(pi || pi*_beta),
    pi*_beta(x) = pi_base(x) exp(r(x) / beta) / Z_beta,

so pi*_beta is the unique maximiser, and the KL from the policy to it measures how far training has
got. As beta -> 0, pi*_beta concentrates on the reward's argmax inside the support of pi_base, however
little weight pi_base gives it: with a proxy reward that differs from the true one, this is reward
hacking (C9; Korbak, Perez and Buckley 2022 make the same point about RL as Bayesian inference).

Estimator (one jitted step for every slot, a slot being a (seed, beta) pair under jax.vmap): B
sequences x_i ~ pi_theta from the key-value-cache sampler, the per-sequence log-ratio
k_i = log pi_theta(x_i) - log pi_base(x_i) as the KL estimate, the shaped reward R_i = r(x_i) - beta k_i,
an advantage A_i = R_i - b_i with a leave-one-out (unbiased) or batch-mean baseline, and the surrogate
loss -mean_i stop_gradient(A_i) log pi_theta(x_i), whose gradient is an unbiased estimate of -grad J
(the gradient of R through k has expectation -beta E[grad log pi_theta] = 0). AdamW as in training
(optimizer.py); weight decay pulls towards zero, not towards pi_base, so the default is none.

Exact side: `enumerate_sequences` lists V^L; `optimal_policy` builds pi*_beta as a TableProcess from
the base model's exact sequence log-probabilities; `reinforce` records KL(pi_theta || pi*) and
KL(pi* || pi_theta) by enumeration (theory.divergence) and the exact expected rewards and hack rate.
Shape legend: S slots, B sequences, L length, V vocabulary, X = V^L enumerated sequences.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from theory.divergence import forward_kl, generation_kl
from toymodels.checkpoints import Checkpointer, abstract_like
from toymodels.data import stream_key
from toymodels.evaluation import model_log_conditionals
from toymodels.optimizer import OptimizerConfig, _check_float, make_optimizer
from toymodels.predictors import sequence_log_prob, token_log_probs
from toymodels.processes.table import TableProcess
from toymodels.results import read_json, run_metadata, write_json_atomic
from toymodels.sampling import generate
from toymodels.sweep_grid import canonical
from toymodels.training import load_predictor
from toymodels.transformer import TransformerConfig, graphdef_for
from toymodels.transformer_predictor import TransformerPredictor

ROLLOUT_STREAM = 3  # data.py's streams are 0..2; the policy's samples of step t use fold_in(this, t)
BASELINES = ("leave_one_out", "mean", "none")
RL_FILE = "rl.json"
PROGRESS_FILE, CHECKPOINT_DIR = "rl_progress.json", "checkpoints"  # what reinforce(out_dir=...) resumes from


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Rewards: hashable callables tokens [B, L] -> [B], so a jitted step can take them as static
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TokenCount:
    """Proxy reward r(x) = scale * (number of positions holding `token`) / L."""

    token: int
    scale: float = 1.0

    def __call__(self, tokens_BxL: Int[Array, "B L"]) -> Float[Array, " B"]:
        return self.scale * jnp.mean((tokens_BxL == self.token).astype(jnp.result_type(float)), axis=-1)


@dataclasses.dataclass(frozen=True)
class CappedTokenCount:
    """True reward: like TokenCount up to `cap` occurrences, then each further one costs as much as one
    below the cap earned: r(x) = scale * (n - 2 max(n - cap, 0)) / L with n the count of `token`. The
    proxy TokenCount agrees with it up to the cap and keeps rising past it; sequences with n > cap are
    the hacks (`over_cap`)."""

    token: int
    cap: int
    scale: float = 1.0

    def count(self, tokens_BxL):
        return jnp.sum(tokens_BxL == self.token, axis=-1)

    def __call__(self, tokens_BxL: Int[Array, "B L"]) -> Float[Array, " B"]:
        n = self.count(tokens_BxL)
        return self.scale * (n - 2 * jnp.maximum(n - self.cap, 0)) / tokens_BxL.shape[-1]

    def over_cap(self, tokens_BxL: Int[Array, "B L"]):
        """1.0 where the sequence over-optimises the proxy (more than `cap` occurrences), else 0.0."""
        return (self.count(tokens_BxL) > self.cap).astype(jnp.result_type(float))


# --------------------------------------------------------------------------------------------------
# The closed form
# --------------------------------------------------------------------------------------------------


def enumerate_sequences(vocab_size: int, length: int, max_sequences: int = 10**6) -> np.ndarray:
    """Every sequence of V^L, [X, L] int32, lexicographic with x_1 most significant (TableProcess order)."""
    _check_int("vocab_size", vocab_size, 1)
    _check_int("length", length, 1)
    if vocab_size**length > max_sequences:
        raise ValueError(f"{vocab_size}^{length} sequences exceed max_sequences={max_sequences}; shorten length")
    return np.asarray(list(itertools.product(range(vocab_size), repeat=length)), np.int32).reshape(-1, length)


def log_partition(base_log_probs: np.ndarray, rewards: np.ndarray, beta: float) -> float:
    """log Z_beta = log sum_x pi_base(x) exp(r(x) / beta), computed stably."""
    _check_float("beta", beta, 0.0, open_low=True)
    weights = np.asarray(base_log_probs, np.float64) + np.asarray(rewards, np.float64) / beta
    top = np.max(weights)
    return float(top + np.log(np.sum(np.exp(weights - top))))


def optimal_policy(base, reward: Callable, beta: float, length: int) -> TableProcess:
    """pi*_beta(x) proportional to pi_base(x) exp(r(x) / beta) over V^L, as a TableProcess; `base` is any
    predictor (its exact sequence log-probabilities by enumeration)."""
    _check_float("beta", beta, 0.0, open_low=True)
    tokens = enumerate_sequences(base.vocab_size, length)
    log_base = np.asarray(sequence_log_prob(base, tokens), np.float64)
    rewards = np.asarray(reward(jnp.asarray(tokens)), np.float64)
    return TableProcess.from_log_weights(log_base + rewards / beta, vocab_size=base.vocab_size)


# --------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """One REINFORCE run of S = len(seeds) * len(betas) slots, trained together."""

    steps: int = 300  # optimizer steps
    batch_size: int = 64  # B: sampled sequences per step and slot
    sequence_length: int = 4  # L: tokens per sampled sequence (at most the policy's context)
    seeds: tuple[int, ...] = (0,)  # one slot per seed (x beta); a seed fixes the sampling stream
    betas: tuple[float, ...] = (0.1, 0.3, 1.0)  # KL penalty weights to sweep
    optimizer: OptimizerConfig = OptimizerConfig(
        learning_rate=3e-3, schedule="constant", warmup_fraction=0.0, weight_decay=0.0)  # AdamW
    baseline: str = "leave_one_out"  # "leave_one_out" (unbiased), "mean" (gradient x (B-1)/B), "none"
    eval_every: int = 25  # exact KL to the optimum every this many steps (and at 0 and the end; 0: never)

    def __post_init__(self):
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 2)
        _check_int("sequence_length", self.sequence_length, 1)
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not self.seeds or not self.betas:
            raise ValueError("seeds and betas must each hold at least one value")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
                raise ValueError(f"seeds must be ints in [0, 2**31), got {seed!r}")
        for beta in self.betas:
            _check_float("betas", beta, 0.0, open_low=True)
        if not isinstance(self.optimizer, OptimizerConfig):
            raise ValueError(f"optimizer must be an OptimizerConfig, got {self.optimizer!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        _check_int("eval_every", self.eval_every, 0)

    @property
    def slots(self) -> tuple[tuple[int, float], ...]:
        """(seed, beta) of every slot, seed-major."""
        return tuple((int(seed), beta) for seed in self.seeds for beta in self.betas)


class RLState(NamedTuple):
    """One slot, or S slots stacked on a leading axis of every leaf."""

    params: nnx.State  # the policy's parameters (float32)
    opt_state: optax.OptState  # AdamW state
    step: Array  # int32 []: steps taken
    seed: Array  # int32 []: the slot's seed (its sampling stream)
    beta: Array  # float32 []: the slot's KL weight


def advantages(shaped_B: Float[Array, " B"], baseline: str) -> Float[Array, " B"]:
    """R_i - b_i: b_i = mean of the other B - 1 rewards (leave_one_out), of all B (mean), or 0."""
    if baseline == "none":
        return shaped_B
    total, count = jnp.sum(shaped_B), shaped_B.shape[0]
    if baseline == "mean":
        return shaped_B - total / count
    return shaped_B - (total - shaped_B) / (count - 1)


def _sequence_log_probs(graphdef, params, tokens_BxL):
    # At the precision the rollouts were sampled at (TransformerPredictor's): the gradient is then that
    # of the policy that drew the tokens, also on a GPU.
    return token_log_probs(model_log_conditionals(graphdef, params, tokens_BxL), tokens_BxL).sum(axis=-1)


def surrogate(params, base_params, tokens_BxL, beta, *, graphdef, reward: Callable, baseline: str):
    """(surrogate loss, metrics): the loss's gradient is an unbiased estimate of -grad J at params."""
    log_q = _sequence_log_probs(graphdef, params, tokens_BxL)
    log_base = _sequence_log_probs(graphdef, base_params, tokens_BxL)
    rewards = reward(tokens_BxL).astype(jnp.float32)
    log_ratio = jax.lax.stop_gradient(log_q - log_base)
    shaped = rewards - beta * log_ratio
    loss = -jnp.mean(jax.lax.stop_gradient(advantages(shaped, baseline)) * log_q)
    return loss, {"reward": rewards.mean(), "kl_estimate": log_ratio.mean(), "objective": shaped.mean()}


def rl_step(state: RLState, base_params, *, model_config: TransformerConfig, optimizer, reward: Callable,
            baseline: str, batch_size: int, length: int, learning_rate: float) -> tuple[RLState, dict]:
    """Sample B sequences from the slot's policy (key fold_in(stream(seed), step)), take one AdamW step."""
    key = jax.random.fold_in(stream_key(state.seed, ROLLOUT_STREAM), state.step)
    tokens = generate(TransformerPredictor(model_config, state.params), key, batch_size, length)
    loss_fn = partial(surrogate, graphdef=graphdef_for(model_config), reward=reward, baseline=baseline)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, base_params, tokens, state.beta)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: (learning_rate * u).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
    return RLState(params, opt_state, state.step + 1, state.seed, state.beta), metrics


@lru_cache(maxsize=16)
def compiled_step(model_config: TransformerConfig, config: RLConfig, reward: Callable) -> Callable:
    """The jitted, donating step of the stacked state: (states [S], base_params) -> (states, metrics [S])."""
    one = partial(rl_step, model_config=model_config, optimizer=make_optimizer(config.optimizer, config.steps),
                  reward=reward, baseline=config.baseline, batch_size=config.batch_size,
                  length=config.sequence_length, learning_rate=config.optimizer.learning_rate)
    return jax.jit(jax.vmap(one, in_axes=(0, None)), donate_argnums=0)


def init_states(base: TransformerPredictor, config: RLConfig) -> RLState:
    """Every slot starts at the base model's parameters with a fresh optimizer state."""
    seeds, betas = (np.asarray(column) for column in zip(*config.slots))
    params = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(seeds),) + x.shape), base.params)
    opt_state = jax.vmap(make_optimizer(config.optimizer, config.steps).init)(params)
    return RLState(params, opt_state, jnp.zeros(len(seeds), jnp.int32), jnp.asarray(seeds, jnp.int32),
                   jnp.asarray(betas, jnp.float32))


# --------------------------------------------------------------------------------------------------
# The loop, measured exactly against pi*_beta
# --------------------------------------------------------------------------------------------------


class RLResult(NamedTuple):
    """What `reinforce` returns; per-slot lists follow RLConfig.slots."""

    state: RLState  # the stacked final state
    history: list  # {"step", "loss", "reward", "kl_estimate", "objective", "grad_norm"} every log_every steps
    exact: list  # {"step", "kl_to_optimum", "kl_from_optimum", and exact_summary's keys}, per evaluation
    optimum: list  # per beta of config.betas: exact_summary of pi*_beta and its "log_partition"


def exact_summary(log_probs_X, base_log_probs_X, beta: float, proxy_X, true_X=None, hack_X=None) -> dict:
    """Exact expectations under pi (log-probs of every enumerated sequence): E[proxy], E[true],
    P(hack), KL(pi || pi_base) and J = E[proxy] - beta KL(pi || pi_base)."""
    log_p = np.asarray(log_probs_X, np.float64)
    p = np.exp(log_p)
    kl_base = float(np.sum(np.where(p > 0, p * (log_p - np.asarray(base_log_probs_X, np.float64)), 0.0)))
    out = {"proxy_reward": float(p @ proxy_X), "kl_to_base": kl_base}
    out["objective"] = out["proxy_reward"] - beta * kl_base
    if true_X is not None:
        out["true_reward"] = float(p @ true_X)
    if hack_X is not None:
        out["hack_rate"] = float(p @ hack_X)
    return out


def reinforce(base: TransformerPredictor, reward: Callable, config: RLConfig, *, true_reward: Callable | None = None,
              hack: Callable | None = None, log_every: int = 10,
              callback: Callable[[int, RLState], None] | None = None, out_dir=None,
              checkpoint_every: int = 0) -> RLResult:
    """KL-regularised REINFORCE from `base` on every (seed, beta) slot of `config`.

    Every `config.eval_every` steps (and at step 0 and the last step) records, per slot, the exact
    KL(pi_theta || pi*_beta) (theory.divergence.generation_kl with pi* as the data side) and
    KL(pi*_beta || pi_theta) (forward_kl), by enumeration of V^L, with exact_summary's expectations of
    `reward` (the proxy being optimised), `true_reward` and `hack` (tokens -> 0/1), if given.

    With `out_dir`, the stacked state is checkpointed there every `checkpoint_every` steps (0: only after
    the last) together with the records so far, and a rerun with the same directory resumes from the
    latest checkpoint; every rollout depends only on (seed, step), so it ends with the same state and
    records as an uninterrupted run. `callback(step, state)` runs after each step; an exception from it
    stops the run as a kill would, after pending checkpoint writes finish.
    """
    if not isinstance(base, TransformerPredictor):
        raise ValueError(f"base must be a TransformerPredictor, got {type(base).__name__}")
    if config.sequence_length > base.max_length:
        raise ValueError(f"sequence_length {config.sequence_length} exceeds the policy's context {base.max_length}")
    _check_int("log_every", log_every, 1)
    length, slots = config.sequence_length, config.slots
    tokens_X = enumerate_sequences(base.vocab_size, length) if config.eval_every else None
    history, exact, optimum, tables = [], [], [], {}
    if tokens_X is not None:
        base_X = np.asarray(sequence_log_prob(base, tokens_X), np.float64)
        scores = {name: np.asarray(fn(jnp.asarray(tokens_X)), np.float64)
                  for name, fn in (("proxy", reward), ("true", true_reward), ("hack", hack)) if fn is not None}
        for beta in config.betas:
            weights = base_X + scores["proxy"] / beta
            tables[beta] = TableProcess.from_log_weights(weights, vocab_size=base.vocab_size)
            log_star = np.asarray(tables[beta].log_prob(jnp.asarray(tokens_X)), np.float64)
            summary = exact_summary(log_star, base_X, beta, scores["proxy"], scores.get("true"), scores.get("hack"))
            optimum.append({"beta": beta, "log_partition": log_partition(base_X, scores["proxy"], beta), **summary})

    def evaluate(step: int, state: RLState) -> None:
        record = {"step": step}
        for i, (_, beta) in enumerate(slots):
            policy = TransformerPredictor(base.config, jax.tree.map(lambda x: x[i], state.params))
            log_q = np.asarray(sequence_log_prob(policy, tokens_X), np.float64)
            summary = exact_summary(log_q, base_X, beta, scores["proxy"], scores.get("true"), scores.get("hack"))
            summary["kl_to_optimum"] = generation_kl(tables[beta], policy, length).value
            summary["kl_from_optimum"] = forward_kl(tables[beta], policy, length).value
            for name, value in summary.items():
                record.setdefault(name, []).append(value)
        exact.append(record)

    state, start = init_states(base, config), 0
    checkpointer = progress = None
    if out_dir is not None:
        _check_int("checkpoint_every", checkpoint_every, 0)
        progress = _Progress(Path(out_dir), config, base, {"proxy": reward, "true": true_reward, "hack": hack},
                             log_every)
        checkpointer = Checkpointer(Path(out_dir) / CHECKPOINT_DIR, checkpoint_every)
    try:
        if checkpointer is not None and checkpointer.latest_step() is not None:
            start = checkpointer.latest_step()
            device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            state = checkpointer.restore(abstract_like(jax.eval_shape(lambda: state), device))
            history, exact = progress.records_until(start)
        elif config.eval_every:
            evaluate(0, state)
        step_fn = compiled_step(base.config, config, reward)
        for step in range(start + 1, config.steps + 1):
            state, metrics = step_fn(state, base.params)
            if step % log_every == 0 or step == config.steps:
                history.append({"step": step, **{k: np.asarray(v, np.float64).tolist() for k, v in metrics.items()}})
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                evaluate(step, state)
            if checkpointer is not None and checkpointer.save(step, state, force=step == config.steps):
                progress.write(history, exact)  # after the save starts: never older than the newest checkpoint
            if callback is not None:
                callback(step, state)
    finally:
        if checkpointer is not None:
            checkpointer.close()
    return RLResult(state, history, exact, optimum)


def _describe(fn) -> str | None:
    """A reward function as stable text: a dataclass reward's repr (its fields), a bound method as its
    name and instance, a function by module and name (never a repr with a memory address)."""
    if fn is None:
        return None
    owner = getattr(fn, "__self__", None)
    if owner is not None and dataclasses.is_dataclass(owner):
        return f"{fn.__name__} of {owner!r}"
    if dataclasses.is_dataclass(fn):
        return repr(fn)
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"


class _Progress:
    """The records of a checkpointed run (rl_progress.json), tied to the run's config and base model."""

    def __init__(self, directory: Path, config: RLConfig, base: TransformerPredictor, rewards: dict, log_every: int):
        self.path = directory / PROGRESS_FILE
        base_bytes = b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(base.params))
        # The rewards too: resuming another reward's checkpoint would record its curves under this one.
        self.identity = {"config": canonical(config), "base_sha256": hashlib.sha256(base_bytes).hexdigest(),
                         "rewards": {name: _describe(fn) for name, fn in rewards.items()}, "log_every": log_every}
        stored = read_json(self.path)["identity"] if self.path.exists() else None
        # Records written before the rewards were part of the identity are compared on what they hold.
        if stored is not None and stored != {k: v for k, v in self.identity.items() if k in stored}:
            raise ValueError(f"{directory} holds another RL run (config, rewards or base model differ); "
                             "use another out_dir")

    def records_until(self, step: int) -> tuple[list, list]:
        """(history, exact) up to `step`: records past the checkpoint are redone by the resumed run."""
        if not self.path.exists():
            raise ValueError(f"{self.path} is missing: the checkpoints cannot be resumed without their records")
        saved = read_json(self.path)
        return tuple([r for r in saved[key] if r["step"] <= step] for key in ("history", "exact"))

    def write(self, history: list, exact: list) -> None:
        write_json_atomic(self.path, {"identity": self.identity, "history": history, "exact": exact})


# --------------------------------------------------------------------------------------------------
# The command line's view (scripts/rl.py)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """The proxy reward TokenCount(token, scale) and the true reward CappedTokenCount(token, cap, scale)."""

    token: int = 0  # the token the proxy rewards
    scale: float = 1.0  # reward of a sequence made only of that token
    cap: int = 2  # the true reward peaks at this many occurrences; more is a hack

    def __post_init__(self):
        _check_int("token", self.token, 0)
        _check_int("cap", self.cap, 0)
        _check_float("scale", self.scale, -np.inf)


@dataclasses.dataclass(frozen=True)
class RLRunConfig:
    """KL-regularised REINFORCE from a trained run, measured against the exact optimum per beta."""

    out: str  # output directory (rl.json is written there)
    base: str  # run directory of the base model (written by scripts/train.py)
    seed_index: int = 0  # which slot of the base run
    reward: RewardConfig = RewardConfig()  # proxy and true rewards
    rl: RLConfig = RLConfig()  # steps, batch, length, seeds, betas, optimizer, baseline, eval_every
    log_every: int = 10  # record the step metrics every this many steps
    checkpoint_every: int = 0  # checkpoint OUT/checkpoints every this many steps (0: only the last); reruns resume

    def __post_init__(self):
        if not self.out or not self.base:
            raise ValueError("out and base must name directories")
        _check_int("seed_index", self.seed_index, 0)
        _check_int("log_every", self.log_every, 1)
        _check_int("checkpoint_every", self.checkpoint_every, 0)


def run(config: RLRunConfig) -> dict:
    """Run REINFORCE and write OUT/rl.json (config, optimum per beta, exact curves, metadata)."""
    began = time.perf_counter()
    base = load_predictor(config.base, config.seed_index)
    if config.reward.token >= base.vocab_size:
        raise ValueError(f"reward.token must be below the model's vocab_size {base.vocab_size}")
    proxy = TokenCount(config.reward.token, config.reward.scale)
    true = CappedTokenCount(config.reward.token, config.reward.cap, config.reward.scale)
    result = reinforce(base, proxy, config.rl, true_reward=true, hack=true.over_cap, log_every=config.log_every,
                       out_dir=config.out, checkpoint_every=config.checkpoint_every)
    record = {"config": dataclasses.asdict(config), "slots": [{"seed": s, "beta": b} for s, b in config.rl.slots],
              "optimum": result.optimum, "exact": result.exact, "history": result.history,
              "wall_s": time.perf_counter() - began, "metadata": run_metadata()}
    write_json_atomic(Path(config.out) / RL_FILE, record)
    return record
