"""The CPU kernel behind the transformer's full-pass attention (toymodels/native/causal_attention.cc).

Its values are checked against causal softmax attention written out in float64 NumPy, and its
gradients against JAX's autodiff of the einsum attention in float64 (x64 mode is on in tests): both
independent of the kernel. Then that the transformer runs it on the CPU and gives the einsum path's
logits and gradients, and what it must still support inside JAX (vmap, empty batches, clear errors).
"""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from transformer_params import random_model

from toymodels.native import build
from toymodels.native import causal_attention as native
from toymodels.transformer import TransformerConfig, _causal_attend, apply, graphdef_for

HAVE_COMPILER = shutil.which(build.compiler().split()[0]) is not None
pytestmark = pytest.mark.skipif(not (HAVE_COMPILER and build.enabled()),
                                reason="no C++ compiler (or TOYMODELS_NATIVE=0): the einsum attention runs")
# float32 kernel against float64 references: products of O(1) numbers over K <= 40 terms.
RTOL, ATOL = 1e-4, 2e-5


def reference_attention(qkv: np.ndarray, rows=None) -> np.ndarray:
    """o[..., t, h] = sum_{j <= t} softmax_j(q_t . k_j / sqrt(K)) v_j, in float64, one row at a time
    (rows t in `rows` only, if given, in that order)."""
    qkv = np.asarray(qkv, np.float64)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]  # [..., L, H, K]
    rows = range(q.shape[-3]) if rows is None else rows
    out = np.zeros(q.shape[:-3] + (len(rows),) + q.shape[-2:])
    for i, t in enumerate(rows):
        scores = np.einsum("...hk,...jhk->...hj", q[..., t, :, :], k[..., : t + 1, :, :]) / np.sqrt(q.shape[-1])
        weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
        weights /= weights.sum(axis=-1, keepdims=True)
        out[..., i, :, :] = np.einsum("...hj,...jhk->...hk", weights, v[..., : t + 1, :, :])
    return out


@jax.jit
def _einsum_vjp(qkv_BxLx3xHxK, cotangent_BxLxHxK):
    return jax.vjp(_causal_attend, qkv_BxLx3xHxK)[1](cotangent_BxLxHxK)[0]


def einsum_vjp(qkv, cotangent):
    """Gradient of <attention(qkv), cotangent> by JAX's autodiff of the einsum attention, in float64."""
    flat = jnp.asarray(qkv, jnp.float64).reshape((-1,) + qkv.shape[-4:])
    return np.asarray(_einsum_vjp(flat, jnp.asarray(cotangent, jnp.float64).reshape((-1,) + cotangent.shape[-3:])
                                  )).reshape(qkv.shape)


@jax.jit
def _kernel_vjp(qkv, cotangent):
    return jax.vjp(native.causal_attention, qkv)[1](cotangent)[0]


def kernel_vjp(qkv, cotangent):
    return np.asarray(_kernel_vjp(qkv, cotangent))


def draw(shape, scale=1.0, seed=0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)



@given(batch=st.integers(1, 2), length=st.sampled_from([1, 2, 7, 8, 9, 31, 32, 33, 64, 70]), heads=st.integers(1, 3),
       head_dim=st.sampled_from([1, 3, 8, 16, 20, 40]), scale=st.sampled_from([0.1, 1.0, 4.0]),
       seed=st.integers(0, 2**16))
def test_kernel_matches_float64_attention_and_its_gradient(batch, length, heads, head_dim, scale, seed):
    """Any length (partial vectors and groups), head count and head width (one or two vectors at a
    time, and remainders), with scores small and large."""
    qkv = draw((batch, length, 3, heads, head_dim), scale, seed)
    cotangent = draw((batch, length, heads, head_dim), 1.0, seed + 1)
    np.testing.assert_allclose(native.causal_attention(qkv), reference_attention(qkv), rtol=RTOL, atol=ATOL)
    gradient = einsum_vjp(qkv, cotangent)
    np.testing.assert_allclose(kernel_vjp(qkv, cotangent), gradient, rtol=RTOL, atol=ATOL * np.abs(gradient).max())


def test_one_position_returns_its_value_and_no_gradient_to_query_or_key():
    qkv = draw((2, 1, 3, 2, 5))
    np.testing.assert_array_equal(native.causal_attention(qkv), qkv[:, :, 2])
    gradient = kernel_vjp(qkv, jnp.ones((2, 1, 2, 5), jnp.float32))
    np.testing.assert_array_equal(gradient[:, :, :2], 0.0)
    np.testing.assert_array_equal(gradient[:, :, 2], 1.0)


