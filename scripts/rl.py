"""KL-regularised REINFORCE on a trained model, against the closed-form optimum for each beta (C9).

Example (a model trained by scripts/train.py; proxy reward: the share of token 0; true reward capped at
two occurrences):
  python scripts/rl.py --out results/rl/stage --base results/train/stage --reward.token 0 --reward.cap 2 --rl.betas 0.1 0.3 1.0 --rl.sequence-length 4 --rl.steps 300

Writes OUT/rl.json: per beta the optimum pi* (log Z, expected proxy and true reward, hack rate, KL to the
base), and per slot the exact KL(pi_theta || pi*) and KL(pi* || pi_theta) every --rl.eval-every steps
(see toymodels/rl.py).
"""

from __future__ import annotations

import tyro

from toymodels.host import split_host_cpu
from toymodels.rl import RLRunConfig, run


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line (or `argv`) into an RLRunConfig and run it; return rl.json's record."""
    return run(tyro.cli(RLRunConfig, args=argv, description=__doc__))


if __name__ == "__main__":
    split_host_cpu()  # one JAX device per core (toymodels/host.py); before JAX starts
    main()
