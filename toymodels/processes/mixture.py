"""An exact finite mixture of processes or predictors: P(x) = sum_k w_k P_k(x).

The components may be Processes or plain Predictors (a trained model, a tempered process) over one
vocabulary. Everything is exact Bayes over the component index k (C1 (a), C7):

    pi(k | x_<t) proportional to w_k P_k(x_<t)
    p(v | x_<t)  = sum_k pi(k | x_<t) p_k(v | x_<t)
    log P(x)     = logsumexp_k (log w_k + log P_k(x))

with pi(k | x_<t) updated token by token from the components' own log-conditionals and renormalised
in log space, so that posteriors stay exact for sequences of any length (the products P_k underflow
after a few hundred tokens, and differences of their logarithms lose precision as they grow). The
latent (named "component" unless the caller names it) is the index k. Sampling draws k per sequence from w, then a sequence from component k (its own
`sample`, or `toymodels.sampling.generate` for a plain predictor).
"""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from toymodels.predictors import (
    PytreeNode,
    check_predictor,
    check_tokens,
    prefix_log_probs,
    supports_step,
    token_log_probs,
)
from toymodels.processes._validation import as_probabilities, check_sums_to_one, device_dtype
from toymodels.processes.hmm import _check_sizes, _info_items
from toymodels.sampling import generate


def _is_process(component) -> bool:
    return callable(getattr(component, "sample", None)) and callable(getattr(component, "log_prob", None))


def _check_pytree(component, name: str) -> None:
    """The mixture is a pytree passed through jit, so each component must be one whose leaves are
    arrays (every predictor and process of this library is: a PytreeNode)."""
    for leaf in jax.tree_util.tree_leaves(component):
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, bool)):
            raise ValueError(
                f"{name} must be a pytree whose leaves are arrays (subclass toymodels.predictors.PytreeNode); "
                f"got a leaf of type {type(leaf).__name__}"
            )


def _safe_difference(numerator, denominator):
    """numerator - denominator, and -inf wherever the denominator is -inf (an impossible prefix)."""
    finite = jnp.isfinite(denominator)
    return jnp.where(finite, numerator - jnp.where(finite, denominator, 0.0), -jnp.inf)


