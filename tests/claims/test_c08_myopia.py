"""C8: full gradients let a transformer compute early what only later tokens need; myopic ones do not.

The experiment compares the same transformer trained with ordinary and with myopic gradients. These
properties pin down what it relies on. The myopic transformer computes the same function as the normal
one, and the loss at position t sends exactly zero gradient into the keys and values (hence the
residual stream) of every earlier position, while the normal model sends a nonzero one. On the
pre-caching process, information older than the last w < d tokens is worth log V nats at every answer
and nothing at any input; on a Markov chain, nothing older than the last token is worth anything.
Exact entropies are checked against brute-force path enumeration and against the closed form.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st
from strategies import embed_hmm, hmms

from theory.claims.c08_myopia import early_information, precaching_early_information, process_early_information
from theory.claims.enumeration import sequence_table
from toymodels.processes import HMMProcess, markov_chain, markov_control, precaching
from toymodels.transformer import TransformerConfig, attend, graphdef_for, param_shapes

SEEDS = st.integers(0, 2**32 - 1)

# --------------------------------------------------------------------------------------------------
# The transformer's myopic mode
# --------------------------------------------------------------------------------------------------

# Two small architectures (each is a compilation, so the list is short); float64 so that "the same
# forward values" can be checked to 1e-12 and "zero gradient" means exactly zero.
ARCHITECTURES = (
    dict(num_layers=1, d_model=8, num_heads=1, positions="learned"),
    dict(num_layers=2, d_model=8, num_heads=2, positions="rotary"),
)
LENGTH, BATCH, VOCAB = 6, 2, 3


def transformer_config(index: int, myopic: bool) -> TransformerConfig:
    return TransformerConfig(vocab_size=VOCAB, context=LENGTH, mlp_width=16, dtype="float64",
                             param_dtype="float64", myopic=myopic, **ARCHITECTURES[index])


def random_params(config: TransformerConfig, seed: int):
    """Parameters of the right shapes drawn with numpy (nonzero biases and LayerNorm offsets too)."""
    rng = np.random.default_rng(seed)

    def draw(path, shape_dtype):
        name, shape = jax.tree_util.keystr(path), shape_dtype.shape
        if "scale" in name:
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        elif "kernel" in name:
            values = rng.standard_normal(shape) / np.sqrt(shape[0])
        else:
            values = 0.3 * rng.standard_normal(shape)
        return jnp.asarray(values, shape_dtype.dtype)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(config))


@partial(jax.jit, static_argnums=0)
def loss_gradient_by_layer(graphdef, params, tokens_BxL, t):
    """(logits [B, L, V], G [N+1, L]): G[n, s] = sum over batch and width of |d loss_t / d h_n[s]|, where
    loss_t is the cross-entropy of x_t and h_n the residual stream entering block n (n = N: entering the
    final LayerNorm). A perturbation added to h_n at position s moves that position's keys and values
    (and its query, which position t never reads), so G[n, s] for s < t is the gradient that reaches the
    earlier positions' computation."""
    model = nnx.merge(graphdef, params)
    h_BxLxD = model.embed(tokens_BxL)
    num_layers = len(model.blocks)

    def loss_at_t(deltas_NxBxLxD):
        h = h_BxLxD
        for n, block in enumerate(model.blocks):
            h = block(h + deltas_NxBxLxD[n])
        logits = model.unembed(model.ln_final(h + deltas_NxBxLxD[num_layers]))
        log_q_BxV = jax.nn.log_softmax(logits[:, t], axis=-1)
        return -jnp.take_along_axis(log_q_BxV, tokens_BxL[:, t, None], axis=-1).sum(), logits

    zeros = jnp.zeros((num_layers + 1,) + h_BxLxD.shape, h_BxLxD.dtype)
    gradient, logits = jax.grad(loss_at_t, has_aux=True)(zeros)
    return logits, jnp.abs(gradient).sum(axis=(1, 3))