def test_scores_far_apart_give_exact_zeros_not_nan():
    """Keys whose scores trail the best by more than float32's exp range (87) get weight exactly 0: with
    one key far ahead of every other, each row returns that key's value, and gradients stay finite."""
    length, head_dim = 12, 4
    qkv = np.zeros((1, length, 3, 1, head_dim), np.float32)
    qkv[0, :, 0, 0, 0] = 100.0  # every query along axis 0
    qkv[0, :, 1, 0, 0] = np.linspace(0.0, 30.0, length)  # later keys score 100 * 30 / 11 / 2 higher per step
    qkv[0, :, 2, 0, :] = np.arange(length)[:, None]  # value j is j
    out = np.asarray(native.causal_attention(jnp.asarray(qkv)))
    np.testing.assert_array_equal(out[0, :, 0, :], np.broadcast_to(np.arange(length)[:, None], (length, head_dim)))
    gradient = kernel_vjp(jnp.asarray(qkv), jnp.ones((1, length, 1, head_dim), jnp.float32))
    assert np.isfinite(gradient).all()


def test_long_sequences_have_no_nan_and_match():
    """10^4 positions forward, checked on a subset of rows against float64; 1024 backward."""
    qkv = draw((1, 10_000, 3, 1, 8), 2.0, 7)
    out = np.asarray(native.causal_attention(qkv))
    assert np.isfinite(out).all()
    rows = [0, 1, 31, 32, 33, 1000, 9999]
    np.testing.assert_allclose(out[:, rows], reference_attention(qkv, rows), rtol=RTOL, atol=ATOL)
    qkv, cotangent = draw((1, 1024, 3, 1, 8), 2.0, 8), draw((1, 1024, 1, 8), 1.0, 9)
    gradient = einsum_vjp(qkv, cotangent)
    np.testing.assert_allclose(kernel_vjp(qkv, cotangent), gradient, rtol=RTOL, atol=ATOL * np.abs(gradient).max())


def test_vmap_and_leading_dimensions_equal_one_call_per_entry():
    qkv = draw((2, 3, 9, 3, 2, 8), 1.0, 3)
    batched = jax.vmap(native.causal_attention)(qkv)
    looped = np.stack([np.asarray(native.causal_attention(x)) for x in qkv])
    np.testing.assert_array_equal(batched, looped)
    np.testing.assert_array_equal(native.causal_attention(qkv), looped)  # leading dims folded by the kernel


@pytest.mark.parametrize("shape", [(0, 5, 3, 2, 4), (2, 0, 3, 2, 4), (2, 5, 3, 0, 4)])
def test_empty_operands(shape):
    qkv = jnp.zeros(shape, jnp.float32)
    out = native.causal_attention(qkv)
    assert out.shape == shape[:2] + shape[3:]
    assert kernel_vjp(qkv, jnp.zeros(out.shape, jnp.float32)).shape == shape


def test_bad_operands_are_clear_errors():
    with pytest.raises(ValueError, match="float32"):
        native.causal_attention(jnp.zeros((1, 4, 3, 1, 2), jnp.float64))
    with pytest.raises(ValueError, match=r"\[\.\.\., L, 3, H, K\]"):
        native.causal_attention(jnp.zeros((1, 4, 2, 1, 2), jnp.float32))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_transformer_runs_the_kernel_and_matches_the_einsum_path(positions, monkeypatch):
    """On the CPU the full pass lowers to the kernel, and its logits and parameter gradients equal the
    einsum attention's (what runs without the kernel) to float32 rounding."""
    config = TransformerConfig(vocab_size=5, context=20, num_layers=2, d_model=16, num_heads=2, mlp_width=32,
                               positions=positions)
    graphdef, params = random_model(config)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 5, (3, 20)), jnp.int32)

    def loss_and_gradients():  # a new function each time: jit must trace it anew
        def loss(params):
            return jax.nn.log_softmax(apply(graphdef, params, tokens), axis=-1).mean()

        return jax.jit(jax.value_and_grad(loss)).lower(params)

    lowered = loss_and_gradients()
    assert "toymodels_causal_attention_f32" in lowered.as_text()
    assert "toymodels_causal_attention_backward_f32" in lowered.as_text()
    got, got_grads = lowered.compile()(params)
    monkeypatch.setattr(native, "available", lambda dtype: False)
    lowered = loss_and_gradients()
    assert "toymodels_causal_attention" not in lowered.as_text()
    expected, expected_grads = lowered.compile()(params)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for g, e in zip(jax.tree.leaves(got_grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def test_myopic_and_other_dtypes_keep_the_einsum_path():
    for fields in (dict(myopic=True), dict(dtype="float64", param_dtype="float64")):
        config = TransformerConfig(vocab_size=3, context=6, num_layers=1, d_model=8, num_heads=2, **fields)
        params = random_model(config)[1]
        text = jax.jit(lambda p: apply(graphdef_for(config), p, jnp.zeros((1, 6), jnp.int32))).lower(params).as_text()
        assert "toymodels_causal_attention" not in text
