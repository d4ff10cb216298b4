"""The Predictor protocol, the Process protocol, and predictor transforms.

Shape legend used throughout the project: B batch, L sequence length, V vocabulary, S hidden states,
K values of a latent. A predictor Q gives next-token conditionals q(x_t | x_<t); a process P is a
data-generating distribution that is also its own Bayes-optimal predictor.

Conventions (see DESIGN.md): token ids >= vocab_size are *impossible* tokens; after an impossible
prefix a process gives -inf log-probabilities for every token; negative ids are an error. Every
predictor and process is a pytree (parameters as leaves, sizes static), so jitted functions that take
one as an argument compile once per shape, not once per instance.

This module imports nothing else of ours.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

State = Any


# --------------------------------------------------------------------------------------------------
# Pytree base: flatten/unflatten bypass __init__, so validation in __init__ runs once, on concrete
# inputs, and never on the tracers or placeholders JAX puts into leaves.
# --------------------------------------------------------------------------------------------------


class PytreeNode:
    """Base for predictors and processes: `_data_fields` are pytree leaves, `_static_fields` are
    hashable metadata that become part of the jit cache key."""

    _data_fields: tuple[str, ...] = ()
    _static_fields: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)

    def _tree_flatten(self):
        children = tuple(getattr(self, name) for name in self._data_fields)
        aux = tuple(getattr(self, name) for name in self._static_fields)
        return children, aux

    @classmethod
    def _tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for name, value in zip(cls._data_fields, children):
            object.__setattr__(obj, name, value)
        for name, value in zip(cls._static_fields, aux):
            object.__setattr__(obj, name, value)
        return obj


# --------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Predictor(Protocol):
    """Anything that gives next-token conditionals.

    Optional incremental interface, for O(1)-per-token generation:
        init_state(batch) -> (state, log_next)   state before any token, log q(x_1 = v) as [B, V]
        step(state, token) -> (state, log_next)  consume token [B], return log q(x_{t+1} = v | x_<=t)
    A predictor that has the methods but cannot use them (a wrapper around one that lacks them) says so
    with `supports_step = False`.
    """

    vocab_size: int
    max_length: int | None

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        """out[b, t, v] = log q(x_t = v | tokens[b, :t]); t = 0 predicts the first token."""
        ...


@runtime_checkable
class Process(Predictor, Protocol):
    """A data-generating process with exact probabilities; also its own Bayes predictor."""

    latents: dict[str, tuple[str, ...]]

    def sample(self, key: Array, num_sequences: int, length: int) -> Int[Array, "B L"]: ...

    def log_prob(self, tokens: Int[Array, "B L"]) -> Float[Array, " B"]: ...

    def posterior(self, tokens: Int[Array, "B L"], latent: str | None = None) -> Float[Array, "B L+1 K"]: ...


def supports_step(predictor) -> bool:
    """Whether `predictor` offers the incremental init_state/step interface."""
    has_methods = callable(getattr(predictor, "init_state", None)) and callable(getattr(predictor, "step", None))
    return has_methods and bool(getattr(predictor, "supports_step", True))


def check_predictor(predictor, name: str = "predictor") -> None:
    """Raise ValueError unless `predictor` looks like a Predictor."""
    vocab = getattr(predictor, "vocab_size", None)
    if not isinstance(vocab, (int, np.integer)) or vocab < 1:
        raise ValueError(f"{name} must have a positive integer vocab_size, got {vocab!r}")
    if not callable(getattr(predictor, "log_conditionals", None)):
        raise ValueError(f"{name} must have a log_conditionals(tokens) method (the Predictor protocol)")


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


_INT32_MAX = np.iinfo(np.int32).max


def _as_int32(tokens):
    """Cast ids to int32 without wrap-around: every id >= V is equally impossible, so clip huge ones."""
    if jnp.issubdtype(tokens.dtype, jnp.integer) and jnp.iinfo(tokens.dtype).max > _INT32_MAX:
        tokens = jnp.minimum(tokens, _INT32_MAX)
    return tokens.astype(jnp.int32)


def check_tokens(tokens, name: str = "tokens") -> Int[Array, "B L"]:
    """Validate a token batch at the boundary: integer dtype, shape [B, L], no negative ids.

    Values are only checked when concrete; inside jit the caller is trusted.
    """
    if isinstance(tokens, jax.Array) and is_concrete(tokens):
        # Already on device: check there, so a large batch is not copied to the host on every call.
        if tokens.ndim != 2:
            raise ValueError(f"{name} must have shape [batch, length], got shape {tokens.shape}")
        if tokens.size and not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
        if tokens.size:
            # Eagerly, also while a caller's jit is tracing (an array it closes over is concrete).
            with jax.ensure_compile_time_eval():
                minimum = int(jnp.min(tokens))
            if minimum < 0:
                raise ValueError(f"{name} holds negative token ids (min {minimum}); ids must be >= 0")
        return _as_int32(tokens)
    if is_concrete(tokens):
        array = np.asarray(tokens)
        if array.ndim != 2:
            raise ValueError(f"{name} must have shape [batch, length], got shape {array.shape}")
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold integer token ids, got dtype {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError(f"{name} holds negative token ids (min {array.min()}); ids must be >= 0")
        return _as_int32(jnp.asarray(np.minimum(array, _INT32_MAX) if array.size else array))
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array of shape [batch, length], got {tokens.dtype}{tokens.shape}")
    return tokens


def check_probability(value, name: str, *, open_interval: bool = True) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    low_ok = value > 0 if open_interval else value >= 0
    high_ok = value < 1 if open_interval else value <= 1
    if not (np.isfinite(value) and low_ok and high_ok):
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


# --------------------------------------------------------------------------------------------------
# Helpers on log-probabilities that keep -inf rows as -inf (never NaN)
# --------------------------------------------------------------------------------------------------


def log_normalize(logits: Float[Array, "... V"]) -> Float[Array, "... V"]:
    """log_softmax over the last axis; a row that is -inf everywhere stays -inf (an impossible prefix)."""
    top = jnp.max(logits, axis=-1, keepdims=True)
    finite_top = jnp.where(jnp.isfinite(top), top, 0.0)
    shifted = logits - finite_top
    log_total = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    return jnp.where(jnp.isfinite(top), shifted - log_total, -jnp.inf)


def token_log_probs(log_cond: Float[Array, "B L V"], tokens: Int[Array, "B L"]) -> Float[Array, "B L"]:
    """log q(x_t | x_<t) at the observed tokens; ids >= V (impossible tokens) give -inf."""
    vocab = log_cond.shape[-1]
    safe = jnp.clip(tokens, 0, vocab - 1)
    picked = jnp.take_along_axis(log_cond, safe[..., None], axis=-1)[..., 0]
    return jnp.where(tokens < vocab, picked, -jnp.inf)


def prefix_log_probs(log_cond: Float[Array, "B L V"], tokens: Int[Array, "B L"]) -> Float[Array, "B L+1"]:
    """log q(x_<t) for t = 0..L (entry 0 is 0): the log-probability of every prefix."""
    steps = token_log_probs(log_cond, tokens)
    zeros = jnp.zeros(steps.shape[:-1] + (1,), steps.dtype)
    return jnp.concatenate([zeros, jnp.cumsum(steps, axis=-1)], axis=-1)


def align_vocab(log_cond: Float[Array, "... V"], vocab_size: int) -> Float[Array, "... W"]:
    """Truncate or pad (with -inf: probability zero) the vocabulary axis to `vocab_size`."""
    have = log_cond.shape[-1]
    if have >= vocab_size:
        return log_cond[..., :vocab_size]
    pad = jnp.full(log_cond.shape[:-1] + (vocab_size - have,), -jnp.inf, log_cond.dtype)
    return jnp.concatenate([log_cond, pad], axis=-1)


@jax.jit
def _sequence_log_prob(predictor, tokens):
    return prefix_log_probs(predictor.log_conditionals(tokens), tokens)[..., -1]


def sequence_log_prob(predictor, tokens: Int[Array, "B L"]) -> Float[Array, " B"]:
    """log Q(x_1..x_L) by the chain rule over the predictor's conditionals."""
    return _sequence_log_prob(predictor, check_tokens(tokens))


