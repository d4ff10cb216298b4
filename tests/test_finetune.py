"""Supervised fine-tuning (C9): training.train's `initial_params` hook and toymodels/finetune.py.

Fine-tuning data drawn from a persona subset in proportion to the prior are the stage with the
restricted prior: checked against a brute-force sum over the subset's single-persona stages
(tests/brute_force_personas.py). The hook is checked against one train_step taken by hand; the exact
KL that finetune records at step 0 against a NumPy sum over every sequence. The slow test fine-tunes a
trained transformer through both scripts and checks it approaches the restricted-prior mixture.
"""

from __future__ import annotations

import itertools
import json
import math
from functools import partial
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from brute_force_personas import speaker_probs
from toymodels.data import draw_batch
from toymodels.evaluation import EvalConfig
from toymodels.finetune import finetune, kl_curves, persona_prior, restricted_kwargs, restricted_process
from toymodels.optimizer import OptimizerConfig, make_optimizer
from toymodels.processes import make_process
from toymodels.training import TrainConfig, TrainState, train, train_step, unstack
from toymodels.transformer import TransformerConfig, graphdef_for, init_params
from toymodels.transformer_predictor import TransformerPredictor
from script_loader import load_script

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
LENGTH, VOCAB, TURN = 4, 3, 2
MODEL = TransformerConfig(vocab_size=VOCAB, context=LENGTH, num_layers=1, d_model=8, num_heads=2, mlp_width=16)
CONFIG = TrainConfig(steps=10, batch_size=16, seeds=(0, 1), sequence_length=LENGTH, num_devices=1, log_every=5,
                     optimizer=OptimizerConfig(learning_rate=1e-2, warmup_fraction=0.0),
                     evaluation=EvalConfig(final=False))


def stage_kwargs(seed: int, num_personas: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"personas": rng.dirichlet(np.ones(VOCAB), size=(num_personas, VOCAB)).tolist(),
            "prior": rng.dirichlet(np.ones(num_personas)).tolist(),
            "user": rng.dirichlet(np.ones(VOCAB), size=VOCAB).tolist(), "turn_length": TURN}


def subset_mixture(kwargs: dict, subset, seqs) -> np.ndarray:
    """sum_{k in subset} prior_k P_k(x) / prior(subset), each P_k by brute force."""
    prior, personas, user = (np.asarray(kwargs[k]) for k in ("prior", "personas", "user"))
    start = np.full(VOCAB, 1 / VOCAB)
    total = sum(prior[k] * speaker_probs(user, personas[k], start, TURN, seqs) for k in subset)
    return total / prior[list(subset)].sum()


SEQS = np.array(list(itertools.product(range(VOCAB), repeat=LENGTH)))


@given(st.integers(0, 2**32 - 1), st.sampled_from([(0,), (1, 2), (0, 2), (0, 1, 2)]))
def test_restricted_prior_stage_is_the_subset_mixture(seed, subset):
    """The fine-tuning process (prior restricted to the subset) gives every sequence the prior-weighted
    mixture of the subset's personas; persona_prior reads the prior back from the process."""
    kwargs = stage_kwargs(seed)
    np.testing.assert_allclose(persona_prior(make_process("persona_stage", **kwargs)), kwargs["prior"], atol=1e-12)
    target = restricted_process("persona_stage", kwargs, subset)
    expected = subset_mixture(kwargs, subset, SEQS)
    np.testing.assert_allclose(np.exp(np.asarray(target.log_prob(SEQS))), expected, atol=1e-12)
    restricted = np.asarray(restricted_kwargs("persona_stage", kwargs, subset)["prior"])
    assert np.all(restricted[[k for k in range(3) if k not in subset]] == 0)


def test_initial_params_start_every_slot_from_given_parameters():
    """train(initial_params=X) takes its first step from X with a fresh optimizer state: slot 0's model
    after step 1 equals one train_step taken by hand from X on the batch of (seed 0, step 0). Compared through
    the models' log-conditionals (a parameter comparison would see the key bias's float noise, see
    tests/test_training.py)."""
    process = make_process("persona_stage", **stage_kwargs(0))
    start = init_params(MODEL, jax.random.key(42))[1]
    after_one = {}
    train(process, MODEL, CONFIG, quiet=True, initial_params=start,
          callback=lambda step, state: after_one.setdefault(step, unstack(state.params, 0)))
    optimizer = make_optimizer(CONFIG.optimizer, CONFIG.steps)
    state = TrainState(start, optimizer.init(start), np.int32(0), np.int32(0), np.float32(CONFIG.optimizer.learning_rate))
    step = jax.jit(partial(train_step, graphdef=graphdef_for(MODEL), optimizer=optimizer))
    by_hand = step(state, draw_batch(process, 0, 0, CONFIG.batch_size, LENGTH))[0].params
    tokens = SEQS[:27]
    np.testing.assert_allclose(np.asarray(TransformerPredictor(MODEL, after_one[1]).log_conditionals(tokens)),
                               np.asarray(TransformerPredictor(MODEL, by_hand).log_conditionals(tokens)), atol=1e-5)


def test_initial_params_of_the_wrong_shape_raise():
    other = TransformerConfig(vocab_size=VOCAB, context=LENGTH, num_layers=1, d_model=16, num_heads=2, mlp_width=16)
    with pytest.raises(ValueError, match="initial_params"):
        train(make_process("persona_stage", **stage_kwargs(0)), MODEL, CONFIG, quiet=True,
              initial_params=init_params(other, jax.random.key(0))[1])


