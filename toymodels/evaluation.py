"""Evaluation of trained transformers against the exact Bayes predictor of their data process.

On one fixed held-out batch x ~ P (N sequences of length L, drawn with the evaluation seed, the same
for every run and every step) with the exact conditionals p(.|x<t) of the process and the model's
q(.|x<t) from one teacher-forced pass:

    kl_per_position[t]          = 1/N sum_n KL(p(.|x<t) || q(.|x<t))         (nats)
    model_loss_per_position[t]  = 1/N sum_n -log q(x_t | x<t)
    bayes_loss_per_position[t]  = 1/N sum_n -log p(x_t | x<t)                (the least expected loss)
    loss_ratio                  = mean over t with bayes_loss > 0 of model_loss[t] / bayes_loss[t]

kl_per_position is an unbiased estimate of the chain-rule terms of the forward KL F_L = KL(P_L || Q_L)
(theory.divergence.forward_kl's per_position), with far less variance than the loss difference,
whose expectation it equals. `kl` is its mean over positions (per-token KL) and `kl_stderr` the
standard error of that mean over the N sequences. `divergences` adds the exact (enumerated) or Monte
Carlo forward and generation KL of theory.divergence on demand.

Shape legend: S seed slots, N held-out sequences, L length, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from theory.divergence import forward_kl, generation_kl
from toymodels.data import heldout_batch
from toymodels.precision import exact_products
from toymodels.predictors import align_vocab
from toymodels.sharding import replicated, slot_sharding
from toymodels.transformer import TransformerConfig, apply, graphdef_for


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate on, and when."""

    num_sequences: int = 512  # N: held-out sequences, one fixed batch for the whole run
    seed: int = 1_000_003  # root of the held-out key (its own stream: no training batch uses it)
    every: int = 0  # evaluate every this many steps during training (0: never during training)
    final: bool = True  # evaluate after the last step

    def __post_init__(self):
        _check_int("num_sequences", self.num_sequences, 1)
        _check_int("seed", self.seed, 0)
        _check_int("every", self.every, 0)
        if not isinstance(self.final, bool):
            raise ValueError(f"final must be a bool, got {self.final!r}")


def compare_conditionals(
    log_p_NxLxV: Float[Array, "N L V"], log_q_NxLxW: Float[Array, "N L W"], tokens_NxL: Int[Array, "N L"]
) -> dict[str, Array]:
    """Per-sequence, per-position KL(p || q) and losses -log q(x_t), -log p(x_t), as [N, L] arrays.

    q may have a larger vocabulary W >= V than p (p gives the extra tokens probability zero). A token
    p allows and q forbids gives KL = inf; a token p forbids adds nothing (0 log 0 = 0)."""
    dtype = jnp.promote_types(jnp.promote_types(log_p_NxLxV.dtype, log_q_NxLxW.dtype), jnp.float32)
    log_p = align_vocab(log_p_NxLxV.astype(dtype), log_q_NxLxW.shape[-1])
    log_q = log_q_NxLxW.astype(dtype)
    p = jnp.exp(log_p)
    # Keyed on log p, not p > 0: a token p allows with an underflowing probability still makes the KL
    # infinite where q forbids it.
    possible, q_forbids = jnp.isfinite(log_p), jnp.isneginf(log_q)
    terms = jnp.where(q_forbids, jnp.inf, p * (log_p - jnp.where(q_forbids, 0.0, log_q)))
    kl_NxL = jnp.sum(jnp.where(possible, terms, 0.0), axis=-1)
    take = partial(jnp.take_along_axis, indices=tokens_NxL[..., None], axis=-1)
    return {"kl": kl_NxL, "model_loss": -take(log_q)[..., 0], "bayes_loss": -take(log_p)[..., 0]}


