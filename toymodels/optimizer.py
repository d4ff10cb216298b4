"""AdamW with warmup and cosine decay, for the train step (training.py).

`make_optimizer(config, steps)` is AdamW whose learning-rate schedule peaks at 1; the train step
multiplies each update by its slot's peak learning rate. AdamW's update is
-lr_t (m_t / (sqrt(v_t) + eps) + wd * w), linear in lr_t, so this is AdamW with schedule
peak * shape(t), and a vector of peak learning rates (one per seed slot) trains in one program.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

SCHEDULES = ("cosine", "constant")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_float(name: str, value, low: float, high: float = math.inf, open_low: bool = False,
                 open_high: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (open_low and value == low) or (open_high and value == high):
        bound = ("(" if open_low else "[") + f"{low}, {high}" + (")" if open_high else "]")
        raise ValueError(f"{name} must be a finite number in {bound}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warmup and a cosine (or constant) schedule, and global-norm clipping."""

    learning_rate: float = 1e-3  # peak learning rate (TrainConfig.learning_rates overrides it per slot)
    schedule: str = "cosine"  # after warmup: "cosine" decay to final_fraction * peak, or "constant"
    warmup_fraction: float = 0.05  # fraction of the steps spent rising linearly from 0 to the peak
    final_fraction: float = 0.1  # the cosine's end, at step `steps` (the last step, steps - 1, is just above)
    b1: float = 0.9  # AdamW decay rate of the first moment
    b2: float = 0.999  # AdamW decay rate of the second moment
    eps: float = 1e-8  # AdamW denominator epsilon
    weight_decay: float = 0.01  # decoupled weight decay of matrices (biases and norms are not decayed)
    grad_clip: float = 1.0  # clip gradients to this global norm first (0: no clipping)

    def __post_init__(self):
        _check_float("learning_rate", self.learning_rate, 0.0, open_low=True)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check_float("warmup_fraction", self.warmup_fraction, 0.0, 1.0)
        _check_float("final_fraction", self.final_fraction, 0.0, 1.0)
        # Adam divides by 1 - b^t: a decay rate of exactly 1 makes every update NaN.
        _check_float("b1", self.b1, 0.0, 1.0, open_high=True)
        _check_float("b2", self.b2, 0.0, 1.0, open_high=True)
        _check_float("eps", self.eps, 0.0, open_low=True)
        _check_float("weight_decay", self.weight_decay, 0.0)
        _check_float("grad_clip", self.grad_clip, 0.0)


def schedule_value(config: OptimizerConfig, steps: int, count, xp=jnp):
    """The shape of the learning rate at step `count` (0-based), peak 1: linear warmup from 0 over
    round(warmup_fraction * steps) steps, then cosine decay to final_fraction at step `steps` (or
    constant). `xp` is jnp (traceable) or np (on the host, for logging without compiling)."""
    warmup = round(config.warmup_fraction * steps)
    count = xp.asarray(count, xp.float32)
    rising = count / max(warmup, 1)
    if config.schedule == "constant":
        after = xp.ones_like(count)
    else:
        progress = xp.clip((count - warmup) / max(steps - warmup, 1), 0.0, 1.0)
        after = config.final_fraction + (1 - config.final_fraction) * 0.5 * (1 + xp.cos(np.pi * progress))
    return xp.where(count < warmup, rising, after).astype(xp.float32)


def make_schedule(config: OptimizerConfig, steps: int) -> Callable[[Array], Array]:
    """schedule_value as a traceable float32 function of the step count, for optax."""
    return partial(schedule_value, config, steps)


def make_optimizer(config: OptimizerConfig, steps: int) -> optax.GradientTransformation:
    """AdamW with learning rate make_schedule(config, steps) (peak 1), after global-norm clipping;
    weight decay applies to parameters with two or more axes.

    This is optax.adamw's own chain (scale_by_adam, add_decayed_weights, scale_by_learning_rate) with
    clipping and Adam run on one flattened vector (optax.flatten): a handful of fused kernels instead of
    a few per parameter, which halves the optimizer's compile time on CPU; the arithmetic is the same."""
    _check_int("steps", steps, 1)
    moments = optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps)
    if config.grad_clip > 0:
        moments = optax.chain(optax.clip_by_global_norm(config.grad_clip), moments)
    return optax.chain(
        optax.flatten(moments),
        optax.add_decayed_weights(config.weight_decay, mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)),
        optax.scale_by_learning_rate(make_schedule(config, steps)),
    )
