"""Tests of toymodels/evaluation.py against oracles that share no code with it.

compare_conditionals and summarize are checked against NumPy loops. The Evaluator's held-out
estimates are Monte Carlo estimates (N = 512 sequences) of exact quantities computed by enumerating all
3^8 sequences: its summed per-position KL against theory.divergence.forward_kl (enumeration), and its
Bayes loss per position against the exact conditional entropies H(X_t | X_<t) from process.log_prob.
Those checks allow 5 standard errors (a 5-sigma two-sided miss has probability 6e-7 per check).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training_configs import LENGTH, MODEL, process, train_config
from toymodels.evaluation import EvalConfig, Evaluator, compare_conditionals, divergences, summarize
from toymodels.sharding import make_mesh
from toymodels.training import init_states, unstack
from toymodels.transformer_predictor import TransformerPredictor
from theory.divergence import forward_kl, generation_kl

NUM_SEQUENCES = 512


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


def test_compare_conditionals_matches_numpy_oracle():
    rng = np.random.default_rng(0)
    n, length, v, w = 5, 4, 3, 4  # q has one token more than p
    p = rng.dirichlet(np.ones(v), size=(n, length))
    p[0, 1] = [0.0, 0.4, 0.6]  # an exact zero of p: contributes nothing
    q = rng.dirichlet(np.ones(w), size=(n, length))
    tokens = np.stack([[rng.choice(v, p=p[i, t]) for t in range(length)] for i in range(n)])
    out = compare_conditionals(jnp.asarray(_log(p)), jnp.asarray(_log(q)), jnp.asarray(tokens))
    kl = np.zeros((n, length))
    for i, t in itertools.product(range(n), range(length)):
        kl[i, t] = sum(p[i, t, a] * (np.log(p[i, t, a]) - np.log(q[i, t, a])) for a in range(v) if p[i, t, a] > 0)
    np.testing.assert_allclose(out["kl"], kl, rtol=1e-10, atol=1e-12)
    rows = np.arange(n)[:, None], np.arange(length)[None, :], tokens
    np.testing.assert_allclose(out["model_loss"], -np.log(q[rows]), rtol=1e-12)
    np.testing.assert_allclose(out["bayes_loss"], -np.log(p[rows]), rtol=1e-12)

    same = compare_conditionals(jnp.asarray(_log(p)), jnp.asarray(_log(p)), jnp.asarray(tokens))
    np.testing.assert_array_equal(same["kl"], 0.0)
    q_forbids = q.copy()
    q_forbids[2, 3, :] = [0.0, 0.5, 0.5, 0.0]  # q forbids token 0, which p allows: KL is infinite
    forbidden = compare_conditionals(jnp.asarray(_log(p)), jnp.asarray(_log(q_forbids)), jnp.asarray(tokens))
    assert np.isposinf(forbidden["kl"][2, 3]) and np.isfinite(np.delete(np.asarray(forbidden["kl"]).ravel(), 2 * length + 3)).all()
    # A token p allows with a probability that underflows (log p = -1000 > -inf) is still one q must
    # allow: forbidding it makes the KL infinite too.
    log_p_tail = np.array([[[0.0, -1000.0]]])
    tail = compare_conditionals(jnp.asarray(log_p_tail), jnp.asarray(np.array([[[0.0, -np.inf]]])), jnp.zeros((1, 1), int))
    assert np.isposinf(tail["kl"][0, 0])


def test_summarize_means_ratio_and_stderr():
    kl = np.array([[0.1, 0.2, 0.0], [0.3, 0.3, 0.0]])
    model = np.array([[1.0, 2.0, 0.5], [3.0, 1.0, 0.5]])
    bayes = np.array([[0.5, 1.0, 0.0], [1.5, 0.5, 0.0]])  # position 2: a certain token (Bayes loss 0)
    out = summarize({"kl": jnp.asarray(kl), "model_loss": jnp.asarray(model), "bayes_loss": jnp.asarray(bayes)})
    np.testing.assert_allclose(out["kl_per_position"], [0.2, 0.25, 0.0])
    np.testing.assert_allclose(out["loss_ratio_per_position"][:2], [2.0, 2.0])
    assert np.isnan(out["loss_ratio_per_position"][2])
    np.testing.assert_allclose(out["loss_ratio"], 2.0)  # positions with zero Bayes loss are left out
    per_sequence = kl.mean(axis=1)
    np.testing.assert_allclose(out["kl"], per_sequence.mean())
    np.testing.assert_allclose(out["kl_stderr"], per_sequence.std(ddof=1) / np.sqrt(2))
    np.testing.assert_allclose(out["model_loss"], model.mean())


@pytest.fixture(scope="module")
def evaluated():
    """Four freshly initialised models (the shared slots) evaluated over the 8-device mesh."""
    config = train_config()
    mesh = make_mesh(len(config.slots), config.batch_size)
    params = init_states(MODEL, config, mesh).params
    evaluator = Evaluator(process(), MODEL, EvalConfig(num_sequences=NUM_SEQUENCES), LENGTH, mesh)
    return evaluator, params, evaluator(params)


def test_heldout_kl_estimates_the_exact_forward_kl(evaluated):
    _, params, out = evaluated
    assert out["kl_per_position"].shape == (4, LENGTH) and out["kl"].shape == (4,)
    for i in range(4):
        exact = forward_kl(process(), TransformerPredictor(MODEL, unstack(params, i)), LENGTH)
        estimate, stderr = LENGTH * out["kl"][i], LENGTH * out["kl_stderr"][i]
        assert abs(estimate - exact.value) < 5 * stderr, (i, estimate, exact.value, stderr)
        assert 0 < stderr < 0.2 * exact.value


def test_bayes_loss_is_the_exact_conditional_entropy(evaluated):
    """H(X_t | X_<t) = H(X_<=t) - H(X_<t), with the prefix distributions summed from all 3^L sequences."""
    evaluator, _, out = evaluated
    sequences = jnp.asarray(list(itertools.product(range(3), repeat=LENGTH)), jnp.int32)
    probs = np.exp(np.asarray(process().log_prob(sequences), np.float64)).reshape((3,) * LENGTH)
    entropies = [0.0]
    for t in range(1, LENGTH + 1):
        prefix = probs.sum(axis=tuple(range(t, LENGTH))).ravel()
        entropies.append(float(-np.sum(prefix * _log(prefix), where=prefix > 0)))
    exact = np.diff(entropies)
    losses = -np.take_along_axis(np.asarray(evaluator.log_p), np.asarray(evaluator.tokens)[..., None], axis=-1)[..., 0]
    stderr = losses.std(axis=0, ddof=1) / np.sqrt(NUM_SEQUENCES)
    np.testing.assert_allclose(out["bayes_loss_per_position"][0], losses.mean(axis=0), rtol=1e-6)
    assert np.all(np.abs(losses.mean(axis=0) - exact) < 5 * stderr + 1e-9), (losses.mean(axis=0), exact, stderr)
    assert np.all(out["bayes_loss_per_position"] == out["bayes_loss_per_position"][0])  # same data for every slot


def test_evaluation_is_the_same_for_every_call(evaluated):
    evaluator, params, out = evaluated
    again = evaluator(params)
    for name in out:
        np.testing.assert_array_equal(again[name], out[name])


def test_divergences_are_theory_divergences(evaluated):
    _, params, _ = evaluated
    predictor = TransformerPredictor(MODEL, unstack(params, 1))
    record = divergences(process(), predictor, 4)
    assert record["forward_kl"]["value"] == forward_kl(process(), predictor, 4).value
    assert record["generation_kl"]["value"] == generation_kl(process(), predictor, 4).value
    assert record["forward_kl"]["method"] == "enumeration" and len(record["forward_kl"]["per_position"]) == 4
    assert set(divergences(process(), predictor, 4, generation=False)) == {"forward_kl"}


def test_evaluator_checks_its_arguments():
    mesh = make_mesh(1, 1, jax.devices()[:1])
    with pytest.raises(ValueError, match="context"):
        Evaluator(process(), MODEL, EvalConfig(), MODEL.context + 1, mesh)
    with pytest.raises(ValueError, match="vocab_size"):
        Evaluator(process(), dataclasses.replace(MODEL, vocab_size=2), EvalConfig(), 4, mesh)
