"""Train on own outputs for several generations and record the exact F and G per generation (C12).

Examples:
  python scripts/own_outputs.py --out results/own_outputs/categorical --fitter categorical --process markov_chain --process-kwargs '{"transition": [[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.5, 0.3, 0.2]], "initial": [0.5, 0.3, 0.2]}' --length 1 --num-samples 10 --generations 50 --alphas 0 0.2
  python scripts/own_outputs.py --out results/own_outputs/transformer --fitter transformer --generations 4 --alphas 0 0.5 --train.steps 300

Writes OUT/own_outputs.json: per fraction alpha of fresh data, one record per generation with the
dataset size, the exact forward KL KL(P || Q_k), the generation KL KL(Q_k || P) and their off-support
fractions (see toymodels/own_outputs.py).
"""

from __future__ import annotations

import tyro

from toymodels.host import split_host_cpu
from toymodels.own_outputs import OwnOutputsRunConfig, run


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line (or `argv`) into an OwnOutputsRunConfig and run it; return the record."""
    return run(tyro.cli(OwnOutputsRunConfig, args=argv, description=__doc__))


if __name__ == "__main__":
    split_host_cpu()  # one JAX device per core (toymodels/host.py); before JAX starts
    main()
