"""A small decoder-only transformer (flax.nnx): pre-norm blocks, learned or rotary positions.

Shape legend (with predictors.py): B batch, L sequence length, V vocabulary, D d_model, H heads,
K head width, M MLP width, C context (cache slots), N layers, T query positions, S key positions.

Alignment. The model reads [BOS, x_0, ..., x_{L-2}] with BOS = vocab_size (an extra embedding row the
model never emits), so position t has seen x_<t and its logits predict x_t: logits_BxLxV[:, t] is
log q(x_t | x_<t) up to normalisation, and t = 0 predicts the first token. The residual stream at
position t is the representation that predicts x_t; a probe regresses the exact belief state after t
tokens (`posterior(tokens)[:, t]`, t = 0..L-1) onto residual position t. No position holds the belief
after all L tokens: feed L + 1 tokens to get it.

Token ids >= vocab_size are clipped to vocab_size - 1: a predictor never needs ids it cannot emit, and
the divergences only feed it ids below its vocabulary (a process scores the *predictor's* samples, not
the reverse). Negative ids are an error at the predictor's boundary (see transformer_predictor.py).

Myopic mode (Wu, Morris, Levine 2024): the attention of query t to positions s < t uses
stop_gradient(k_s), stop_gradient(v_s), while s = t keeps its gradient, so the loss at t trains
nothing about the representations of earlier positions. Forward values are unchanged.

Functional form for training: `init_params(config, key) -> (graphdef, params)` and
`apply(graphdef, params, tokens)`; `jax.vmap(lambda k: init_params(config, k)[1])(keys)` makes an
ensemble. The cached decoding path (`Transformer.decode`) is used by TransformerPredictor.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from toymodels import pallas_attention, precision
from toymodels.native import causal_attention as native_attention

POSITIONS = ("learned", "rotary")
# How the full (teacher-forced) pass attends: "einsum" materialises the [B, H, L, L] scores (exact
# softmax, supports myopic mode; on a CPU, for float32 and not myopic, the C++ kernel
# toymodels/native/causal_attention.cc computes the same softmax without them: Attention._use_kernel);
# "xla" and "cudnn" call jax.nn.dot_product_attention with that implementation, causal ("cudnn": cuDNN
# flash attention, NVIDIA GPUs with float16 or bfloat16 activations, scores never materialised);
# "pallas" is a fused Triton kernel (NVIDIA GPUs; see toymodels.pallas_attention). The cached
# decoding step always uses "einsum".
ATTENTION = ("einsum", "xla", "cudnn", "pallas")
_EMBED_INIT = nnx.initializers.normal(stddev=0.02)
# Largest embedding table (vocabulary + BOS) that accelerators look up by a one-hot product (`embed_rows`).
ONE_HOT_MAX_ROWS = 256


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a Transformer; hashable, so it can be static under jit."""

    vocab_size: int  # V: token ids 0..V-1 are emitted; id V is the beginning-of-sequence token
    context: int  # C: longest sequence the model reads (size of learned positions and of the cache)
    num_layers: int  # N: transformer blocks (0 gives an embedding-unembedding model)
    d_model: int  # D: width of the residual stream
    num_heads: int  # H: attention heads per block
    head_dim: int | None = None  # K: width of each head; None means d_model // num_heads
    mlp_width: int | None = None  # M: hidden width of each MLP; None means 4 * d_model
    positions: str = "learned"  # "learned" (absolute table added to the embedding) or "rotary"
    rotary_base: float = 10_000.0  # base of rotary frequencies, base^(-2i/K); unused for "learned"
    layer_norm_eps: float = 1e-5  # epsilon inside every LayerNorm
    param_dtype: str = "float32"  # dtype of parameters (explicit: tests run with x64 on)
    dtype: str = "float32"  # dtype of activations, logits and the key-value cache
    myopic: bool = False  # stop gradients into keys/values of earlier positions (training only)
    attention: str = "einsum"  # the full pass's attention implementation: one of ATTENTION

    def __post_init__(self):
        minimums = {"vocab_size": 1, "context": 1, "num_layers": 0, "d_model": 1, "num_heads": 1}
        for name, minimum in minimums.items():
            _check_int(name, getattr(self, name), minimum)
        if self.head_dim is None:
            if self.d_model % self.num_heads:
                raise ValueError(
                    f"head_dim defaults to d_model // num_heads, but d_model={self.d_model} is not divisible "
                    f"by num_heads={self.num_heads}; set head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.d_model // self.num_heads)
        _check_int("head_dim", self.head_dim, 1)
        if self.mlp_width is None:
            object.__setattr__(self, "mlp_width", 4 * self.d_model)
        _check_int("mlp_width", self.mlp_width, 1)
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary positions, got {self.head_dim}")
        if not (np.isfinite(self.rotary_base) and self.rotary_base > 1):
            raise ValueError(f"rotary_base must be a finite number > 1, got {self.rotary_base!r}")
        if not (np.isfinite(self.layer_norm_eps) and self.layer_norm_eps > 0):
            raise ValueError(f"layer_norm_eps must be a positive finite number, got {self.layer_norm_eps!r}")
        for name in ("param_dtype", "dtype"):
            value = getattr(self, name)
            try:
                ok = jnp.issubdtype(jnp.dtype(value), jnp.floating)
            except TypeError:
                ok = False
            if not ok:
                raise ValueError(f"{name} must name a floating dtype such as 'float32', got {value!r}")
            object.__setattr__(self, name, jnp.dtype(value).name)
        if not isinstance(self.myopic, bool):
            raise ValueError(f"myopic must be a bool, got {self.myopic!r}")
        if self.attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if self.myopic and self.attention != "einsum":
            raise ValueError(f"myopic mode needs attention='einsum' (it edits the scores), got {self.attention!r}")
        if self.attention == "cudnn" and self.dtype not in ("float16", "bfloat16"):
            raise ValueError(f"attention='cudnn' takes float16 or bfloat16 activations; set dtype (got {self.dtype!r})")
        if self.attention == "pallas" and self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"attention='pallas' takes float32, float16 or bfloat16 activations; set dtype "
                             f"(got {self.dtype!r})")

    @property
    def bos(self) -> int:
        """Id of the beginning-of-sequence token (one past the vocabulary)."""
        return self.vocab_size