def _min_length(*lengths):
    known = [n for n in lengths if n is not None]
    return min(known) if known else None


# --------------------------------------------------------------------------------------------------
# Transforms: each returns a Predictor
# --------------------------------------------------------------------------------------------------


class Tempered(PytreeNode):
    """q_tau(v | x_<t) proportional to q(v | x_<t)^(1/tau)."""

    _data_fields = ("base", "temperature")
    _static_fields = ()

    def __init__(self, base, temperature):
        check_predictor(base, "q")
        temperature = float(temperature)
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"tau must be a positive finite temperature, got {temperature}")
        self.base = base
        self.temperature = jnp.asarray(temperature)

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def max_length(self):
        return self.base.max_length

    @property
    def supports_step(self) -> bool:
        return supports_step(self.base)

    def _temper(self, log_cond):
        return log_normalize(log_cond / self.temperature)

    def log_conditionals(self, tokens):
        return self._temper(self.base.log_conditionals(tokens))

    def init_state(self, batch: int):
        state, log_next = self.base.init_state(batch)
        return state, self._temper(log_next)

    def step(self, state, token):
        state, log_next = self.base.step(state, token)
        return state, self._temper(log_next)


def with_temperature(q, tau) -> Tempered:
    """The predictor whose conditionals are q's raised to 1/tau and renormalised (tau > 0)."""
    return Tempered(q, tau)


