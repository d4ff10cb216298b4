"""C8 figure and table, from results/c08_myopia/<profile>.json only.

(a) Per-position KL from the exact Bayes predictor to the model, full vs myopic gradients, on the
    precaching process (answer positions marked) and on its Markov control (mean over seeds, 95% interval).
(b) The paired gap KL(myopic) - KL(full) per token, at answer positions and over all positions, per
    process, with 95% intervals across seeds; 0 is marked.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from plots.simple_table import pm, write_table
from plots.stats import mean_and_half_width
from plots.style import MARKERS, RC, save, shade

NAME = "c08_myopia"
LABELS = {"precaching": "precaching (permutation)", "precaching_control": "Markov control"}


def _panel_positions(ax, record: dict) -> None:
    combos = [(p, m) for p in LABELS for m in ("full", "myopic")]
    for k, (process, mode) in enumerate(combos):
        curves = [r["kl_per_position"] for r in record["rows"] if r["process"] == process and r["mode"] == mode]
        mean, half = mean_and_half_width(curves)
        t = np.arange(len(mean))
        colour = shade(0 if mode == "full" else 2, 3)
        ax.errorbar(t, mean, yerr=half, ls="-" if process == "precaching" else "--",
                    marker=MARKERS[k % len(MARKERS)], ms=3, color=colour, capsize=1.5,
                    mfc="white" if process == "precaching_control" else colour, label=f"{LABELS[process]}, {mode}")
    for a in record["answer_positions"]:
        ax.axvline(a, color="0.85", lw=0.8, zorder=0)
    ax.set(xlabel="position $t$ (grey lines: answer positions of precaching)",
           ylabel="KL(Bayes || model) at $t$ (nats)", title="(a) per-position KL to Bayes")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(True, color="0.92", lw=0.5)


def _panel_gap(ax, record: dict) -> None:
    summary = record["summary"]
    labels, means, halves = [], [], []
    for row in summary:
        labels.append(f"{LABELS[row['process']]}\n{'answer' if row['positions'] == 'answers' else 'all'} positions")
        means.append(row["gap"]["mean"])
        halves.append(row["gap"]["half_width"])
    y = np.arange(len(labels))
    ax.errorbar(means, y, xerr=halves, fmt="o", color="k", capsize=3)
    ax.axvline(0, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set(xlabel="KL(myopic) - KL(full) per token (nats), 95% CI over seeds", title="(b) cost of myopic training")
    ax.grid(True, axis="x", color="0.92", lw=0.5)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    grid = record["config"]["grid"]
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 2, figsize=(10.5, 3.9), constrained_layout=True, width_ratios=(1.4, 1))
        _panel_positions(axes[0], record)
        _panel_gap(axes[1], record)
        figure.suptitle(f"Myopic vs full gradients: V = {grid['vocab_size']}, delay {grid['delay']}, "
                        f"{grid['num_seeds']} seeds (paired by seed)")
        paths = save(figure, figures, NAME)
    header = ["process", "positions", "KL full (nats/token)", "KL myopic", "gap myopic - full"]
    body = [[LABELS[r["process"]], r["positions"], pm(r["full"], 1, True), pm(r["myopic"], 1, True),
             pm(r["gap"], 1, True)] for r in record["summary"]]
    note = f"Mean ± 95% Student-t interval over {grid['num_seeds']} seeds; KL from the exact Bayes predictor on held-out data."
    return paths + write_table(tables, NAME, header, body, record, note)
