"""Tests of toymodels/transformer.py and toymodels/transformer_predictor.py on tiny float32 configs.

Tolerances: two float32 computations of the same logits that differ only in the order of operations
(jit versus eager, a masked cache of C slots versus a causal L x L pass) agree to a few float32 ulps of
values of order 1-10; we allow ATOL = RTOL = 1e-5 (about 80 ulps at 1.0). Causality and myopia are
exact: the gradients that must vanish are exactly zero, not small. Every test runs with full-precision
matrix products (`exact_products`): on a GPU the default float32 product rounds to TF32, which moves
logits by about 1e-3 and differently on two paths (the myopic diagonal is a reduction, the scores a
matmul), far beyond these tolerances.
"""

from __future__ import annotations

import contextlib
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from transformer_params import random_model as setup
from wrappers import ConditionalsOnly

from theory.divergence import forward_kl
from toymodels.precision import exact_products
from toymodels.processes import mess3
from toymodels.sampling import generate
from toymodels.transformer import (
    Linear,
    TransformerConfig,
    apply,
    attend,
    embed_rows,
    graphdef_for,
    init_params,
)
from toymodels.pallas_attention import causal_attention
from toymodels.transformer_predictor import TransformerPredictor

ATOL = RTOL = 1e-5
CONTEXT, LENGTH, BATCH = 8, 7, 3
POSITIONS = ["learned", "rotary"]


@pytest.fixture(autouse=True)
def _full_precision_products():
    """Off a CPU only: a CPU's float32 products are full precision already."""
    with exact_products() if jax.default_backend() != "cpu" else contextlib.nullcontext():
        yield


def config(positions="learned", **overrides) -> TransformerConfig:
    fields = dict(vocab_size=3, context=CONTEXT, num_layers=2, d_model=16, num_heads=2, mlp_width=32)
    fields["positions"] = positions
    return TransformerConfig(**{**fields, **overrides})


def tokens(seed=1, length=LENGTH, vocab=3):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, (BATCH, length)), jnp.int32)


@partial(jax.jit, static_argnums=0)
def gradient_tables(graphdef, params, x_BxL):
    """Logits, residuals, and two tables of |gradient| summed over batch and width w.r.t. h_s, the residual
    stream after the embedding at input position s (which holds x_{s-1}): loss[t, s] for loss_t, the
    cross-entropy of predicting x_t; residual[n, t, s] for the sum of residual n at position t."""
    model = nnx.merge(graphdef, params)
    h_BxLxD = model.embed(x_BxL)
    num_layers, length = model.config.num_layers, x_BxL.shape[1]

    def outputs(h_BxLxD):
        logits_BxLxV, residuals_NxBxLxD = model.from_embeddings(h_BxLxD, return_residuals=True)
        log_q_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
        loss_L = -jnp.take_along_axis(log_q_BxLxV, x_BxL[..., None], axis=-1)[..., 0].sum(axis=0)
        return jnp.concatenate([loss_L, residuals_NxBxLxD.sum(axis=(1, 3)).reshape(-1)])

    # One reverse-mode Jacobian (a batch of vector-Jacobian products) for both tables.
    table_OxL = jnp.abs(jax.jacrev(outputs)(h_BxLxD)).sum(axis=(1, 3))
    loss_LxL, residual_NxLxL = table_OxL[:length], table_OxL[length:].reshape(num_layers + 1, length, length)
    logits_BxLxV, residuals_NxBxLxD = model.from_embeddings(h_BxLxD, return_residuals=True)
    return logits_BxLxV, residuals_NxBxLxD, loss_LxL, residual_NxLxL


AFTER = np.triu(np.ones((LENGTH, LENGTH), bool), k=1)  # (t, s) with s > t
BEFORE = np.tril(np.ones((LENGTH, LENGTH), bool), k=-1)  # (t, s) with s < t


@pytest.mark.parametrize("positions", POSITIONS)
def test_causality_by_gradients(positions):
    """The loss at t has exactly zero gradient w.r.t. embedding inputs after t, nonzero at and before t."""
    table = np.asarray(gradient_tables(*setup(config(positions)), tokens())[2])
    assert np.all(table[AFTER] == 0) and np.all(table[~AFTER] > 0), table