class StickyMarker(PytreeNode):
    """C2's construction: vocabulary V + 1 with marker g = V.

    Before g has appeared, q'(g) = eps and q'(v) = (1 - eps) q(v) for v < V; once g has appeared,
    q'(g) = 1. The base predictor never sees g: prefixes that contain g are overridden anyway.
    """

    _data_fields = ("base", "eps")
    _static_fields = ()

    def __init__(self, base, eps):
        check_predictor(base, "q")
        self.base = base
        self.eps = jnp.asarray(check_probability(eps, "eps"))

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + 1

    @property
    def marker(self) -> int:
        """The token id of g."""
        return self.base.vocab_size

    @property
    def max_length(self):
        return self.base.max_length

    @property
    def supports_step(self) -> bool:
        return supports_step(self.base)

    def _combine(self, log_base, seen):
        eps = self.eps.astype(log_base.dtype)
        before = jnp.concatenate(
            [jnp.log1p(-eps) + log_base, jnp.broadcast_to(jnp.log(eps), log_base.shape[:-1] + (1,))], axis=-1
        )
        after = jnp.concatenate(
            [jnp.full_like(log_base, -jnp.inf), jnp.zeros(log_base.shape[:-1] + (1,), log_base.dtype)], axis=-1
        )
        return jnp.where(seen[..., None], after, before)

    def _hide_marker(self, tokens):
        return jnp.where(tokens == self.marker, 0, tokens)

    def log_conditionals(self, tokens):
        is_marker = (tokens == self.marker).astype(jnp.int32)
        seen_before = (jnp.cumsum(is_marker, axis=-1) - is_marker) > 0
        return self._combine(self.base.log_conditionals(self._hide_marker(tokens)), seen_before)

    def init_state(self, batch: int):
        state, log_next = self.base.init_state(batch)
        seen = jnp.zeros((batch,), bool)
        return (state, seen), self._combine(log_next, seen)

    def step(self, state, token):
        base_state, seen = state
        base_state, log_next = self.base.step(base_state, self._hide_marker(token))
        seen = seen | (token == self.marker)
        return (base_state, seen), self._combine(log_next, seen)


def sticky_marker(q, eps) -> StickyMarker:
    """C2: extend q with a marker token g that has probability eps until it appears, then 1."""
    return StickyMarker(q, eps)


class OffSupportOverride(PytreeNode):
    """Follows `on` on every prefix the process `support` can produce, and `off` on all others."""

    _data_fields = ("on", "support", "off")
    _static_fields = ()

    def __init__(self, on, support, off):
        check_predictor(on, "q")
        check_predictor(support, "p")
        check_predictor(off, "r")
        if on.vocab_size != off.vocab_size:
            raise ValueError(
                f"q and r must share a vocabulary, got q.vocab_size={on.vocab_size} and r.vocab_size={off.vocab_size}"
            )
        if support.vocab_size > on.vocab_size:
            raise ValueError(
                f"p.vocab_size={support.vocab_size} exceeds q.vocab_size={on.vocab_size}; "
                "q must cover every token p can emit"
            )
        self.on, self.support, self.off = on, support, off

    @property
    def vocab_size(self) -> int:
        return self.on.vocab_size

    @property
    def max_length(self):
        return _min_length(self.on.max_length, self.support.max_length, self.off.max_length)

    @property
    def supports_step(self) -> bool:
        return all(supports_step(x) for x in (self.on, self.support, self.off))

    def log_conditionals(self, tokens):
        reachable = jnp.isfinite(prefix_log_probs(self.support.log_conditionals(tokens), tokens)[..., :-1])
        return jnp.where(reachable[..., None], self.on.log_conditionals(tokens), self.off.log_conditionals(tokens))

    def init_state(self, batch: int):
        on_state, on_next = self.on.init_state(batch)
        support_state, support_next = self.support.init_state(batch)
        off_state, _ = self.off.init_state(batch)
        reachable = jnp.ones((batch,), bool)
        return (on_state, support_state, off_state, reachable, support_next), on_next

    def step(self, state, token):
        on_state, support_state, off_state, reachable, support_last = state
        reachable = reachable & jnp.isfinite(token_log_probs(support_last[:, None], token[:, None])[:, 0])
        on_state, on_next = self.on.step(on_state, token)
        support_state, support_next = self.support.step(support_state, token)
        off_state, off_next = self.off.step(off_state, token)
        log_next = jnp.where(reachable[:, None], on_next, off_next)
        return (on_state, support_state, off_state, reachable, support_next), log_next


def override_off_support(q, p, r) -> OffSupportOverride:
    """The predictor that agrees with q on prefixes p can produce and follows r on all others.

    r must give a distribution after every prefix outside p's support that it is asked about; a process
    used as r returns -inf everywhere after its own impossible prefixes, which makes the result sum to
    less than 1 (the divergences refuse such a predictor when they enumerate)."""
    return OffSupportOverride(q, p, r)
