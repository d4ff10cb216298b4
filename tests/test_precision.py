"""Every matrix product on the exact side asks for full precision.

On a GPU a default-precision float32 product rounds its operands to TF32 (relative error ~1e-3), which
broke exact sums there (a Mess3 sequence table summed to 0.9986 on an H100). A CPU computes the same
numbers at any precision, so these tests read the traced programs instead: every dot_general in the
exact computations must carry Precision.HIGHEST. A trained transformer read as a predictor (conditionals,
residuals, KV-cache steps, evaluation against Bayes, the RL surrogate beside its rollouts) is on the exact
side too; its training step is deliberately left at the default precision.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from tests.strategies import random_hmm as random_hmm_arrays
from toymodels.data import DatasetProcess
from toymodels.evaluation import model_log_conditionals
from toymodels.probes import evaluate_probe, fit_probe
from toymodels.processes import HMMProcess
from toymodels.processes.authors import map_author_predictor, markov_authors
from toymodels.rl import TokenCount, surrogate
from toymodels import transformer
from toymodels.training import loss_fn
from toymodels.transformer import TransformerConfig, init_params
from toymodels.transformer_predictor import TransformerPredictor

HIGHEST = jax.lax.Precision.HIGHEST


@pytest.fixture(autouse=True)
def default_precision_unset():
    """Trace with no global precision setting (some libraries set one when imported, e.g. dynamax), so a
    product that does not ask for full precision itself shows up as such."""
    with jax.default_matmul_precision(None):
        yield


def dot_precisions(jaxpr) -> list:
    """The precision parameter of every dot_general in a closed jaxpr, nested programs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found.extend(dot_precisions(sub))
    return found


def assert_all_exact(function, *args):
    precisions = dot_precisions(jax.make_jaxpr(function)(*args).jaxpr)
    assert precisions, "no matrix product was traced: the test would pass vacuously"
    for precision in precisions:
        assert precision is not None and all(p == HIGHEST for p in precision), precision


TOKENS = jnp.array([[0, 1, 2, 1, 0], [2, 2, 0, 1, 1]])


@pytest.mark.parametrize("style", ["dense", "emit_then_move", "move_then_emit"])
def test_hmm_process_products_are_exact(style):
    transitions, initial = random_hmm_arrays(np.random.default_rng(0), 3, 4, style)
    process = HMMProcess(transitions, initial)
    for method in (process.log_prob, process.log_conditionals, process.belief_states, process.posterior):
        assert_all_exact(method, TOKENS)
    state, _ = process.init_state(2)
    assert_all_exact(process.step, state, TOKENS[:, 0])


def test_map_author_predictor_products_are_exact():
    predictor = map_author_predictor(markov_authors(num_authors=2, vocab_size=3, closeness=0.5, seed=0))
    assert_all_exact(predictor.log_conditionals, TOKENS)
    state, _ = predictor.init_state(2)
    assert_all_exact(predictor.step, state, TOKENS[:, 0])


def test_empirical_conditionals_are_exact():
    process = DatasetProcess(TOKENS, vocab_size=3)
    assert_all_exact(process.log_conditionals, TOKENS)


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_probe_fit_and_score_are_exact(ridge):
    features = jax.random.normal(jax.random.key(1), (20, 3))
    targets = features @ jnp.ones((3, 2))
    # The public functions validate concrete arrays, so they are traced with the data as constants; the
    # jitted cores inside are traced with the data as their arguments.
    assert_all_exact(lambda: fit_probe(features, targets, ridge=ridge))
    probe = fit_probe(features, targets, ridge=ridge)
    assert_all_exact(lambda: evaluate_probe(probe, features, targets))


MODEL = TransformerConfig(vocab_size=3, context=5, num_layers=1, d_model=8, num_heads=2, mlp_width=16)


def test_trained_model_read_as_predictor_is_exact():
    predictor = TransformerPredictor(MODEL, init_params(MODEL, jax.random.key(0))[1])
    assert_all_exact(predictor.log_conditionals, TOKENS)
    assert_all_exact(predictor.outputs, TOKENS)
    state, _ = predictor.init_state(2)
    assert_all_exact(lambda: predictor.init_state(2))
    assert_all_exact(predictor.step, state, TOKENS[:, 0])


def test_evaluation_and_rl_surrogate_are_exact():
    graphdef, params = init_params(MODEL, jax.random.key(0))
    assert_all_exact(lambda p: model_log_conditionals(graphdef, p, TOKENS), params)
    # The surrogate's gradient must be that of the policy the rollouts came from (read exactly), so the
    # backward pass is checked too.
    loss = lambda p: surrogate(p, params, TOKENS, 0.1, graphdef=graphdef, reward=TokenCount(1),  # noqa: E731
                               baseline="mean")[0]
    assert_all_exact(jax.value_and_grad(loss), params)


def test_training_step_keeps_the_default_precision(monkeypatch):
    # The embedding lookup is a gather here; accelerators run it as a one-hot product at full precision
    # (a lookup must be exact; toymodels.transformer.embed_rows), which is not one of the model's products.
    monkeypatch.setattr(transformer, "ONE_HOT_MAX_ROWS", 0)
    graphdef, params = init_params(MODEL, jax.random.key(0))
    precisions = dot_precisions(jax.make_jaxpr(jax.grad(loss_fn))(params, graphdef, TOKENS).jaxpr)
    assert precisions and all(precision is None for precision in precisions), precisions
