"""Fine-tune a trained model on data from another process, and measure it against the exact answer (C9).

Example (a three-persona stage trained by scripts/train.py, fine-tuned on personas 1 and 2):
  python scripts/train.py --out results/train/stage --process random_persona_stage --process-kwargs '{"num_personas": 3, "vocab_size": 3, "turn_length": 2, "seed": 1, "prior": [0.5, 0.3, 0.2]}' --train.sequence-length 8
  python scripts/finetune.py --out results/finetune/stage --base results/train/stage --subset 1 2 --train.steps 300 --train.sequence-length 8 --kl-length 6

Writes the training files of scripts/train.py into OUT (rerunning resumes) and OUT/finetune.json: the
exact forward KL, every --kl-every steps, from the fine-tuning process (the restricted-prior Bayes
mixture) and from the base process to each slot (see toymodels/finetune.py).
"""

from __future__ import annotations

import tyro

from toymodels.finetune import FinetuneRunConfig, run
from toymodels.host import split_host_cpu


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line (or `argv`) into a FinetuneRunConfig and run it; return finetune.json's record."""
    return run(tyro.cli(FinetuneRunConfig, args=argv, description=__doc__))


if __name__ == "__main__":
    split_host_cpu()  # one JAX device per core (toymodels/host.py); before JAX starts
    main()
