"""End-to-end test of scripts/train.py: the command line into a temporary directory, the files it writes,
a rerun that resumes, and the run loaded back as a Predictor and scored by theory.divergence.

The run is the shared tiny config of tests/training_configs.py (4 slots, 6 steps, 8 fake CPU devices),
so it shares its compiled step with tests/test_training.py. The held-out KL of final.json is a Monte
Carlo estimate of the exact forward KL per token (enumerated here): they agree within 5 standard errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import tyro

from training_configs import LENGTH, MODEL, process
from toymodels.results import read_json
from toymodels.runs import RunConfig
from toymodels.training import load_predictor
from theory.divergence import forward_kl
from script_loader import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train.py"
ARGS = [
    "--process", "mess3", "--process-kwargs", '{"x": 0.05, "alpha": 0.85}',
    "--model.num-layers", "1", "--model.d-model", "16", "--model.num-heads", "2", "--model.mlp-width", "32",
    "--train.steps", "6", "--train.batch-size", "8", "--train.sequence-length", "8",
    "--train.seeds", "0", "1", "--train.learning-rates", "3e-3", "1e-2",
    "--train.optimizer.learning-rate", "3e-3", "--train.optimizer.warmup-fraction", "0",
    "--train.log-every", "2", "--train.evaluation.num-sequences", "512",
    "--divergence-length", "4", "--quiet",
]


def _script():
    return load_script(SCRIPT, "train_script")


def test_train_script_end_to_end(tmp_path):
    main = _script().main
    out = tmp_path / "run"
    record = main(["--out", str(out), *ARGS])

    config = read_json(out / "config.json")
    assert config["process"] == {"name": "mess3", "kwargs": {"x": 0.05, "alpha": 0.85}}
    assert config["model"]["d_model"] == 16 and config["model"]["vocab_size"] == 3 and config["model"]["context"] == LENGTH
    assert config["train"]["seeds"] == [0, 1] and config["train"]["steps"] == 6
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == [2, 4, 6, 6] and "eval" in metrics[-1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["6"]

    final = read_json(out / "final.json")
    assert final["metadata"]["versions"]["jax"] and final["metadata"]["device"]["count"] == jax.device_count()
    assert final["metadata"]["device"]["platform"] == jax.default_backend() and final["wall_s"] > 0
    assert [s["seed"] for s in final["slots"]] == [0, 0, 1, 1] and len(final["evaluation"]) == 4
    for slot in final["evaluation"]:
        assert slot["kl"] > 0 and slot["loss_ratio"] > 1 and len(slot["kl_per_position"]) == LENGTH
    assert record["evaluation"][0]["kl"] == final["evaluation"][0]["kl"]

    # The run loads back as a Predictor: exact forward KL against the held-out estimate and final.json.
    for index in (0, 3):
        predictor = load_predictor(out, seed_index=index)
        assert predictor.config == MODEL
        np.testing.assert_allclose(forward_kl(process(), predictor, 4).value,
                                   final["divergences"][index]["forward_kl"]["value"], rtol=1e-6)
        exact = forward_kl(process(), predictor, LENGTH).value / LENGTH
        slot = final["evaluation"][index]
        assert abs(slot["kl"] - exact) < 5 * slot["kl_stderr"], (slot["kl"], exact, slot["kl_stderr"])

    # A rerun finds the finished run: it trains nothing and evaluates the same parameters again.
    again = main(["--out", str(out), *ARGS])
    assert again["evaluation"][2]["kl"] == final["evaluation"][2]["kl"]
    rerun_metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rerun_metrics] == [2, 4, 6, 6] and "eval" in rerun_metrics[-1]  # replaced, not appended


def test_run_config_from_the_command_line():
    config = tyro.cli(RunConfig, args=["--out", "x", "--process", "markov_chain",
                                       "--process-kwargs", '{"transition": [[0.9, 0.1], [0.2, 0.8]]}',
                                       "--train.seeds", "3", "4", "--train.optimizer.weight-decay", "0.1"])
    assert config.train.seeds == (3, 4) and config.train.optimizer.weight_decay == 0.1
    assert config.make_process().vocab_size == 2
    assert config.model.config(2, 32).num_layers == 2


@pytest.mark.parametrize("fields, match", [
    (dict(process_kwargs="{x: 1}"), "process_kwargs"),
    (dict(process_kwargs="[1, 2]"), "process_kwargs"),
    (dict(divergence_method="exact"), "divergence_method"),
    (dict(divergence_length=64), "divergence_length"),
    (dict(out=""), "out"),
])
def test_run_config_validation(fields, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**{"out": "x", **fields})


def test_unknown_process_family_is_named():
    with pytest.raises(ValueError, match="unknown process family"):
        RunConfig(out="x", process="nonesuch").make_process()
