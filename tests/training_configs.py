"""Tiny training configs shared by tests/test_training.py, test_evaluation.py, test_train_script.py and
tests/distributed_worker.py: runs with equal model, optimizer, sizes and mesh share one compiled step
within a test session (toymodels.training caches it), which keeps these files fast on a 2-core CI box."""

from __future__ import annotations

from toymodels.evaluation import EvalConfig
from toymodels.processes import mess3
from toymodels.training import OptimizerConfig, TrainConfig
from toymodels.transformer import TransformerConfig

MODEL = TransformerConfig(vocab_size=3, context=8, num_layers=1, d_model=16, num_heads=2, mlp_width=32)
STEPS, BATCH, LENGTH = 6, 8, 8
SEEDS, LEARNING_RATES = (0, 1), (3e-3, 1e-2)  # four slots: seeds x learning rates
OPTIMIZER = OptimizerConfig(learning_rate=3e-3, warmup_fraction=0.0)
EVALUATION = EvalConfig(num_sequences=64, final=False)


def process():
    return mess3(x=0.05, alpha=0.85)


def train_config(**overrides) -> TrainConfig:
    fields = dict(steps=STEPS, batch_size=BATCH, sequence_length=LENGTH, seeds=SEEDS, learning_rates=LEARNING_RATES,
                  optimizer=OPTIMIZER, evaluation=EVALUATION, log_every=2)
    return TrainConfig(**{**fields, **overrides})