class MixtureProcess(PytreeNode):
    """The exact mixture sum_k w_k P_k of K components over one vocabulary (see the module docstring).

    Args:
        components: a sequence of Processes or Predictors, all with the same vocab_size, each a pytree
            (a PytreeNode, as every predictor and process of this library is).
        weights: [K] mixture weights w_k >= 0 summing to 1 (never renormalised here).
        names: labels of the K components (default "c0", "c1", ...).
        latent: the name of the latent "which component generated this sequence" (default "component").
        info: structural facts, as for HMMProcess (hashable values, no probabilities).
    """

    _data_fields = ("components", "log_weights")
    _static_fields = ("names", "latent_name", "info_items")

    def __init__(
        self,
        components: Sequence,
        weights,
        names: Sequence[str] | None = None,
        latent: str = "component",
        info: Mapping[str, Hashable] | None = None,
    ):
        components = tuple(components)
        if not components:
            raise ValueError("components must hold at least one Process or Predictor, got none")
        for k, component in enumerate(components):
            check_predictor(component, f"components[{k}]")
            _check_pytree(component, f"components[{k}]")
        vocab = components[0].vocab_size
        for k, component in enumerate(components):
            if component.vocab_size != vocab:
                raise ValueError(
                    f"components must share one vocabulary: components[0].vocab_size={vocab} but "
                    f"components[{k}].vocab_size={component.vocab_size}"
                )
        w = as_probabilities(weights, "weights", ndim=1)
        if w.shape[0] != len(components):
            raise ValueError(f"weights has {w.shape[0]} entries but there are {len(components)} components")
        dtype = device_dtype(w)
        check_sums_to_one(np.asarray([w.sum()]), "weights", "the mixture weights", dtype)
        names = tuple(f"c{k}" for k in range(len(components))) if names is None else tuple(str(n) for n in names)
        if len(names) != len(components) or len(set(names)) != len(names):
            raise ValueError(f"names must give {len(components)} distinct labels, one per component, got {names}")
        if not isinstance(latent, str) or not latent:
            raise ValueError(f"latent must be a non-empty str naming the component latent, got {latent!r}")
        with np.errstate(divide="ignore"):
            self.log_weights = jnp.asarray(np.log(w.astype(np.float64)), dtype)  # weight 0 is -inf
        self.components = components
        self.names = names
        self.latent_name = latent
        self.info_items = _info_items(info)

    # ---- sizes and metadata -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.components[0].vocab_size

    @property
    def max_length(self):
        known = [c.max_length for c in self.components if c.max_length is not None]
        return min(known) if known else None

    @property
    def num_components(self) -> int:
        return len(self.components)

    @property
    def weights(self) -> Float[Array, " K"]:
        return jnp.exp(self.log_weights)

    @property
    def latents(self) -> dict[str, tuple[str, ...]]:
        return {self.latent_name: self.names}

    @property
    def info(self) -> dict[str, Hashable]:
        return dict(self.info_items)

    @property
    def supports_step(self) -> bool:
        return all(supports_step(c) for c in self.components)

    # ---- exact inference ----------------------------------------------------------------------------
    def log_prob(self, tokens: Int[Array, "B L"]) -> Float[Array, " B"]:
        """log P(x) = logsumexp_k (log w_k + log P_k(x)); -inf when no component can produce x."""
        return _log_prob(self, self._check_length(tokens))

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        """log p(x_t = v | x_<t) = log sum_k pi(k | x_<t) p_k(v | x_<t); -inf after an impossible prefix."""
        return _log_conditionals(self, self._check_length(tokens))

    def posterior(self, tokens: Int[Array, "B L"], latent: str | None = None) -> Float[Array, "B L+1 K"]:
        """pi(k | x_<=t) for t = 0..L (entry 0 is w); stays at the last possible posterior after an
        impossible prefix."""
        if latent is not None and latent != self.latent_name:
            raise ValueError(f"latent must be {self.latent_name!r} (the only latent of this mixture), got {latent!r}")
        return _posterior(self, self._check_length(tokens))

    def _check_length(self, tokens):
        tokens = check_tokens(tokens)
        if self.max_length is not None and tokens.shape[1] > self.max_length:
            raise ValueError(
                f"tokens have length {tokens.shape[1]} but a component conditions on at most {self.max_length}"
            )
        return tokens

    # ---- incremental interface (when every component has one) ----------------------------------------
    def init_state(self, batch: int):
        """State: (component states, log pi(k | x_<=t) [B, K], each component's last log-conditionals
        [K, B, V], alive [B])."""
        if not self.supports_step:
            raise ValueError("init_state needs every component to support init_state/step; use log_conditionals")
        pairs = [c.init_state(batch) for c in self.components]
        states = tuple(state for state, _ in pairs)
        log_next = jnp.stack([nxt for _, nxt in pairs])
        log_post = jnp.broadcast_to(self.log_weights.astype(log_next.dtype), (batch, self.num_components))
        alive = jnp.ones((batch,), bool)
        return (states, log_post, log_next, alive), _combine_next(log_post, log_next, alive)

    def step(self, state, token: Int[Array, " B"]):
        states, log_post, log_next, alive = state
        scores = jax.vmap(lambda lc: token_log_probs(lc[:, None], token[:, None])[:, 0])(log_next)  # [K, B]
        joint = log_post + scores.T
        total = jax.nn.logsumexp(joint, axis=-1, keepdims=True)
        alive = alive & jnp.isfinite(total[:, 0])
        # Renormalise every step: the posterior stays O(1) however long the sequence.
        log_post = jnp.where(alive[:, None], _safe_difference(joint, total), log_post)
        pairs = [c.step(s, token) for c, s in zip(self.components, states)]
        states = tuple(s for s, _ in pairs)
        log_next = jnp.stack([nxt for _, nxt in pairs])
        return (states, log_post, log_next, alive), _combine_next(log_post, log_next, alive)

    # ---- sampling -----------------------------------------------------------------------------------
    def sample(self, key: Array, num_sequences: int, length: int) -> Int[Array, "B L"]:
        """Draw k ~ w per sequence, then the sequence from component k."""
        return self.sample_with_component(key, num_sequences, length)[0]

    def sample_with_component(
        self, key: Array, num_sequences: int, length: int
    ) -> tuple[Int[Array, "B L"], Int[Array, " B"]]:
        """(sequences [B, L], the component k that generated each [B]): labelled data."""
        num_sequences, length = _check_sizes(num_sequences, length)
        choice_key, *keys = jax.random.split(key, self.num_components + 1)
        which = jax.random.categorical(choice_key, self.log_weights, shape=(num_sequences,)).astype(jnp.int32)
        if length == 0:
            return jnp.zeros((num_sequences, 0), jnp.int32), which
        try:
            weights = np.asarray(self.weights)
        except jax.errors.TracerArrayConversionError:
            weights = None  # traced (the mixture is an argument of a jitted function): every component draws
        draws = []
        for k, (component, component_key) in enumerate(zip(self.components, keys)):
            if weights is not None and weights[k] == 0:  # never selected: skip the work
                draws.append(jnp.zeros((num_sequences, length), jnp.int32))
            elif _is_process(component):
                draws.append(jnp.asarray(component.sample(component_key, num_sequences, length), jnp.int32))
            else:
                draws.append(jnp.asarray(generate(component, component_key, num_sequences, length), jnp.int32))
        # Every component draws a full batch and each sequence keeps its own component's row: one
        # compiled sampler per component instead of one per random count.
        tokens = jnp.stack(draws)[which, jnp.arange(num_sequences)]
        return tokens, which


