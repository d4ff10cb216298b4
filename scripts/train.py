"""Train transformers on a process with exact ground truth and evaluate them against its Bayes predictor.

Example (Mess3, two layers, four seeds):
  python scripts/train.py --out results/train/mess3 --process mess3 --process-kwargs '{"x": 0.05}' --model.num-layers 2 --train.steps 2000 --train.seeds 0 1 2 3

Writes OUT/config.json, OUT/metrics.jsonl, OUT/final.json and OUT/checkpoints/ (see toymodels/runs.py);
rerunning with the same --out resumes. `toymodels.training.load_predictor(OUT, seed_index)` loads a
trained slot as a Predictor.
"""

from __future__ import annotations

import tyro

from toymodels.host import split_host_cpu
from toymodels.runs import RunConfig, run


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line (or `argv`) into a RunConfig and run it; return the final.json record."""
    return run(tyro.cli(RunConfig, args=argv, description=__doc__))


if __name__ == "__main__":
    split_host_cpu()  # one JAX device per core (toymodels/host.py); before JAX starts
    main()
