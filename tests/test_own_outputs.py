"""Training on own outputs (C12): the generic loop of toymodels/own_outputs.py and data.DatasetProcess.

With the exactly fittable categorical and Markov maximum-likelihood fits the loop must reproduce C12's
facts: without fresh data a lost token is never regained and the support never grows; with
accumulated data generation 0's support is never lost; one refit has mean ((N - n) q + n p) / N with n
fresh samples (a martingale for n = 0) and a lost token stays lost with probability (1 - p_i)^n. The
exact F and G it records are checked against sums written out with NumPy. A tiny transformer run
(slow) records F and G per generation, with and without fresh data.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels.data import DatasetProcess
from toymodels.own_outputs import (
    CategoricalFitter,
    MarkovFitter,
    OwnOutputsRunConfig,
    TransformerFitter,
    iid_process,
    own_outputs_loop,
)
from toymodels.processes import markov_chain
from toymodels.training import TrainConfig
from script_loader import load_script

VOCAB, GENERATIONS = 4, 5
# Each example runs a whole loop of generations: a quarter of the profile's examples (6 under ci).
LOOPS = settings(max_examples=max(6, settings().max_examples // 4))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "own_outputs.py"


@st.composite
def categoricals(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.dirichlet(np.full(VOCAB, 0.8))


def kl_numpy(p, q) -> float:
    """KL(p || q) for one token, written out: inf when q misses a token p has."""
    total = 0.0
    for pi, qi in zip(p, q):
        if pi > 0:
            total += math.inf if qi == 0 else pi * math.log(pi / qi)
    return total


@LOOPS
@given(categoricals(), st.sampled_from([3, 10]), st.integers(0, 2**32 - 1))
def test_categorical_loop_never_regains_support_and_measures_exact_kls(probs, num_samples, seed):
    """Without fresh data a zero stays zero and the surviving tokens never increase; each generation's
    F and G (length 2: twice the one-token KL, the tokens being i.i.d.) match NumPy's sums, with F = inf
    exactly when a token of p is lost."""
    result = own_outputs_loop(CategoricalFitter(VOCAB), iid_process(probs), jax.random.key(seed),
                              generations=GENERATIONS, num_samples=num_samples, length=2)
    models = np.asarray(result.models)
    alive = models > 0
    assert np.all(alive[1:] <= alive[:-1])
    for record, q in zip(result.records, models):
        assert record["forward_kl"] == pytest.approx(2 * kl_numpy(probs, q), rel=1e-9, abs=1e-12)
        assert record["generation_kl"] == pytest.approx(2 * kl_numpy(q, probs), rel=1e-9, abs=1e-12)
        assert (record["forward_kl"] == math.inf) == bool(np.any(q == 0))
        assert record["dataset_size"] == num_samples


@LOOPS
@given(categoricals(), st.integers(0, 2**32 - 1))
def test_accumulated_data_keep_generation_zero_support(probs, seed):
    """With accumulated data every generation still holds generation 0's real samples, so its support
    contains generation 0's, and the dataset grows by N per generation."""
    result = own_outputs_loop(CategoricalFitter(VOCAB), iid_process(probs), jax.random.key(seed),
                              generations=GENERATIONS, num_samples=3, length=1, accumulate=True, divergence_length=0)
    models = np.asarray(result.models)
    assert np.all(models[1:] >= 0) and np.all((models[1:] > 0) >= (models[0] > 0))
    assert [r["dataset_size"] for r in result.records] == [3 * (k + 1) for k in range(GENERATIONS + 1)]


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_one_refit_has_the_closed_form_mean_and_loss_probability(alpha):
    """From q with token 3 lost, one generation of N = 20 (n = round(alpha N) fresh from p): the mean
    refit is ((N - n) q + n p) / N (q itself for n = 0: the martingale) and token 3 stays lost with
    probability (1 - p_3)^n. 200 independent keys; 5 standard errors per coordinate."""
    p, q = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.5, 0.3, 0.2, 0.0])
    runs, num_samples = 200, 20
    fresh = round(alpha * num_samples)
    fits = np.array([own_outputs_loop(CategoricalFitter(VOCAB), iid_process(p), jax.random.key(seed), generations=1,
                                      num_samples=num_samples, length=1, alpha=alpha, initial=q,
                                      divergence_length=0).models[1] for seed in range(runs)])
    mean = ((num_samples - fresh) * q + fresh * p) / num_samples
    # Var of one frequency: own and fresh draws are independent binomials.
    var = ((num_samples - fresh) * q * (1 - q) + fresh * p * (1 - p)) / num_samples**2
    assert np.all(np.abs(fits.mean(axis=0) - mean) <= 5 * np.sqrt(var / runs) + 1e-12)
    stays = (1 - p[3]) ** fresh
    lost = np.mean(fits[:, 3] == 0)
    assert abs(lost - stays) <= 5 * math.sqrt(stays * (1 - stays) / runs) + 1e-12


