"""A trained Transformer as a Predictor: one teacher-forced pass, and a key-value cache for rollouts.

`TransformerPredictor(config, params)` is a pytree whose leaves are the parameters and whose static
part is the (hashable) config, so jitted functions that take it (theory.divergence, sampling.generate)
compile once per architecture, not once per trained model; the nnx GraphDef is rebuilt from the config
(`transformer.graphdef_for`, cached) rather than stored.

Incremental interface: `init_state(batch)` reads BOS into an empty cache of `context` slots and returns
log q(x_0); `step(state, token)` writes the token into the next slot and returns log q(x_{t+1} | x_<=t),
attending over the fixed-size cache with a mask: O(context) work per token, O(L^2)-free rollouts. The
cache holds BOS, x_0, ..., x_{C-2}: after the C-th token there is nothing left to predict within the
context, so that step keeps the cache unchanged and returns -inf for every token (sampling.generate
takes that step after its last token and ignores its output).

Every pass runs inside `precision.exact_products()`: the model was trained at the default matmul
precision, but what is read from it here (conditionals, residuals, rollouts) feeds exact comparisons,
and a GPU's default TF32 products would move its logits by ~1e-3. On a CPU nothing changes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from toymodels.precision import exact_products
from toymodels.predictors import PytreeNode, check_tokens
from toymodels.transformer import Transformer, TransformerConfig, graphdef_for, param_shapes


class KVCache(NamedTuple):
    """Decoding state. Slot 0 holds BOS, slot t + 1 holds x_t; slots >= `position` are unused."""

    layers: tuple  # per block: (keys_BxCxHxK, values_BxCxHxK), rotated keys when positions are rotary
    position: Array  # int32 scalar: the slot the next token goes to (= tokens read so far + 1)


def _shape_summary(tree) -> list:
    return [(jax.tree_util.keystr(path), tuple(leaf.shape), jnp.dtype(leaf.dtype).name) for path, leaf in
            jax.tree_util.tree_leaves_with_path(tree)]


class TransformerPredictor(PytreeNode):
    """The Predictor q(x_t | x_<t) = softmax(logits_t) of a Transformer with parameters `params`."""

    _data_fields = ("params",)
    _static_fields = ("config",)

    def __init__(self, config: TransformerConfig, params: nnx.State):
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"config must be a TransformerConfig, got {type(config).__name__}")
        expected, got = _shape_summary(param_shapes(config)), _shape_summary(params)
        if expected != got:
            mismatch = next((e, g) for e, g in zip(expected + [None], got + [None]) if e != g)
            raise ValueError(
                f"params do not match config (expected {mismatch[0]}, got {mismatch[1]}); a stacked ensemble "
                "must be unstacked (or the predictor built inside jax.vmap)"
            )
        self.config = config
        self.params = params

    @classmethod
    def from_model(cls, model: Transformer) -> TransformerPredictor:
        """Wrap an nnx Transformer (its parameters are copied into the pytree, not shared)."""
        return cls(model.config, nnx.split(model, nnx.Param)[1])

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_length(self) -> int:
        return self.config.context

    @property
    def model(self) -> Transformer:
        """A fresh nnx module holding these parameters."""
        return nnx.merge(graphdef_for(self.config), self.params)

    def _log_softmax(self, logits):
        dtype = jnp.promote_types(logits.dtype, jnp.float32)
        return jax.nn.log_softmax(logits.astype(dtype), axis=-1)

    def log_conditionals(self, tokens: Int[Array, "B L"]) -> Float[Array, "B L V"]:
        """out[b, t, v] = log q(x_t = v | tokens[b, :t]) from one teacher-forced pass (L <= context)."""
        return self.outputs(tokens, residuals=False)

    def outputs(self, tokens: Int[Array, "B L"], residuals: bool = True):
        """(log conditionals [B, L, V], residual stream [N+1, B, L, D]) from one teacher-forced pass: the
        stream after the embedding and after each of the N blocks, where index t is the representation
        that predicts x_t (probe it against a latent's posterior after t tokens). With residuals=False,
        the conditionals alone."""
        tokens = check_tokens(tokens)
        if tokens.shape[1] > self.config.context:
            raise ValueError(f"tokens have length {tokens.shape[1]} but max_length is {self.config.context}")
        with exact_products():
            if not residuals:
                return self._log_softmax(self.model(tokens))
            logits, stream = self.model(tokens, return_residuals=True)
        return self._log_softmax(logits), stream

    def init_state(self, batch: int) -> tuple[KVCache, Float[Array, "B V"]]:
        """An empty cache after reading BOS, and log q(x_0 = v) as [batch, V]."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        c = self.config
        shape = (int(batch), c.context, c.num_heads, c.head_dim)
        empty = tuple((jnp.zeros(shape, c.dtype), jnp.zeros(shape, c.dtype)) for _ in range(c.num_layers))
        bos = jnp.full((int(batch),), c.bos, jnp.int32)
        return self._read(KVCache(empty, jnp.zeros((), jnp.int32)), bos)

    def step(self, state: KVCache, token: Int[Array, " B"]) -> tuple[KVCache, Float[Array, "B V"]]:
        """Read one token per row; return the new cache and log q(next token = v | everything read)."""
        token = jnp.asarray(token)
        if token.ndim != 1 or not jnp.issubdtype(token.dtype, jnp.integer):
            raise ValueError(
                f"token must be an integer array of shape [batch], got {token.dtype}{token.shape}"
            )
        # A negative id would index the embedding from the end, i.e. read as BOS: refuse it when the
        # value is known (inside a caller's jit it is not; log_conditionals checks its tokens alike).
        check_tokens(token[:, None], "token")
        return self._read(state, jnp.minimum(token, self.config.vocab_size - 1).astype(jnp.int32))

    def _read(self, state: KVCache, inputs_B):
        with exact_products():
            logits_BxV, layers = self.model.decode(inputs_B, state.position, state.layers)
        full = state.position >= self.config.context  # no slot left: the input was x_{C-1}
        log_next = jnp.where(full, -jnp.inf, self._log_softmax(logits_BxV))
        return KVCache(layers, state.position + 1), log_next