def test_myopic_loss_has_no_gradient_into_earlier_positions():
    """Myopic: loss at t has zero gradient into positions s < t (normal: nonzero); same forward values."""
    graphdef, params = setup(config("rotary"))
    x = tokens()
    logits, _, normal, _ = map(np.asarray, gradient_tables(graphdef, params, x))
    myopic_graphdef = graphdef_for(config("rotary", myopic=True))
    myopic_logits, _, myopic, _ = map(np.asarray, gradient_tables(myopic_graphdef, params, x))
    np.testing.assert_allclose(myopic_logits, logits, atol=ATOL, rtol=RTOL)
    assert np.all(myopic[BEFORE] == 0) and np.all(np.diag(myopic) > 0) and np.all(myopic[AFTER] == 0), myopic
    assert np.all(normal[BEFORE] > 0), normal


@pytest.mark.parametrize("positions", POSITIONS)
def test_residuals_shape_and_alignment(positions):
    """Residuals are [N+1, B, L, D] float32; residual t depends on x_<t only (x_t enters at s = t+1)."""
    cfg = config(positions)
    logits, residuals, _, table = gradient_tables(*setup(cfg), tokens())
    assert logits.shape == (BATCH, LENGTH, 3) and logits.dtype == jnp.float32
    assert residuals.shape == (cfg.num_layers + 1, BATCH, LENGTH, cfg.d_model)
    assert residuals.dtype == jnp.float32
    first = np.asarray(residuals[:, :, 0])  # position 0 has seen only BOS: the same vector in every row
    np.testing.assert_array_equal(first, np.broadcast_to(first[:, :1], first.shape))
    table = np.asarray(table)
    assert np.all(table[:, AFTER] == 0), table
    assert np.all(np.diagonal(table, axis1=1, axis2=2) > 0) and np.all(table[1:][:, ~AFTER] > 0), table


def test_jit_and_eager_agree():
    """apply under jax.jit equals eager apply (logits and residuals) to ATOL = RTOL = 1e-5 (float32)."""
    graphdef, params = setup(config("learned"))
    x = tokens()
    for eager, jitted in zip(apply(graphdef, params, x, True), gradient_tables(graphdef, params, x)):
        assert jitted.dtype == eager.dtype == jnp.float32
        np.testing.assert_allclose(jitted, eager, atol=ATOL, rtol=RTOL)


@jax.jit
def decode_and_score(q, x_BxL):
    """(log q(x_t | x_<t) for t = 0..L from init_state and L steps, the final state, log_conditionals)."""
    state, first_BxV = q.init_state(x_BxL.shape[0])
    state, rest_LxBxV = jax.lax.scan(lambda state, token_B: q.step(state, token_B), state, x_BxL.T)
    stepped_BxL1xV = jnp.concatenate([first_BxV[:, None], rest_LxBxV.transpose(1, 0, 2)], axis=1)
    return stepped_BxL1xV, state, q.log_conditionals(x_BxL)