# --------------------------------------------------------------------------------------------------
# Attention math shared by the full pass and the cached step
# --------------------------------------------------------------------------------------------------


def rotate(
    x_BxTxHxK: Float[Array, "B T H K"], positions_T: Int[Array, " T"], base: float
) -> Float[Array, "B T H K"]:
    """Rotary position embedding (half-split pairs): pair (i, i + K/2) turns by angle pos * base^(-2i/K)."""
    half = x_BxTxHxK.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_TxK = positions_T.astype(jnp.float32)[:, None] * freqs[None, :]
    cos = jnp.cos(angles_TxK)[None, :, None, :].astype(x_BxTxHxK.dtype)
    sin = jnp.sin(angles_TxK)[None, :, None, :].astype(x_BxTxHxK.dtype)
    x1, x2 = x_BxTxHxK[..., :half], x_BxTxHxK[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attend(
    q_BxTxHxK: Float[Array, "B T H K"],
    k_BxSxHxK: Float[Array, "B S H K"],
    v_BxSxHxK: Float[Array, "B S H K"],
    mask_TxS: Bool[Array, "T S"],
    myopic: bool = False,
    keys_first: bool | None = None,
) -> Float[Array, "B T H K"]:
    """softmax(q k^T / sqrt(K) over allowed keys) v, per head. Every query needs one allowed key.

    myopic (needs T = S, query t at key position t): the values and gradients are those of attention
    to stop_gradient(k_s), stop_gradient(v_s) for s != t and to k_t, v_t themselves on the diagonal.

    keys_first lays the scores out [B, H, S, T] and normalises over axis -2 instead of [B, H, T, S]
    over axis -1 (the same numbers); None chooses by backend. Why: on an H100, XLA fused the
    [B, H, T, S] softmax and its gradient into Triton kernels several times slower than their memory
    traffic; keys first, the 64-seed benchmark's bfloat16 training step ran 1.16x faster. On a CPU the
    [B, H, T, S] form trained 4% faster.
    """
    if keys_first is None:
        keys_first = jax.default_backend() != "cpu"
    layout, key_axis = ("bhst", -2) if keys_first else ("bhts", -1)
    scale = q_BxTxHxK.shape[-1] ** -0.5
    keys = jax.lax.stop_gradient(k_BxSxHxK) if myopic else k_BxSxHxK
    scores = jnp.einsum(f"bthk,bshk->{layout}", q_BxTxHxK, keys) * scale
    if myopic:
        diagonal_BxHxT = jnp.einsum("bthk,bthk->bht", q_BxTxHxK, k_BxSxHxK) * scale
        eye = jnp.eye(scores.shape[-2], scores.shape[-1], dtype=bool)  # square: T = S
        scores = jnp.where(eye, diagonal_BxHxT[..., None, :] if keys_first else diagonal_BxHxT[..., None], scores)
    scores = jnp.where(mask_TxS.T if keys_first else mask_TxS, scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=key_axis)
    if not myopic:
        return jnp.einsum(f"{layout},bshk->bthk", probs, v_BxSxHxK)
    frozen_BxSxHxK = jax.lax.stop_gradient(v_BxSxHxK)
    out_BxTxHxK = jnp.einsum(f"{layout},bshk->bthk", probs, frozen_BxSxHxK)
    # Zero in value; carries the diagonal's gradient into v_t with weight p_tt.
    self_weight_BxTxH = jnp.diagonal(probs, axis1=-2, axis2=-1).transpose(0, 2, 1)
    return out_BxTxHxK + self_weight_BxTxH[..., None] * (v_BxSxHxK - frozen_BxSxHxK)


def causal_attend(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, myopic: bool = False) -> Float[Array, "B L H K"]:
    """`attend` with the causal mask: query t sees keys s <= t (the full pass's "einsum" attention)."""
    length = q_BxLxHxK.shape[1]
    return attend(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, jnp.tril(jnp.ones((length, length), bool)), myopic=myopic)


def _causal_attend(qkv_BxLx3xHxK: Float[Array, "B L 3 H K"]) -> Float[Array, "B L H K"]:
    """`causal_attend` of (already rotated) queries, keys and values stacked on axis 2."""
    return causal_attend(*(qkv_BxLx3xHxK[:, :, i] for i in range(3)))


# --------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------


def embed_rows(table_VxD: Float[Array, "V D"], ids_BxT: Int[Array, "B T"], one_hot: bool) -> Float[Array, "B T D"]:
    """Rows `table_VxD[ids_BxT]`, by a gather (`one_hot=False`) or by a one-hot product at full
    precision (`one_hot=True`, what accelerators use); the values and gradients are the same.

    Why a product on accelerators: the gather's gradient is a scatter-add of every token's gradient
    into the few rows of a toy vocabulary, which GPUs run as contending atomic adds. On an H100 it took
    1.6 ms of a 2.0 ms bfloat16 training step, and since the order of the additions varies from run to
    run, a resumed run's parameters differed in the last bit from an uninterrupted one's (with the
    product they are identical). The product's gradient is a matmul: fast and reproducible. It costs
    memory B * T * V, so models use it up to ONE_HOT_MAX_ROWS rows (toy vocabularies are far smaller;
    beyond, bit-for-bit reproducibility on a GPU needs XLA_FLAGS=--xla_gpu_deterministic_ops=true,
    which made the 64-seed benchmark step 2.4x slower). A CPU keeps the gather: its scatter runs in
    order."""
    if not one_hot:
        return jnp.take(table_VxD, ids_BxT, axis=0)
    onehot_BxTxV = jax.nn.one_hot(ids_BxT, table_VxD.shape[0], dtype=table_VxD.dtype)
    return precision.einsum("btv,vd->btd", onehot_BxTxV, table_VxD)


class Linear(nnx.Linear):
    """nnx.Linear (same parameters, names and initialisation) applied to the inputs flattened to 2-D.

    Why: autodiff's weight gradient of a [B, L, I] x [I, O] product contracts over two axes, which
    XLA:CPU lowers through transposed copies; on [B*L, I] it is one plain matmul (a training step of
    the benchmark model ran about 1.3x faster). Values and gradients are the same products."""

    def __call__(self, inputs: Float[Array, "... I"]) -> Float[Array, "... O"]:
        dtype = self.dtype or jnp.result_type(inputs, self.kernel[...])
        kernel, bias = self.kernel[...].astype(dtype), self.bias[...].astype(dtype)
        flat_NxI = inputs.astype(dtype).reshape(-1, inputs.shape[-1])
        return (flat_NxI @ kernel + bias).reshape(inputs.shape[:-1] + (kernel.shape[-1],))


def _dtypes(config: TransformerConfig) -> dict:
    return {"dtype": jnp.dtype(config.dtype), "param_dtype": jnp.dtype(config.param_dtype)}


class Attention(nnx.Module):
    """Multi-head self-attention with a fused query-key-value projection."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        width = config.num_heads * config.head_dim
        self.qkv = Linear(config.d_model, 3 * width, rngs=rngs, **_dtypes(config))
        self.out = Linear(width, config.d_model, rngs=rngs, **_dtypes(config))

    def project(self, x_BxTxD, positions_T):
        """Queries, keys and values of inputs at `positions_T` (rotated when positions are rotary)."""
        return self._split(self._fused_projection(x_BxTxD), positions_T)

    def _fused_projection(self, x_BxTxD) -> Float[Array, "B T 3 H K"]:
        return self.qkv(x_BxTxD).reshape(x_BxTxD.shape[:2] + (3, self.config.num_heads, self.config.head_dim))

    def _split(self, qkv_BxTx3xHxK, positions_T):
        """(q, k, v) from the fused projection, q and k rotated when positions are rotary."""
        q, k, v = (qkv_BxTx3xHxK[:, :, i] for i in range(3))
        if self.config.positions == "rotary":
            q, k = rotate(q, positions_T, self.config.rotary_base), rotate(k, positions_T, self.config.rotary_base)
        return q, k, v

    def _use_kernel(self) -> bool:
        """Whether the full pass runs the CPU kernel toymodels/native/causal_attention.cc: for "einsum"
        attention, float32 and not myopic, on a CPU where it could be built (else TOYMODELS_NATIVE=0 or
        no C++ compiler: `attend`). It computes the same softmax (to float32 rounding) and its own
        backward pass, so reverse-mode autodiff works through it and forward mode (jax.jvp) does not
        (attention="xla" supports both). Why: XLA's CPU code spent about a third of the benchmark
        model's training step in the [B, H, L, L] scores, their transposes, small batched products and
        the slicing of q, k, v; the kernel made the step about 1.1x faster."""
        c = self.config
        return (c.attention == "einsum" and not c.myopic and jnp.dtype(c.dtype) == jnp.float32
                and jax.default_backend() == "cpu" and native_attention.available(jnp.float32))

    def __call__(self, x_BxLxD: Float[Array, "B L D"]) -> Float[Array, "B L D"]:
        """Causal attention over the whole sequence (position t attends to positions <= t)."""
        c = self.config
        qkv_BxLx3xHxK = self._fused_projection(x_BxLxD)
        q, k, v = self._split(qkv_BxLx3xHxK, jnp.arange(x_BxLxD.shape[1], dtype=jnp.int32))
        if self._use_kernel():
            if c.positions == "rotary":  # the kernel reads q, k, v as one array: restack them rotated
                qkv_BxLx3xHxK = jnp.stack([q, k, v], axis=2)
            out_BxLxHxK = jax.lax.platform_dependent(qkv_BxLx3xHxK, cpu=native_attention.causal_attention,
                                                     default=_causal_attend)
        elif c.attention == "einsum":
            out_BxLxHxK = causal_attend(q, k, v, myopic=c.myopic)
        elif c.attention in ("cudnn", "pallas") and jax.default_backend() != "gpu":
            raise ValueError(f"attention={c.attention!r} needs an NVIDIA GPU, but JAX runs on "
                             f"{jax.default_backend()}; use attention='xla' or 'einsum' there")
        elif c.attention == "pallas":
            out_BxLxHxK = pallas_attention.causal_attention(q, k, v)
        else:
            out_BxLxHxK = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=c.attention)
        return self.out(out_BxLxHxK.reshape(x_BxLxD.shape[:2] + (self.qkv.out_features // 3,)))

    def decode(self, x_Bx1xD, position, keys_BxCxHxK, values_BxCxHxK):
        """One new position: write its key and value into cache slot `position` (dropped when the
        cache is full), attend over slots <= position, return (output, keys, values)."""
        q, k, v = self.project(x_Bx1xD, position[None])
        keys_BxCxHxK = keys_BxCxHxK.at[:, position].set(k[:, 0], mode="drop")
        values_BxCxHxK = values_BxCxHxK.at[:, position].set(v[:, 0], mode="drop")
        allowed_1xC = (jnp.arange(keys_BxCxHxK.shape[1]) <= position)[None, :]
        out_Bx1xHxK = attend(q, keys_BxCxHxK, values_BxCxHxK, allowed_1xC)
        out_Bx1xD = self.out(out_Bx1xHxK.reshape(x_Bx1xD.shape[:2] + (self.qkv.out_features // 3,)))
        return out_Bx1xD, keys_BxCxHxK, values_BxCxHxK


class Block(nnx.Module):
    """Pre-norm block: h + attn(LN(h)), then h + MLP(LN(h)) with a GELU MLP."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        kwargs = {"epsilon": config.layer_norm_eps, "rngs": rngs, **_dtypes(config)}
        self.ln_attn = nnx.LayerNorm(config.d_model, **kwargs)
        self.attn = Attention(config, rngs=rngs)
        self.ln_mlp = nnx.LayerNorm(config.d_model, **kwargs)
        self.fc_in = Linear(config.d_model, config.mlp_width, rngs=rngs, **_dtypes(config))
        self.fc_out = Linear(config.mlp_width, config.d_model, rngs=rngs, **_dtypes(config))

    def mlp(self, h_BxLxD):
        return h_BxLxD + self.fc_out(jax.nn.gelu(self.fc_in(self.ln_mlp(h_BxLxD))))

    def __call__(self, h_BxLxD: Float[Array, "B L D"]) -> Float[Array, "B L D"]:
        return self.mlp(h_BxLxD + self.attn(self.ln_attn(h_BxLxD)))

    def decode(self, h_Bx1xD, position, keys_BxCxHxK, values_BxCxHxK):
        attended = self.attn.decode(self.ln_attn(h_Bx1xD), position, keys_BxCxHxK, values_BxCxHxK)
        return self.mlp(h_Bx1xD + attended[0]), attended[1], attended[2]


class Transformer(nnx.Module):
    """Decoder-only transformer; see the module docstring for the BOS shift and the alignment."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        dtypes = _dtypes(config)
        # Row vocab_size is BOS: an input only, never a logit.
        self.embedding = nnx.Embed(
            config.vocab_size + 1, config.d_model, embedding_init=_EMBED_INIT, rngs=rngs, **dtypes
        )
        if config.positions == "learned":
            table = _EMBED_INIT(rngs.params(), (config.context, config.d_model), dtypes["param_dtype"])
            self.position_embedding = nnx.Param(table)
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.ln_final = nnx.LayerNorm(config.d_model, epsilon=config.layer_norm_eps, rngs=rngs, **dtypes)
        self.unembed = Linear(config.d_model, config.vocab_size, rngs=rngs, **dtypes)

    def _check_length(self, length: int) -> None:
        if length > self.config.context:
            raise ValueError(f"tokens have length {length} but the model's context is {self.config.context}")

    def _embed_inputs(self, inputs_BxT, positions_T=None):
        """Embedding of already-shifted inputs (ids 0..V, V = BOS) at the given positions (None: 0..T-1).

        Rows are looked up in the parameters' dtype and cast afterwards (see `embed_rows`); positions
        0..T-1 are a slice, whose gradient is a sum over the batch rather than a scatter."""
        tokens_VxD = self.embedding.embedding[...]
        one_hot = jax.default_backend() != "cpu" and tokens_VxD.shape[0] <= ONE_HOT_MAX_ROWS
        h_BxTxD = embed_rows(tokens_VxD, inputs_BxT, one_hot=one_hot)
        if self.config.positions == "learned":
            positions_CxD = self.position_embedding[...]
            if positions_T is None:
                h_BxTxD = h_BxTxD + positions_CxD[: inputs_BxT.shape[1]][None]
            else:
                h_BxTxD = h_BxTxD + jnp.take(positions_CxD, positions_T, axis=0, mode="clip")[None]
        return h_BxTxD.astype(self.config.dtype)

    def embed(self, tokens_BxL: Int[Array, "B L"]) -> Float[Array, "B L D"]:
        """Residual stream before the first block: embeddings of [BOS, x_0..x_{L-2}] (+ positions)."""
        if tokens_BxL.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, length], got shape {tokens_BxL.shape}")
        self._check_length(tokens_BxL.shape[1])
        tokens_BxL = jnp.minimum(tokens_BxL, self.config.vocab_size - 1)
        bos_Bx1 = jnp.full((tokens_BxL.shape[0], 1), self.config.bos, tokens_BxL.dtype)
        length = tokens_BxL.shape[1]
        inputs_BxL = jnp.concatenate([bos_Bx1, tokens_BxL], axis=1)[:, :length]
        return self._embed_inputs(inputs_BxL)

    def from_embeddings(self, h_BxLxD: Float[Array, "B L D"], return_residuals: bool = False):
        """Blocks, final LayerNorm and unembedding applied to a residual stream from `embed`."""
        residuals = [h_BxLxD]
        for block in self.blocks:
            h_BxLxD = block(h_BxLxD)
            residuals.append(h_BxLxD)
        logits_BxLxV = self.unembed(self.ln_final(h_BxLxD))
        if return_residuals:
            return logits_BxLxV, jnp.stack(residuals)
        return logits_BxLxV

    def __call__(self, tokens_BxL: Int[Array, "B L"], return_residuals: bool = False):
        """logits_BxLxV (position t predicts x_t from x_<t); with return_residuals also the residual
        stream [N+1, B, L, D] after the embedding and after each block (before the final LayerNorm)."""
        return self.from_embeddings(self.embed(tokens_BxL), return_residuals=return_residuals)

    def decode(
        self, inputs_B: Int[Array, " B"], position: Int[Array, ""], cache: tuple
    ) -> tuple[Float[Array, "B V"], tuple]:
        """Logits after reading input id `inputs_B` (BOS or a token, not shifted) at `position`, given
        the cache ((keys_BxCxHxK, values_BxCxHxK) per layer) of all earlier positions."""
        h_Bx1xD = self._embed_inputs(inputs_B[:, None], position[None])
        new_cache = []
        for block, (keys, values) in zip(self.blocks, cache):
            h_Bx1xD, keys, values = block.decode(h_Bx1xD, position, keys, values)
            new_cache.append((keys, values))
        return self.unembed(self.ln_final(h_Bx1xD))[:, 0], tuple(new_cache)


# --------------------------------------------------------------------------------------------------
# Functional form
# --------------------------------------------------------------------------------------------------


def init_params(config: TransformerConfig, key: Array) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of a freshly initialised model; params is a pytree of float arrays.

    vmappable over keys: `jax.vmap(lambda k: init_params(config, k)[1])(keys)` stacks an ensemble."""
    return nnx.split(Transformer(config, rngs=nnx.Rngs(params=key)))


def apply(
    graphdef: nnx.GraphDef, params: nnx.State, tokens_BxL: Int[Array, "B L"], return_residuals: bool = False
):
    """The model as a pure function of (params, tokens): Transformer.__call__ of merge(graphdef, params)."""
    return nnx.merge(graphdef, params)(tokens_BxL, return_residuals=return_residuals)


@lru_cache(maxsize=64)
def graphdef_for(config: TransformerConfig) -> nnx.GraphDef:
    """The GraphDef every model of `config` shares (built abstractly: no parameters are drawn)."""
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(params=0)))
    return nnx.split(abstract)[0]


@lru_cache(maxsize=64)
def param_shapes(config: TransformerConfig) -> nnx.State:
    """jax.ShapeDtypeStruct of every parameter of a model of `config`."""
    return jax.eval_shape(lambda key: init_params(config, key)[1], jax.random.key(0))