def summarize(terms: dict[str, Array]) -> dict[str, Array]:
    """Means over the N held-out sequences of compare_conditionals' [..., N, L] terms, and the scalars
    of the module docstring (per-token means, the loss ratio, the standard error of the per-token KL)."""
    kl_per_sequence = terms["kl"].mean(axis=-1)
    num = terms["kl"].shape[-2]
    out = {f"{name}_per_position": value.mean(axis=-2) for name, value in terms.items()}
    model, bayes = out["model_loss_per_position"], out["bayes_loss_per_position"]
    informative = bayes > 0
    ratio = jnp.where(informative, model / jnp.where(informative, bayes, 1.0), jnp.nan)
    out["loss_ratio_per_position"] = ratio
    out["loss_ratio"] = jnp.nanmean(ratio, axis=-1)  # nan only if no position has positive Bayes loss
    out["kl"] = kl_per_sequence.mean(axis=-1)
    out["kl_stderr"] = kl_per_sequence.std(axis=-1, ddof=1) / np.sqrt(num) if num > 1 else jnp.zeros_like(out["kl"])
    out["model_loss"] = model.mean(axis=-1)
    out["bayes_loss"] = bayes.mean(axis=-1)
    return out


def model_log_conditionals(graphdef, params, tokens_NxL: Int[Array, "N L"]) -> Float[Array, "N L V"]:
    """log q(x_t = v | x<t) of one model (float32 log-softmax of its logits, full-precision products)."""
    with exact_products():
        logits = apply(graphdef, params, tokens_NxL)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


class Evaluator:
    """Evaluates stacked parameters [S, ...] against the process on one fixed held-out batch.

    The held-out tokens and their exact conditionals are computed once; each call is one jitted,
    seed-vmapped teacher-forced pass (compiled once per number of slots) whose results are replicated,
    so every process of a multi-host run gets them."""

    def __init__(self, process, model_config: TransformerConfig, config: EvalConfig, length: int, mesh):
        if model_config.vocab_size < process.vocab_size:
            raise ValueError(f"the model's vocab_size {model_config.vocab_size} is below the process's {process.vocab_size}")
        _check_int("length", length, 1)
        if length > model_config.context:
            raise ValueError(f"evaluation length {length} exceeds the model's context {model_config.context}")
        self.config, self.length, self.mesh = config, length, mesh
        tokens = np.asarray(heldout_batch(process, config.seed, config.num_sequences, length))
        log_p = np.asarray(process.log_conditionals(jnp.asarray(tokens)))
        self.tokens = jax.device_put(tokens, replicated(mesh))
        self.log_p = jax.device_put(log_p, replicated(mesh))
        self._evaluate = _compiled_evaluate(model_config, mesh)

    def __call__(self, params) -> dict[str, np.ndarray]:
        """Module-docstring quantities per slot: [S] scalars and [S, L] per-position arrays (the Bayes
        loss, which no model changes, is [S, L] too, repeated), as float64 NumPy arrays."""
        out = self._evaluate(params, self.tokens, self.log_p)
        return {name: np.asarray(value, dtype=np.float64) for name, value in out.items()}


@lru_cache(maxsize=16)
def _compiled_evaluate(model_config: TransformerConfig, mesh):
    graphdef = graphdef_for(model_config)

    def evaluate(params, tokens, log_p):
        def one(p):
            return compare_conditionals(log_p, model_log_conditionals(graphdef, p, tokens), tokens)

        return summarize(jax.vmap(one)(params))

    return jax.jit(evaluate, in_shardings=(slot_sharding(mesh), replicated(mesh), replicated(mesh)),
                   out_shardings=replicated(mesh))


def _divergence_record(result) -> dict:
    return {
        "value": result.value,
        "stderr": result.stderr,
        "per_position": np.asarray(result.per_position),
        "off_support_fraction": result.off_support_fraction,
        "method": result.method,
    }


def divergences(
    process,
    predictor,
    length: int,
    method: str = "enumeration",
    *,
    key=None,
    num_samples: int | None = None,
    generation: bool = True,
) -> dict[str, dict]:
    """theory.divergence's forward KL KL(P_L || Q_L) and (if `generation`) generation KL KL(Q_L || P_L)
    of one predictor, as JSON-ready records. Monte Carlo uses fold_in(key, 0) and fold_in(key, 1)."""
    keys = (None, None) if key is None else (jax.random.fold_in(key, 0), jax.random.fold_in(key, 1))
    out = {"forward_kl": _divergence_record(forward_kl(process, predictor, length, method, key=keys[0], num_samples=num_samples))}
    if generation:
        out["generation_kl"] = _divergence_record(
            generation_kl(process, predictor, length, method, key=keys[1], num_samples=num_samples)
        )
    return out
