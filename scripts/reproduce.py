"""Run every experiment in scripts/experiments/ (sorted; files starting with _ are helpers), draw the paper's
figures and tables, and build the claims table (the claim property tests, run by `python -m theory.claims`).

    python scripts/reproduce.py --profile quick --results results

Each experiment runs as its own process, `python <script> --profile P --out RESULTS`, so that one
failing is reported by name and stops the run with its exit status.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(name: str, command: list[str]) -> None:
    """Run one step from the repository root; exit with its status if it fails."""
    status = subprocess.run(command, cwd=ROOT).returncode
    if status != 0:
        print(f"reproduce: {name} FAILED with exit status {status}; stopping", file=sys.stderr, flush=True)
        sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("quick", "full"), default="quick", help="quick: a CPU laptop; full: a GPU")
    parser.add_argument("--results", default="results", help="results directory, relative to the repository root")
    args = parser.parse_args(argv)
    experiments = sorted(p for p in (ROOT / "scripts" / "experiments").glob("*.py") if not p.name.startswith("_"))
    start = time.perf_counter()
    for index, script in enumerate(experiments, 1):
        print(f"reproduce: [{index}/{len(experiments)}] {script.stem} ({time.perf_counter() - start:.0f} s elapsed)", flush=True)
        run(script.stem, [sys.executable, str(script.relative_to(ROOT)), "--profile", args.profile, "--out", args.results])
    print(f"reproduce: drawing figures and tables ({time.perf_counter() - start:.0f} s elapsed)", flush=True)
    run("paper/draw.py", [sys.executable, "paper/draw.py", "--results", args.results, "--profile", args.profile])
    print(f"reproduce: claims table ({time.perf_counter() - start:.0f} s elapsed)", flush=True)
    run("theory.claims", [sys.executable, "-m", "theory.claims"])
    print(f"reproduce: done, {len(experiments)} experiments in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