@pytest.mark.parametrize("positions", POSITIONS)
def test_fused_attention_implementation_matches_einsum(positions):
    """attention="xla" (jax.nn.dot_product_attention, causal) gives the einsum path's logits and
    gradients (float32, 1e-5), so it is still causal, and KV-cache decoding (always einsum) agrees with it."""
    fused = config(positions, attention="xla")
    graphdef, params = setup(config(positions), 4)
    x = tokens()

    def loss(graphdef, params):
        return jax.nn.log_softmax(apply(graphdef, params, x), axis=-1).mean()

    expected, expected_grads = jax.value_and_grad(loss, argnums=1)(graphdef, params)
    got, got_grads = jax.value_and_grad(loss, argnums=1)(graphdef_for(fused), params)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    for g, e in zip(jax.tree.leaves(got_grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(apply(graphdef_for(fused), params, x), apply(graphdef, params, x), atol=ATOL, rtol=RTOL)
    stepped, _, full = decode_and_score(TransformerPredictor(fused, params), tokens(length=CONTEXT))
    np.testing.assert_allclose(stepped[:, :CONTEXT], full, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the error off a GPU")
def test_cudnn_attention_off_a_gpu_is_a_clear_error():
    """A model configured for cuDNN attention raises a ValueError naming the setting when it runs elsewhere."""
    cfg = config(attention="cudnn", dtype="bfloat16")
    with pytest.raises(ValueError, match="attention='cudnn'"):
        apply(*setup(cfg), tokens())


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_attention_matches_einsum_on_a_gpu():
    """attention="cudnn" (bfloat16 activations) gives the einsum path's logits to bfloat16 accuracy."""
    cudnn, einsum = config(attention="cudnn", dtype="bfloat16"), config(dtype="bfloat16")
    graphdef, params = setup(einsum, 5)
    got = np.asarray(apply(graphdef_for(cudnn), params, tokens()), np.float32)
    np.testing.assert_allclose(got, np.asarray(apply(graphdef, params, tokens()), np.float32), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("length", [37, 64])
def test_pallas_attention_matches_dot_product_attention(length):
    """The fused kernel (run by JAX's interpreter, so on any backend) gives jax.nn.dot_product_attention's
    values and gradients (float32, 1e-5) with two heads 4 wide (padded to 16): on a length that is not a
    multiple of the 16-wide tiles (37: padded to 48, three tiles, so queries also attend across tiles),
    and on one 64-wide tile (the benchmark's and most toy models' context). Small, because the
    interpreter runs every program of the kernel's grid one by one."""
    rng = np.random.default_rng(length)
    q, k, v, weights = (jnp.asarray(rng.standard_normal((1, length, 2, 4)), jnp.float32) for _ in range(4))

    def loss(attention, q, k, v):
        out = attention(q, k, v)
        return jnp.sum(out * weights), out

    fused = partial(causal_attention, interpret=True)
    reference = partial(jax.nn.dot_product_attention, is_causal=True)
    (_, got), got_grads = jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True)(fused, q, k, v)
    (_, expected), expected_grads = jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True)(reference, q, k, v)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    for g, e in zip(got_grads, expected_grads, strict=True):
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=RTOL)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the error off a GPU")
def test_pallas_attention_off_a_gpu_is_a_clear_error():
    """A model configured for the fused kernel raises a ValueError naming the setting when it runs elsewhere."""
    with pytest.raises(ValueError, match="attention='pallas'"):
        apply(*setup(config(attention="pallas")), tokens())


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="the fused kernel compiles for NVIDIA GPUs")
def test_pallas_attention_matches_einsum_on_a_gpu():
    """attention="pallas" gives the einsum path's logits and gradients: float32 activations to 1e-3
    (the kernel's products may round through TF32, about 1e-3 relative), bfloat16 to bfloat16 accuracy."""
    for dtype, tolerance in (("float32", 1e-3), ("bfloat16", 0.05)):
        fused, einsum = config(attention="pallas", dtype=dtype), config(dtype=dtype)
        graphdef, params = setup(einsum, 6)
        x = tokens()

        def loss(graphdef, params):
            return jax.nn.log_softmax(apply(graphdef, params, x).astype(jnp.float32), axis=-1).mean()

        expected, expected_grads = jax.value_and_grad(loss, argnums=1)(graphdef, params)
        got, got_grads = jax.value_and_grad(loss, argnums=1)(graphdef_for(fused), params)
        np.testing.assert_allclose(got, expected, atol=tolerance, rtol=tolerance)
        for g, e in zip(jax.tree.leaves(got_grads), jax.tree.leaves(expected_grads), strict=True):
            np.testing.assert_allclose(g, e, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("positions", POSITIONS)
def test_kv_cache_decoding_matches_full_pass(positions):
    """init_state + step over a full-context sequence = log_conditionals (1e-5); past the context -inf."""
    cfg = config(positions)
    q = TransformerPredictor(cfg, setup(cfg, 3)[1])
    stepped, state, full = decode_and_score(q, tokens(length=CONTEXT))
    assert full.shape == (BATCH, CONTEXT, 3) and full.dtype == stepped.dtype == jnp.float32
    np.testing.assert_allclose(stepped[:, :CONTEXT], full, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.log(np.exp(np.asarray(full, np.float64)).sum(axis=-1)), 0.0, atol=ATOL)
    assert np.all(np.isneginf(stepped[:, CONTEXT])) and int(state.position) == CONTEXT + 1


def test_generate_with_cache_equals_recompute():
    """generate via init_state/step gives the same tokens as via log_conditionals (same keys)."""

    cfg = config("rotary")
    q = TransformerPredictor(cfg, setup(cfg, 4)[1])
    key = jax.random.key(5)
    stepped = np.asarray(generate(q, key, 64, CONTEXT))
    np.testing.assert_array_equal(stepped, np.asarray(generate(ConditionalsOnly(q), key, 64, CONTEXT)))
    assert stepped.shape == (64, CONTEXT) and stepped.min() >= 0 and stepped.max() < 3


def test_forward_kl_runs_on_the_predictor():
    """forward_kl(mess3, transformer, n) by enumeration is finite and >= 0 (n = 4 < context)."""
    cfg = config()
    q = TransformerPredictor(cfg, setup(cfg, 6)[1])
    result = forward_kl(mess3(), q, 4)
    assert np.isfinite(result.value) and result.value >= 0 and result.off_support_fraction == 0
    assert np.all(result.per_position >= -1e-6)


def test_predictor_boundary_and_clipping():
    """vocab_size/max_length; ids >= V act as V - 1; too long or negative tokens are ValueErrors."""
    cfg = config()
    q = TransformerPredictor(cfg, setup(cfg, 7)[1])
    assert q.vocab_size == 3 and q.max_length == CONTEXT
    x = np.asarray(tokens(length=CONTEXT))
    big = np.where(x == 2, 9, x)
    np.testing.assert_array_equal(decode_and_score(q, big)[2], decode_and_score(q, x)[2])
    with pytest.raises(ValueError, match="max_length"):
        q.log_conditionals(np.zeros((1, CONTEXT + 1), np.int32))
    with pytest.raises(ValueError, match="negative"):
        q.log_conditionals(-np.ones((1, 2), np.int32))
    state, _ = q.init_state(1)
    with pytest.raises(ValueError, match="negative"):  # it would index the embedding from the end: BOS
        q.step(state, np.array([-1], np.int32))
    with pytest.raises(ValueError, match="batch"):
        q.init_state(0)
    with pytest.raises(ValueError, match="params"):
        TransformerPredictor(config(d_model=8), q.params)
    same = TransformerPredictor.from_model(q.model)
    jax.tree.map(np.testing.assert_array_equal, same.params, q.params)


def test_vmap_over_init_keys_gives_distinct_models_and_one_compilation():
    """vmap(init) over 3 keys stacks 3 distinct float32 models; one jit trace serves all 3 predictors."""
    # No blocks: under vmap, init compiles for ~1.4 s per parameter tensor on a 2-core CPU. The blocks'
    # Linear and LayerNorm initialisers are the same kinds as the unembedding's and the final norm's.
    cfg = config(num_layers=0)
    keys = jax.random.split(jax.random.key(8), 3)
    stacked = jax.jit(jax.vmap(lambda k: init_params(cfg, k)[1]))(keys)
    assert all(leaf.shape[0] == 3 and leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(stacked))
    traces = []

    @jax.jit
    def score(q, x):
        traces.append(1)
        return q.log_conditionals(x)

    members = [TransformerPredictor(cfg, jax.tree.map(lambda leaf, i=i: leaf[i], stacked)) for i in range(3)]
    logits = [np.asarray(score(q, tokens())) for q in members]
    assert len(traces) == 1
    for i in range(3):
        for j in range(i):
            assert not np.allclose(logits[i], logits[j])
            kernels = [members[k].params["unembed"]["kernel"][...] for k in (i, j)]
            assert not np.allclose(*kernels)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(context=2.5), "context"),
        (dict(num_layers=-1), "num_layers"),
        (dict(d_model=10, num_heads=3), "head_dim"),
        (dict(mlp_width=0), "mlp_width"),
        (dict(positions="sinusoidal"), "positions"),
        (dict(positions="rotary", head_dim=3), "head_dim"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps"),
        (dict(param_dtype="int32"), "param_dtype"),
        (dict(myopic=1), "myopic"),
        (dict(attention="flash"), "attention"),
        (dict(attention="xla", myopic=True), "myopic"),
        (dict(attention="cudnn"), "dtype"),
        (dict(attention="pallas", dtype="float64"), "dtype"),
    ],
)
def test_config_validation(overrides, field):
    """Each invalid field raises a ValueError that names it."""
    with pytest.raises(ValueError, match=field):
        config(**overrides)