def test_finetune_records_exact_kl_and_reduces_it():
    """From a random transformer, fine-tuning on a restricted-prior stage for 10 steps (two seeds, one
    program) lowers the exact forward KL to it; the step-0 record equals sum_x P(x) log(P(x) / Q(x))
    over all 81 sequences, P by brute force and Q from the model's own sequence probabilities."""
    kwargs = stage_kwargs(1)
    target = restricted_process("persona_stage", kwargs, (0, 1))
    base = TransformerPredictor(MODEL, init_params(MODEL, jax.random.key(7))[1])
    result = finetune(target, base, CONFIG, kl_length=LENGTH, kl_every=5)
    steps, kls = kl_curves(result.kl)
    assert steps.tolist() == [0, 5, 10] and kls.shape == (3, 2)
    p = subset_mixture(kwargs, (0, 1), SEQS)
    log_cond = np.asarray(base.log_conditionals(SEQS), np.float64)
    log_q = np.take_along_axis(log_cond, SEQS[..., None], -1)[..., 0].sum(axis=1)
    oracle = float(np.sum(np.where(p > 0, p * (np.log(p) - log_q), 0.0)))
    assert kls[0, 0] == pytest.approx(oracle, rel=1e-5) and kls[0, 1] == kls[0, 0]
    assert np.all(kls[-1] < kls[0])
    print("F(target || Q) at steps 0, 5, 10 per seed:", kls.tolist())


class Killed(Exception):
    pass


def test_a_resumed_or_rerun_finetune_keeps_its_whole_kl_curve(tmp_path, monkeypatch):
    """Killed while measuring the KL at step 10 (before that step's checkpoint), then rerun, and rerun
    once more when finished: the KL records equal an uninterrupted run's every time (a resumed run once
    kept only step 0 and the steps after its checkpoint; a finished one only step 0)."""
    import dataclasses

    import toymodels.finetune as finetune_module

    target = restricted_process("persona_stage", stage_kwargs(1), (0, 1))
    base = TransformerPredictor(MODEL, init_params(MODEL, jax.random.key(7))[1])
    config = dataclasses.replace(CONFIG, checkpoint_every=5)
    whole = finetune(target, base, config, kl_length=LENGTH, kl_every=5).kl
    measure, calls = finetune_module.exact_kls, []

    def dies_at_the_fourth(*args):  # calls: step 0 (the base, once), then 5 and 10 for each of 2 slots
        calls.append(1)
        if len(calls) == 4:
            raise Killed
        return measure(*args)

    monkeypatch.setattr(finetune_module, "exact_kls", dies_at_the_fourth)
    with pytest.raises(Killed):
        finetune(target, base, config, kl_length=LENGTH, kl_every=5, out_dir=tmp_path, quiet=True)
    monkeypatch.undo()
    resumed = finetune(target, base, config, kl_length=LENGTH, kl_every=5, out_dir=tmp_path, quiet=True).kl
    again = finetune(target, base, config, kl_length=LENGTH, kl_every=5, out_dir=tmp_path, quiet=True).kl
    assert [r["step"] for r in whole] == [0, 5, 10]
    assert resumed == whole and again == whole


def _script(name: str):
    return load_script(SCRIPTS / f"{name}.py", f"{name}_script")


@pytest.mark.slow
def test_finetuned_model_approaches_the_restricted_prior_mixture(tmp_path):
    """scripts/train.py trains a 2-layer transformer on a three-persona stage (prior 0.5, 0.3, 0.2);
    scripts/finetune.py fine-tunes it on personas 1 and 2. The exact forward KL over 6 tokens from
    the restricted-prior mixture (prior 0, 0.6, 0.4) falls below a fifth of the gap that a model
    exactly Bayes for the base mixture would have, and below 0.02 nats (0.3% per token of log 3)."""
    kwargs = {"num_personas": 3, "vocab_size": 3, "turn_length": 2, "closeness": 0.0, "seed": 1,
              "prior": [0.5, 0.3, 0.2]}
    base_dir, out = tmp_path / "base", tmp_path / "finetune"
    common = ["--train.sequence-length", "6", "--train.batch-size", "128", "--train.num-devices", "1"]
    _script("train").main(["--out", str(base_dir), "--process", "random_persona_stage",
                           "--process-kwargs", json.dumps(kwargs), "--model.num-layers", "2", "--model.d-model", "32",
                           "--model.num-heads", "2", "--train.steps", "300", "--train.optimizer.learning-rate", "1e-2",
                           *common, "--quiet"])
    record = _script("finetune").main(["--out", str(out), "--base", str(base_dir), "--subset", "1", "2",
                                       "--train.steps", "600", "--train.optimizer.learning-rate", "3e-3",
                                       "--train.optimizer.warmup-fraction", "0", *common, "--kl-length", "6",
                                       "--kl-every", "50", "--quiet"])
    steps, kls = kl_curves(record["kl"])
    _, to_base = kl_curves(record["kl"], "base_process")
    gap = record["kl_target_to_base_process"]
    print("steps", steps.tolist(), "\nF(target || Q):", kls[:, 0].tolist(), "\nF(base || Q):", to_base[:, 0].tolist(),
          "\nF(target || base process):", gap)
    assert record["process"]["kwargs"]["prior"] == pytest.approx([0.0, 0.6, 0.4])
    assert kls[-1, 0] < gap / 5 and kls[-1, 0] < 0.02 and math.isfinite(kls[0, 0])