@given(st.sampled_from(range(len(ARCHITECTURES))), SEEDS, st.integers(0, LENGTH - 1))
def test_myopic_transformer_sends_no_gradient_from_t_into_earlier_positions(architecture, seed, t):
    """Myopic and normal models give the same logits; the loss at t reaches the residual stream of every
    earlier position in every layer that feeds an attention under normal gradients, and never under
    myopic ones (exactly zero); both reach position t itself and neither reaches a later position."""
    normal_config = transformer_config(architecture, myopic=False)
    params = random_params(normal_config, seed)
    tokens = jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (BATCH, LENGTH)), jnp.int32)
    normal_logits, normal = map(np.asarray, loss_gradient_by_layer(graphdef_for(normal_config), params, tokens, t))
    myopic_graphdef = graphdef_for(transformer_config(architecture, myopic=True))
    myopic_logits, myopic = map(np.asarray, loss_gradient_by_layer(myopic_graphdef, params, tokens, t))

    np.testing.assert_allclose(myopic_logits, normal_logits, rtol=0, atol=1e-12)
    before, after = np.arange(LENGTH) < t, np.arange(LENGTH) > t
    num_layers = normal_config.num_layers
    assert np.all(myopic[:, before] == 0.0), myopic
    assert np.all(normal[:num_layers, before] > 0), normal
    for table in (normal, myopic):
        assert np.all(table[:, after] == 0.0) and np.all(table[:, t] > 0), table


@partial(jax.jit, static_argnames="myopic")
def attention_read_out(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, probe_BxHxK, t, myopic: bool):
    """(value, (dq, dk, dv)) of sum(attend(q, k, v, causal)[:, t] * probe): a random linear read-out of
    the attention output at query t, and its gradients."""
    length = q_BxTxHxK.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))

    def read_out(q, k, v):
        return jnp.sum(attend(q, k, v, causal, myopic=myopic)[:, t] * probe_BxHxK)

    return jax.value_and_grad(read_out, argnums=(0, 1, 2))(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK)


@given(st.sampled_from([(2, 4, 1, 3), (1, 5, 2, 2)]), SEEDS, st.data())
def test_myopic_attention_stops_exactly_the_earlier_keys_and_values(shape, seed, data):
    """For one query t of causal attention (`attend`), myopic mode returns the same output, the same
    gradient into the query and into k_t, v_t, and zero gradient into k_s, v_s for s < t, which the
    normal mode gives a nonzero gradient: myopia removes those paths and nothing else."""
    batch, length, heads, width = shape
    t = data.draw(st.integers(0, length - 1), label="t")
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((batch, length, heads, width))) for _ in range(3))
    probe = jnp.asarray(rng.standard_normal((batch, heads, width)))
    normal_value, (dq, dk, dv) = attention_read_out(q, k, v, probe, t, myopic=False)
    myopic_value, (mq, mk, mv) = attention_read_out(q, k, v, probe, t, myopic=True)
    assert abs(float(myopic_value) - float(normal_value)) <= 1e-12 * (1 + abs(float(normal_value)))
    np.testing.assert_allclose(mq, dq, rtol=0, atol=1e-12)
    for normal_grad, myopic_grad in ((np.asarray(dk), np.asarray(mk)), (np.asarray(dv), np.asarray(mv))):
        np.testing.assert_allclose(myopic_grad[:, t], normal_grad[:, t], rtol=0, atol=1e-12)
        assert np.all(myopic_grad[:, :t] == 0.0) and np.all(myopic_grad[:, t + 1 :] == 0.0)
        assert np.all(np.abs(normal_grad[:, :t]).sum(axis=(0, 2, 3)) > 0)


# --------------------------------------------------------------------------------------------------
# What early information is worth, exactly
# --------------------------------------------------------------------------------------------------