def test_linear_is_the_plain_affine_map_with_textbook_gradients():
    """transformer.Linear flattens [B, L, I] inputs to one matmul: its values and autodiff gradients are
    x W + b, g W^T, sum_bl x^T g and sum_bl g (written out in NumPy)."""
    rng = np.random.default_rng(0)
    layer = Linear(5, 3, rngs=nnx.Rngs(0), dtype=jnp.float64, param_dtype=jnp.float64)
    graphdef, params = nnx.split(layer)
    kernel, bias = (np.asarray(nnx.to_pure_dict(params)[name]) for name in ("kernel", "bias"))
    x, g = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 3))
    np.testing.assert_allclose(layer(jnp.asarray(x)), np.einsum("bli,io->blo", x, kernel) + bias, rtol=1e-12)
    grads, dx = jax.grad(lambda p, x: jnp.sum(nnx.merge(graphdef, p)(x) * g), argnums=(0, 1))(params, jnp.asarray(x))
    grads = nnx.to_pure_dict(grads)
    np.testing.assert_allclose(dx, np.einsum("blo,io->bli", g, kernel), rtol=1e-12)
    np.testing.assert_allclose(grads["kernel"], np.einsum("bli,blo->io", x, g), rtol=1e-12)
    np.testing.assert_allclose(grads["bias"], g.sum(axis=(0, 1)), rtol=1e-12)