# --------------------------------------------------------------------------------------------------
# Jitted kernels. Shape legend: K components, B batch, L length, V vocabulary.
# --------------------------------------------------------------------------------------------------


def _combine_next(log_post, log_next, alive):
    """log sum_k pi(k) p_k(v): log_post [B, K] normalised, log_next [K, B, V]."""
    mixed = jax.nn.logsumexp(log_post.T[:, :, None] + log_next, axis=0)
    return jnp.where(alive[:, None], mixed, -jnp.inf)


def _posterior_path(mixture: MixtureProcess, tokens):
    """(log pi(k | x_<=t) [B, L+1, K], alive [B, L+1], log p_k(v | x_<t) [K, B, L, V]).

    One scan renormalises the log posterior after every token, as `step` does, so it stays O(1): the
    joint log w_k + log P_k(x_<=t) grows like -t, and differences of such values (in a cumulative sum)
    lost about eps * t of absolute precision, 7e-4 nats at 10^4 tokens in float32. After an impossible
    prefix (every component rules it out) the posterior stays frozen and alive is False."""
    log_cond = jnp.stack([c.log_conditionals(tokens) for c in mixture.components])  # [K, B, L, V]
    scores = jax.vmap(token_log_probs, in_axes=(0, None))(log_cond, tokens)  # [K, B, L]
    batch = tokens.shape[0]
    log_post0 = jnp.broadcast_to(mixture.log_weights.astype(log_cond.dtype), (batch, mixture.num_components))

    def body(carry, scores_KxB):
        log_post, alive = carry
        joint = log_post + scores_KxB.T
        total = jax.nn.logsumexp(joint, axis=-1, keepdims=True)
        alive = alive & jnp.isfinite(total[:, 0])
        log_post = jnp.where(alive[:, None], _safe_difference(joint, total), log_post)
        return (log_post, alive), (log_post, alive)

    alive0 = jnp.ones((batch,), bool)
    _, (log_posts, alives) = jax.lax.scan(body, (log_post0, alive0), jnp.moveaxis(scores, 2, 0))
    log_posts = jnp.concatenate([log_post0[None], log_posts], axis=0)  # [L+1, B, K]
    alives = jnp.concatenate([alive0[None], alives], axis=0)  # [L+1, B]
    return jnp.moveaxis(log_posts, 0, 1), alives.T, log_cond


@jax.jit
def _log_conditionals(mixture: MixtureProcess, tokens):
    log_post, alive, log_cond = _posterior_path(mixture, tokens)
    before = jnp.moveaxis(log_post[:, :-1], -1, 0)  # [K, B, L]: the posterior given x_<t
    mixed = jax.nn.logsumexp(before[..., None] + log_cond, axis=0)
    return jnp.where(alive[:, :-1, None], mixed, -jnp.inf)


@jax.jit
def _posterior(mixture: MixtureProcess, tokens):
    log_post, _, _ = _posterior_path(mixture, tokens)
    return jnp.exp(log_post)  # frozen at the longest possible prefix after an impossible one


@jax.jit
def _log_prob(mixture: MixtureProcess, tokens):
    parts = []
    for component in mixture.components:
        if _is_process(component):
            parts.append(component.log_prob(tokens))
        else:
            parts.append(prefix_log_probs(component.log_conditionals(tokens), tokens)[:, -1])
    parts = jnp.stack(parts)
    return jax.nn.logsumexp(mixture.log_weights.astype(parts.dtype)[:, None] + parts, axis=0)