@LOOPS
@given(st.integers(0, 2**32 - 1))
def test_markov_loop_keeps_lost_transitions_lost(seed):
    """With unvisited rows keeping their old values, a transition that reaches probability zero stays
    zero in every later generation (support is absorbing), and G stays finite: the fitted chain never
    leaves the support of the true chain."""
    transition = np.array([[0.8, 0.15, 0.05], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]])
    result = own_outputs_loop(MarkovFitter(3), markov_chain(transition), jax.random.key(seed), generations=4,
                              num_samples=6, length=3)
    kernels = np.array([model[1] for model in result.models])
    assert np.all((kernels[1:] > 0) <= (kernels[:-1] > 0))
    assert all(math.isfinite(r["generation_kl"]) for r in result.records)


@pytest.mark.parametrize("alpha", [1.0, 0.99])
def test_all_fresh_refits_draw_nothing_from_the_model(alpha):
    """When round(alpha N) = N (alpha = 1, or 0.99 with N = 20), every refit is on N fresh sequences
    and the model is asked for no samples at all: its samplers reject a count of zero, which made this
    endpoint of C12's alpha range crash for the Markov and transformer fitters."""
    transition = np.array([[0.8, 0.15, 0.05], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]])
    result = own_outputs_loop(MarkovFitter(3), markov_chain(transition), jax.random.key(0), generations=2,
                              num_samples=20, length=3, alpha=alpha)
    assert [r["dataset_size"] for r in result.records] == [20, 20, 20]
    assert all(math.isfinite(r["generation_kl"]) for r in result.records)


def test_loop_is_reproducible_from_its_key():
    """The same key gives the same models and records; another key gives another trajectory."""
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    run = lambda seed: own_outputs_loop(CategoricalFitter(VOCAB), iid_process(probs), jax.random.key(seed),  # noqa: E731
                                        generations=4, num_samples=8, length=1, alpha=0.25)
    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(np.asarray(first.models), np.asarray(again.models))
    assert first.records == again.records
    assert not np.array_equal(np.asarray(first.models), np.asarray(other.models))


# --------------------------------------------------------------------------------------------------
# DatasetProcess (data.py): the fixed dataset as a process
# --------------------------------------------------------------------------------------------------