def test_embedding_by_one_hot_product_equals_the_gather():
    """embed_rows' one-hot product (accelerators) gives the gather's rows and table gradient exactly."""
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.standard_normal((5, 4)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 5, (3, 6)), jnp.int32)
    weights = jnp.asarray(rng.standard_normal((3, 6, 4)), jnp.float32)
    for one_hot in (False, True):
        rows = embed_rows(table, ids, one_hot=one_hot)
        np.testing.assert_array_equal(rows, np.asarray(table)[np.asarray(ids)])
        gradient = jax.grad(lambda t, one_hot=one_hot: jnp.sum(embed_rows(t, ids, one_hot=one_hot) * weights))(table)
        expected = np.zeros((5, 4), np.float32)
        np.add.at(expected, np.asarray(ids), np.asarray(weights))
        np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("myopic", [False, True])
def test_attention_score_layouts_agree(myopic):
    """attend with scores [B, H, S, T] (accelerators) = [B, H, T, S] (CPU), in values and in gradients;
    without myopia both equal jax.nn.dot_product_attention."""
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 5, 3, 4)), jnp.float32) for _ in range(3))
    causal = jnp.tril(jnp.ones((5, 5), bool))

    def loss(q, k, v, keys_first):
        out = attend(q, k, v, causal, myopic=myopic, keys_first=keys_first)
        return jnp.sum(out * jnp.arange(out.size, dtype=out.dtype).reshape(out.shape) / out.size), out

    (_, first), grads_first = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, True)
    (_, last), grads_last = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, False)
    np.testing.assert_allclose(first, last, rtol=RTOL, atol=ATOL)
    for a, b in zip(grads_first, grads_last, strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    if not myopic:  # and both are attention as JAX's own implementation computes it
        np.testing.assert_allclose(first, jax.nn.dot_product_attention(q, k, v, is_causal=True), rtol=RTOL, atol=ATOL)
