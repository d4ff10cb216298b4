"""Autoregressive generation from any Predictor.

With the incremental interface (init_state/step: an HMM filter, a transformer's key-value cache) each
token costs O(1) predictor work; without it every token re-reads the whole prefix through
`log_conditionals` on a fixed-size buffer (causal predictors ignore the unfilled tail), so one
compilation serves every position either way.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from toymodels.predictors import check_predictor, check_tokens, supports_step


def _draw(key, log_next, temperature, greedy: bool):
    if greedy:
        return jnp.argmax(log_next, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, log_next / temperature, axis=-1).astype(jnp.int32)


def generate(
    predictor,
    key: Array,
    num_sequences: int,
    length: int,
    temperature: float = 1.0,
    prompt: Int[Array, "B P"] | Int[Array, " P"] | None = None,
) -> Int[Array, "B P+L"]:
    """Sample `length` tokens after `prompt` (none by default) from q at `temperature`.

    Returns [num_sequences, P + length]: the prompt followed by the generated tokens. Temperature 0
    means greedy decoding (argmax). A one-dimensional prompt is shared by every sequence.
    """
    check_predictor(predictor)
    if int(num_sequences) != num_sequences or num_sequences < 1:
        raise ValueError(f"num_sequences must be a positive int, got {num_sequences}")
    if int(length) != length or length < 0:
        raise ValueError(f"length must be a non-negative int, got {length}")
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be finite and >= 0 (0 is greedy), got {temperature}")
    if prompt is None:
        prompt = jnp.zeros((num_sequences, 0), jnp.int32)
    else:
        prompt = np.asarray(prompt)
        if prompt.ndim == 1:
            prompt = np.broadcast_to(prompt, (num_sequences, prompt.shape[0]))
        prompt = check_tokens(prompt, "prompt")
        if prompt.shape[0] != num_sequences:
            raise ValueError(f"prompt has {prompt.shape[0]} rows but num_sequences={num_sequences}")
    total = prompt.shape[1] + int(length)
    if predictor.max_length is not None and total > predictor.max_length:
        raise ValueError(
            f"prompt plus length is {total} tokens but the predictor conditions on at most "
            f"{predictor.max_length}; shorten the request"
        )
    if total == 0:  # nothing to draw, and the loops below cannot index an empty buffer
        return prompt
    greedy = temperature == 0.0
    temperature = jnp.asarray(1.0 if greedy else temperature)
    if supports_step(predictor):
        return _generate_incremental(predictor, key, prompt, temperature, length=int(length), greedy=greedy)
    return _generate_recompute(predictor, key, prompt, temperature, length=int(length), greedy=greedy)


@partial(jax.jit, static_argnames=("length", "greedy"))
def _generate_incremental(predictor, key, prompt, temperature, *, length: int, greedy: bool):
    batch, prompt_length = prompt.shape
    total = prompt_length + length
    state, log_next = predictor.init_state(batch)
    # Past the prompt the padded column is ignored; inside it, the prompt token is forced.
    padded = jnp.concatenate([prompt, jnp.zeros((batch, length), jnp.int32)], axis=1)

    def body(carry, t):
        state, log_next = carry
        drawn = _draw(jax.random.fold_in(key, t), log_next, temperature, greedy)
        token = jnp.where(t < prompt_length, padded[:, t], drawn)
        state, log_next = predictor.step(state, token)
        return (state, log_next), token

    _, tokens = jax.lax.scan(body, (state, log_next), jnp.arange(total))
    return tokens.T


@partial(jax.jit, static_argnames=("length", "greedy"))
def _generate_recompute(predictor, key, prompt, temperature, *, length: int, greedy: bool):
    batch, prompt_length = prompt.shape
    buffer = jnp.concatenate([prompt, jnp.zeros((batch, length), jnp.int32)], axis=1)

    def body(t, buffer):
        log_next = predictor.log_conditionals(buffer)[:, t]
        drawn = _draw(jax.random.fold_in(key, t), log_next, temperature, greedy)
        return buffer.at[:, t].set(drawn)

    return jax.lax.fori_loop(prompt_length, prompt_length + length, body, buffer)
