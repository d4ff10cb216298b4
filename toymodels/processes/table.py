"""A process given by an explicit table of probabilities over V^L.

For small V^L: a closed-form distribution (a KL-regularised RL optimum, a fitted model, an enumerated
posterior predictive) becomes a Process that `theory.divergence` can compare with anything. The table
is stored as the log-probabilities of every prefix of every length 0..L, laid end to end, so that the
conditional of any prefix is one gather: log p(v | x_<t) = log P(x_<t v) - log P(x_<t).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from toymodels.predictors import PytreeNode, check_tokens
from toymodels.processes._validation import as_probabilities, check_sums_to_one, device_dtype
from toymodels.processes.hmm import _check_sizes


def _table_shape(size: int, vocab_size, name: str) -> tuple[int, int]:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise ValueError(f"vocab_size must be an int, got {vocab_size!r}")
    vocab_size = int(vocab_size)
    if vocab_size < 2:
        raise ValueError(f"vocab_size={vocab_size} does not fix the length of a flat {name}; pass {name} with shape [V] * L")
    length = int(round(np.log(size) / np.log(vocab_size)))
    if length < 1 or vocab_size**length != size:
        raise ValueError(f"{name} has {size} entries, which is not a positive power of vocab_size={vocab_size}")
    return vocab_size, length


class TableProcess(PytreeNode):
    """P(x_1..x_L) = table[x_1, ..., x_L]; lengths up to L (the table's own length).

    Args:
        probs: shape [V] * L, or flat [V^L] with `vocab_size` given (sequences in lexicographic order,
            x_1 most significant). Non-negative, summing to 1.
        vocab_size: required for a flat table.
    """

    _data_fields = ("log_prefix", "offsets")
    _static_fields = ("vocab_size", "length", "table_offset")

    def __init__(self, probs, vocab_size: int | None = None):
        array = np.asarray(probs)
        flat = as_probabilities(array.reshape(-1), "probs", ndim=1)
        if array.ndim == 1 and vocab_size is None and array.size > 1:
            raise ValueError("a flat probs table needs vocab_size (or pass probs with shape [V] * L)")
        if array.ndim > 1 or vocab_size is None:
            if len(set(array.shape)) != 1:
                raise ValueError(f"probs must have shape [V] * L, got {array.shape}")
            vocab, length = array.shape[0], array.ndim
            if vocab_size is not None and vocab_size != vocab:
                raise ValueError(f"vocab_size={vocab_size} disagrees with probs of shape {array.shape}")
        else:
            vocab, length = _table_shape(flat.size, vocab_size, "probs")
        dtype = device_dtype(flat)
        check_sums_to_one(np.asarray([flat.sum()]), "probs", "the table", dtype)
        self._build(flat.astype(np.float64), vocab, length, dtype)

    @classmethod
    def from_log_weights(cls, log_weights, vocab_size: int | None = None) -> "TableProcess":
        """The table proportional to exp(log_weights): an explicit normalisation, for closed forms such
        as pi_base(x) exp(r(x) / beta) / Z that would overflow in probability space. -inf is weight 0."""
        array = np.asarray(log_weights, dtype=np.float64)
        if np.any(np.isnan(array)) or np.any(array == np.inf):
            raise ValueError("log_weights must not hold NaN or +inf")
        if not np.any(np.isfinite(array)):
            raise ValueError("log_weights gives every sequence weight zero; nothing to normalise")
        top = np.max(array)
        probs = np.exp(array - top)
        probs /= probs.sum()
        return cls(probs, vocab_size)

    def _build(self, flat: np.ndarray, vocab: int, length: int, dtype) -> None:
        levels = [flat]
        for _ in range(length):
            levels.append(levels[-1].reshape(-1, vocab).sum(axis=1))
        levels = levels[::-1]  # levels[t] holds P of every length-t prefix
        with np.errstate(divide="ignore"):
            log_levels = [np.log(level) for level in levels]
        self.log_prefix = jnp.asarray(np.concatenate(log_levels), dtype)
        self.offsets = jnp.asarray(np.cumsum([0] + [level.size for level in levels]), jnp.int32)
        self.vocab_size = vocab
        self.length = length
        self.table_offset = int(self.offsets[length])  # static: where the full-length table starts

    @property
    def max_length(self) -> int:
        return self.length

    @property
    def latents(self) -> dict[str, tuple[str, ...]]:
        return {}

    def probs(self) -> Float[Array, " N"]:
        """The table itself, flat, in lexicographic order."""
        return jnp.exp(self.log_prefix[self.table_offset :])

    def _check_length(self, tokens):
        tokens = check_tokens(tokens)
        if tokens.shape[1] > self.length:
            raise ValueError(f"tokens have length {tokens.shape[1]} but this table only covers length {self.length}")
        return tokens

    def log_prob(self, tokens: Int[Array, "B L"]) -> Float[Array, " B"]:
        return _prefix_scan(self, self._check_length(tokens))[0]

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        return _prefix_scan(self, self._check_length(tokens))[1]

    def posterior(self, tokens, latent: str | None = None):
        raise ValueError("a TableProcess has no latents; it is an explicit distribution over sequences")

    def init_state(self, batch: int):
        index = jnp.zeros((batch,), jnp.int32)
        alive = jnp.ones((batch,), bool)
        t = jnp.zeros((), jnp.int32)
        return (index, alive, t), _next(self, index, alive, t)

    def step(self, state, token: Int[Array, " B"]):
        index, alive, t = state
        index, alive = _advance(self, index, alive, token)
        return (index, alive, t + 1), _next(self, index, alive, t + 1)

    def sample(self, key: Array, num_sequences: int, length: int) -> Int[Array, "B L"]:
        num_sequences, length = _check_sizes(num_sequences, length)
        if length > self.length:
            raise ValueError(f"length={length} exceeds the table's length {self.length}")
        return _sample(self, key, num_sequences)[:, :length]


def _advance(table: TableProcess, index, alive, token):
    alive = alive & (token < table.vocab_size)
    return index * table.vocab_size + jnp.where(alive, token, 0), alive


def _next(table: TableProcess, index, alive, t):
    """log p(v | prefix) for the length-t prefix `index`; -inf beyond the table's length."""
    vocab = table.vocab_size
    within = t < table.length
    next_offset = table.offsets[jnp.minimum(t + 1, table.length)]
    joint = table.log_prefix[next_offset + index[:, None] * vocab + jnp.arange(vocab)]
    here = table.log_prefix[table.offsets[t] + index][:, None]
    possible = alive[:, None] & jnp.isfinite(here) & within
    return jnp.where(possible, joint - jnp.where(possible, here, 0.0), -jnp.inf)


@jax.jit
def _prefix_scan(table: TableProcess, tokens):
    batch, length = tokens.shape
    index0 = jnp.zeros((batch,), jnp.int32)
    alive0 = jnp.ones((batch,), bool)

    def body(carry, inputs):
        index, alive = carry
        t, token = inputs
        log_next = _next(table, index, alive, t)
        return _advance(table, index, alive, token), log_next

    (index, alive), log_next = jax.lax.scan(body, (index0, alive0), (jnp.arange(length), tokens.T))
    log_prob = jnp.where(alive, table.log_prefix[table.offsets[length] + index], -jnp.inf)
    return log_prob, jnp.swapaxes(log_next, 0, 1)


@partial(jax.jit, static_argnames=("num_sequences",))
def _sample(table: TableProcess, key, num_sequences: int):
    full = table.log_prefix[table.table_offset :]
    index = jax.random.categorical(key, full, shape=(num_sequences,))
    powers = table.vocab_size ** jnp.arange(table.length - 1, -1, -1)
    return ((index[:, None] // powers) % table.vocab_size).astype(jnp.int32)
