"""Draw every figure and table whose result files exist; reads only result files, computes nothing.

    python paper/draw.py --results results [--profile auto|quick|full] [--paper paper]

Each experiment has one module in paper/plots/ (NAME, draw(record, figures, tables)); add it to PLOTS.
With --profile auto a full-profile result is preferred to a quick one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plots import (
    c01_posterior_mixture,
    c03_hash_payload,
    c05_compounding,
    c06_offscreen,
    c07_generated_text,
    c08_myopia,
    c09_reweighting,
    c10_waluigi,
    c11_several_minds,
    c12_own_outputs,
    c13_belief_geometry,
    c2_sticky_marker,
)

from toymodels.results import read_json

# One module per experiment, in claim order.
PLOTS = (c01_posterior_mixture, c2_sticky_marker, c03_hash_payload, c05_compounding, c06_offscreen, c07_generated_text,
         c08_myopia, c09_reweighting, c10_waluigi, c11_several_minds, c12_own_outputs, c13_belief_geometry)


def find_result(results: Path, name: str, profile: str) -> Path | None:
    """results/<name>/<profile>.json, trying full then quick for profile 'auto'."""
    for candidate in ("full", "quick") if profile == "auto" else (profile,):
        if (results / name / f"{candidate}.json").is_file():
            return results / name / f"{candidate}.json"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="results directory to read")
    parser.add_argument("--profile", choices=("auto", "quick", "full"), default="auto", help="which result file to draw")
    parser.add_argument("--paper", type=Path, default=Path("paper"), help="writes <paper>/figures and <paper>/tables")
    args = parser.parse_args(argv)
    for plot in PLOTS:
        path = find_result(args.results, plot.NAME, args.profile)
        if path is None:
            print(f"{plot.NAME}: skipped, no {args.profile} result file in {args.results / plot.NAME}")
            continue
        written = plot.draw(read_json(path), args.paper / "figures", args.paper / "tables")
        print(f"{plot.NAME}: {path.name} -> " + ", ".join(p.name for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