def early_information_oracle(probs: np.ndarray, vocab: int, length: int, window: int) -> np.ndarray:
    """early_t(w) as E[KL(p(. | x_<t) || p(. | x_{t-w..t-1}))], with every probability summed from the
    enumerated sequences into dictionaries (a different formula from the library's entropy differences)."""
    prefix, local, context = defaultdict(float), defaultdict(float), defaultdict(float)
    for x, p in zip(map(tuple, bf.all_sequences(vocab, length).tolist()), probs):
        for t in range(length + 1):
            prefix[x[:t]] += p
        for t in range(length):
            start = max(0, t - window)
            local[t, x[start : t + 1]] += p
            context[t, x[start:t]] += p
    out = np.zeros(length)
    for y, joint in prefix.items():
        t = len(y) - 1
        if t < 0 or joint == 0:
            continue
        start = max(0, t - window)
        bayes = joint / prefix[y[:t]]
        windowed = local[t, y[start:]] / context[t, y[start:t]]
        out[t] += joint * np.log(bayes / windowed)
    return out


@given(hmms(max_vocab=3, max_states=3, min_vocab=2), st.integers(0, 3))
def test_early_information_matches_path_enumeration(hmm, window):
    """On random HMMs the library's early-information gaps (entropy differences of the enumerated table)
    equal the expected KL from the Bayes conditional to the best last-w-tokens conditional, computed
    from probabilities summed over every hidden path; and the gap is never negative."""
    transitions, initial = embed_hmm(*hmm)  # one fixed shape: one compilation for every example
    length, vocab = 4, transitions.shape[0]
    table = sequence_table(HMMProcess(transitions, initial), length)
    reference = bf.hmm_sequence_probs(transitions, initial, bf.all_sequences(vocab, length))
    np.testing.assert_allclose(table.reshape(-1), reference, rtol=0, atol=1e-12)
    gap = early_information(table, window)
    np.testing.assert_allclose(gap, early_information_oracle(reference, vocab, length, window), rtol=0, atol=1e-9)
    assert np.all(gap >= 0)


# (V, d) pairs; L = 2(d + 1) covers two blocks. Each is a compilation, so the list is short.
PRECACHING_SHAPES = ((2, 1), (3, 2))


@given(st.sampled_from(PRECACHING_SHAPES), st.sampled_from(("sum", "permutation")), st.integers(0, 5),
       st.integers(0, 4))
def test_precaching_late_answers_need_early_tokens(shape, operation, seed, window):
    """On precaching(V, d), tokens older than the last w tokens are worth exactly log V nats at every
    answer when w < d (all of the answer's uncertainty) and 0 when w >= d; at inputs they are worth
    nothing for any w >= 0, so no loss at an input position rewards pre-computing the fold there."""
    vocab, delay = shape
    length = 2 * (delay + 1)
    gap = process_early_information(precaching(vocab, delay, operation, seed), length, window)
    answers = np.arange(length) % (delay + 1) == delay
    expected = np.where(answers & (window < delay), np.log(vocab), 0.0)
    np.testing.assert_allclose(gap, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(precaching_early_information(vocab, delay, length, window), expected, rtol=0, atol=0)


@st.composite
def markov_chains(draw):
    """A random first-order kernel [V, V] (rows possibly sparse) and initial distribution [V]."""
    vocab = draw(st.sampled_from((2, 3)))
    rng = np.random.default_rng(draw(SEEDS))
    kernel = rng.dirichlet(np.full(vocab, 0.7), size=vocab)
    if draw(st.booleans()):
        kernel = kernel * (rng.random((vocab, vocab)) < 0.6)
        kernel[np.arange(vocab), rng.integers(vocab, size=vocab)] += 0.1
        kernel /= kernel.sum(axis=1, keepdims=True)
    return kernel, rng.dirichlet(np.ones(vocab))


@given(markov_chains(), st.integers(1, 4))
def test_markov_chain_has_nothing_to_precompute(chain, window):
    """On a first-order Markov chain, information older than the last w >= 1 tokens is worth exactly 0 at
    every position; for the pre-caching control, also with its matched entropy rate."""
    kernel, initial = chain
    length = 5
    gap = process_early_information(markov_chain(kernel, initial), length, window)
    np.testing.assert_allclose(gap, 0.0, rtol=0, atol=1e-9)
    vocab = kernel.shape[0]
    control = process_early_information(markov_control(vocab, 2), length, window)
    np.testing.assert_allclose(control, 0.0, rtol=0, atol=1e-9)
