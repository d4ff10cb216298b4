"""Training and held-out data drawn on device from any Process, with keys that depend only on seeds.

Every random number of a run comes from its seed through `jax.random.fold_in`, one named stream per
use, and per step through `fold_in(stream_key, step)`: the batch of step t of seed s is the same
array whether the run was interrupted, sharded over any number of devices, or stacked with other
seeds under `jax.vmap` (JAX's threefry keys are partitionable, so a sharded draw equals an unsharded
one). Slots of a learning-rate sweep that share a seed share their data stream.

`DatasetProcess` turns a fixed token array into a process (its empirical distribution), so the same
loop trains on a fixed dataset, e.g. a model's own generations (C12).

Shape legend (with transformer.py): S seed slots, B sequences, L sequence length, V vocabulary,
N dataset rows.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from toymodels.precision import einsum
from toymodels.predictors import PytreeNode, check_tokens, prefix_log_probs

INIT_STREAM = 0  # the key that draws the initial parameters
DATA_STREAM = 1  # the keys of the training batches, one per step
EVAL_STREAM = 2  # the key of the held-out evaluation batch (rooted at EvalConfig.seed, not a run seed)
EXPERIMENT_STREAM = 3  # the root of an experiment script's own keys (held-out sets, rollouts; never a run's)


def stream_key(seed: int | Array, stream: int) -> Array:
    """The root key of one stream of a seed: fold_in(key(seed), stream). `seed` may be traced."""
    return jax.random.fold_in(jax.random.key(seed), stream)


def init_key(seed: int | Array) -> Array:
    """The key that initialises the parameters of the run with this seed."""
    return stream_key(seed, INIT_STREAM)


def batch_key(seed: int | Array, step: int | Array) -> Array:
    """The key of the training batch of step `step` (0-based: the batch that step `step` + 1 trains on)."""
    return jax.random.fold_in(stream_key(seed, DATA_STREAM), step)


def draw_batch(process, seed: int | Array, step: int | Array, batch_size: int, length: int) -> Int[Array, "B L"]:
    """The training batch of (seed, step): `process.sample(batch_key(seed, step), batch_size, length)`.

    Traceable (seed and step may be traced, sizes are static); vmap over seeds for a seed axis."""
    return process.sample(batch_key(seed, step), batch_size, length)


def heldout_batch(process, seed: int, num_sequences: int, length: int) -> Int[Array, "B L"]:
    """The held-out evaluation batch: sampled with the EVAL_STREAM key of `seed` (an evaluation seed),
    a key no training batch uses, so it is fresh data for every run and the same data for all of them."""
    return process.sample(stream_key(seed, EVAL_STREAM), num_sequences, length)


class DatasetProcess(PytreeNode):
    """The empirical distribution of N fixed sequences: P(x) = #{rows equal to x} / N.

    `sample` draws rows uniformly with replacement (i.i.d. from the empirical distribution), so
    `training.train` on a DatasetProcess fits a fixed dataset with the loop it uses for any process;
    requests shorter than the rows take their prefixes. The conditionals are exact ratios of prefix
    counts, so the model can be evaluated against its training data (the target a maximum-likelihood
    fit of unlimited capacity reaches); a prefix no row has is impossible (-inf for every token).
    """

    _data_fields = ("tokens",)
    _static_fields = ("vocab_size",)

    def __init__(self, tokens: Int[Array, "N L"], vocab_size: int):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        tokens = check_tokens(tokens)
        if tokens.shape[0] < 1 or tokens.shape[1] < 1:
            raise ValueError(f"tokens must hold at least one sequence of length >= 1, got shape {tokens.shape}")
        if int(jnp.max(tokens)) >= vocab_size:
            raise ValueError(f"tokens hold ids >= vocab_size={vocab_size}; raise vocab_size or drop those rows")
        self.tokens = tokens
        self.vocab_size = int(vocab_size)

    @property
    def max_length(self) -> int:
        return self.tokens.shape[1]

    @property
    def latents(self) -> dict[str, tuple[str, ...]]:
        return {}

    def posterior(self, tokens, latent: str | None = None):
        raise ValueError("a DatasetProcess has no latents; it is the empirical distribution of its rows")

    def sample(self, key: Array, num_sequences: int, length: int) -> Int[Array, "B L"]:
        """`num_sequences` rows drawn uniformly with replacement, cut to `length` tokens."""
        if isinstance(num_sequences, bool) or not isinstance(num_sequences, (int, np.integer)) or num_sequences < 1:
            raise ValueError(f"num_sequences must be a positive int, got {num_sequences!r}")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 0 <= length <= self.max_length:
            raise ValueError(f"length must be an int in [0, {self.max_length}] (the rows' length), got {length!r}")
        rows = jax.random.randint(key, (int(num_sequences),), 0, self.tokens.shape[0])
        return self.tokens[rows, : int(length)]

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        """log (#rows with prefix x_<t followed by v) / (#rows with prefix x_<t)."""
        tokens = check_tokens(tokens)
        if tokens.shape[1] > self.max_length:
            raise ValueError(f"tokens have length {tokens.shape[1]} but the rows have length {self.max_length}")
        return _empirical_log_conditionals(self.tokens, tokens, self.vocab_size)

    def log_prob(self, tokens: Int[Array, "B L"]) -> Float[Array, " B"]:
        """log of the fraction of rows whose first L tokens are `tokens`."""
        return prefix_log_probs(self.log_conditionals(tokens), check_tokens(tokens))[:, -1]


@partial(jax.jit, static_argnames=("vocab_size",))
def _empirical_log_conditionals(rows_NxL, tokens_BxL, vocab_size: int):
    length = tokens_BxL.shape[1]
    rows_NxL = rows_NxL[:, :length]
    dtype = jnp.result_type(float)
    equal_BxNxL = (tokens_BxL[:, None, :] == rows_NxL[None, :, :]).astype(dtype)
    # Row n shares the prefix x_<t when it equals the query at every position before t.
    before_BxNxL = jnp.cumprod(jnp.concatenate([jnp.ones_like(equal_BxNxL[..., :1]), equal_BxNxL[..., :-1]], -1), -1)
    counts_BxLxV = einsum("bnl,nlv->blv", before_BxNxL, jax.nn.one_hot(rows_NxL, vocab_size, dtype=dtype))
    total_BxLx1 = counts_BxLxV.sum(-1, keepdims=True)
    safe = jnp.where(total_BxLx1 > 0, total_BxLx1, 1)
    return jnp.where(counts_BxLxV > 0, jnp.log(counts_BxLxV) - jnp.log(safe), -jnp.inf)