@given(st.integers(0, 2**32 - 1))
def test_dataset_process_is_the_empirical_distribution(seed):
    """log_prob of every sequence (and of every prefix, through the conditionals) is the log of the
    fraction of rows that start with it, counted with NumPy; impossible ids give -inf, never NaN."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 2, size=(5, 3))  # five rows of binary tokens, often repeated
    process = DatasetProcess(data, vocab_size=2)
    seqs = np.array(list(itertools.product(range(3), repeat=3)))  # id 2 is impossible
    log_cond = np.asarray(process.log_conditionals(seqs))
    with np.errstate(divide="ignore"):  # log 0 = -inf for prefixes no row has
        for length in (1, 2, 3):
            expected = np.log([np.mean(np.all(data[:, :length] == s[:length], axis=1)) for s in seqs])
            picked = np.take_along_axis(log_cond[:, :length], np.minimum(seqs[:, :length], 1)[..., None], -1)[..., 0]
            got = np.where(np.any(seqs[:, :length] == 2, axis=1), -np.inf, picked.sum(axis=1))
            np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(np.asarray(process.log_prob(seqs)), expected, atol=1e-12)
    assert not np.any(np.isnan(log_cond))


def test_dataset_process_samples_rows():
    """Samples are rows of the dataset (cut to the requested length), drawn with replacement."""
    data = np.array([[0, 1, 2], [2, 2, 0]])
    process = DatasetProcess(data, vocab_size=3)
    draws = np.asarray(process.sample(jax.random.key(0), 64, 2))
    assert {tuple(row) for row in draws} == {(0, 1), (2, 2)}


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: DatasetProcess(np.array([[0, 3]]), vocab_size=3), "vocab_size"),
        (lambda: DatasetProcess(np.array([0, 1]), vocab_size=3), "tokens"),
        (lambda: DatasetProcess(np.array([[0, 1]]), vocab_size=3).sample(jax.random.key(0), 2, 3), "length"),
        (lambda: own_outputs_loop(CategoricalFitter(2), iid_process([0.5, 0.5]), jax.random.key(0), generations=1,
                                  num_samples=4, length=1, alpha=2.0), "alpha"),
        (lambda: own_outputs_loop(CategoricalFitter(2), iid_process([0.5, 0.5]), jax.random.key(0), generations=1,
                                  num_samples=4, length=1, divergence_length=2), "divergence_length"),
        # A rate sweep the loop would silently ignore (it trains one model per generation).
        (lambda: OwnOutputsRunConfig(out="x", train=TrainConfig(learning_rates=(0.1,))), "learning_rates"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_script_with_the_categorical_fitter(tmp_path):
    """scripts/own_outputs.py end to end with the exact categorical fit: one record per generation and
    alpha, run metadata, and lost support (F = inf) never regained without fresh data."""
    module = load_script(SCRIPT, "own_outputs_script")
    kwargs = '{"transition": [[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1]], "initial": [0.6, 0.3, 0.1]}'
    record = module.main(["--out", str(tmp_path), "--fitter", "categorical", "--process-kwargs", kwargs,
                          "--length", "1", "--num-samples", "5", "--generations", "5", "--alphas", "0", "0.4"])
    assert [loop["alpha"] for loop in record["loops"]] == [0.0, 0.4]
    assert (tmp_path / "own_outputs.json").exists() and record["metadata"]["versions"]["jax"]
    forward = [r["forward_kl"] for r in record["loops"][0]["records"]]
    assert len(forward) == 6
    first_lost = next((k for k, f in enumerate(forward) if f == math.inf), len(forward))
    assert all(f == math.inf for f in forward[first_lost:])


# --------------------------------------------------------------------------------------------------
# Transformers (slow)
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_transformer_own_outputs_with_and_without_fresh_data():
    """A 1-layer transformer retrained from scratch on its own generations of a 3-token Markov chain
    (N = 256 sequences of length 5, 150 steps per fit), 3 refits, alpha = 0 and 0.5. Every generation
    records finite exact F and G (a softmax never loses support). With half fresh data every
    generation's F stays within log(1 / alpha) of generation 0's: the bound C12 proves for the
    distribution-level mixture alpha P + (1 - alpha) Q, which fresh samples approximate."""
    from toymodels.evaluation import EvalConfig
    from toymodels.optimizer import OptimizerConfig
    from toymodels.training import TrainConfig
    from toymodels.transformer import TransformerConfig

    transition = np.array([[0.8, 0.15, 0.05], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]])
    process, length = markov_chain(transition), 5
    model = TransformerConfig(vocab_size=3, context=length, num_layers=1, d_model=16, num_heads=2, mlp_width=32)
    train_config = TrainConfig(steps=150, batch_size=32, sequence_length=length, num_devices=1, log_every=150,
                               optimizer=OptimizerConfig(learning_rate=1e-2, warmup_fraction=0.0),
                               evaluation=EvalConfig(final=False))
    fitter = TransformerFitter(model, train_config)
    curves = {}
    for alpha in (0.0, 0.5):
        result = own_outputs_loop(fitter, process, jax.random.key(0), generations=3, num_samples=256,
                                  length=length, alpha=alpha)
        curves[alpha] = [(r["forward_kl"], r["generation_kl"]) for r in result.records]
        print(f"alpha={alpha}: (F, G) per generation", curves[alpha])
        assert all(math.isfinite(f) and math.isfinite(g) for f, g in curves[alpha])
    start = curves[0.5][0][0]
    assert all(f <= start + math.log(1 / 0.5) for f, _ in curves[0.5])
