"""C10 figure and table, from results/c10_waluigi/<profile>.json only.

(a) P(revealed within n tokens) under the model's rollouts (mean over seeds, 95% interval) per
    temperature, over the exact curve of tempered Bayes generation (the closed form at tau = 1).
(b) The mean exact posterior P(W | x_1..x_n) along the same rollouts; exact generation at tau = 1 keeps
    it at pi_W (a martingale).
The table: both quantities at the longest n, model vs exact, per temperature.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from plots.simple_table import pm, write_table
from plots.stats import mean_and_half_width
from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c10_waluigi"


def _panel(ax, record: dict, model_key: str, bayes_key: str, closed_key: str, ylabel: str, title: str) -> None:
    rows = record["rows"]
    closed = record["closed_form"]
    ax.plot(closed["n"], closed[closed_key], color="k", lw=1.0, ls=(0, (1, 1)), zorder=5)
    for k, row in enumerate(rows):
        colour, n = shade(k, len(rows)), np.asarray(row["n"])
        ax.plot(n, row[bayes_key], LINESTYLES[k % len(LINESTYLES)], color=colour, lw=1.2)
        mean, half = mean_and_half_width(row[model_key])
        every = max(1, len(n) // 10)
        ax.errorbar(n[::every], mean[::every], yerr=half[::every], fmt=MARKERS[k % len(MARKERS)], color=colour, ms=4,
                    capsize=2, mfc="white")
    ax.set(xlabel="tokens generated $n$", ylabel=ylabel, title=title)
    ax.grid(True, color="0.9", lw=0.6)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    rows, grid = record["rows"], record["config"]["grid"]
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.9), constrained_layout=True)
        _panel(axes[0], record, "model_revealed", "bayes_revealed", "revealed", "P(revealed within $n$ tokens)",
               "(a) collapse: reveal probability")
        _panel(axes[1], record, "model_posterior_w", "bayes_posterior_w", "posterior_w",
               "mean exact posterior $P(W\\mid x_{1..n})$", "(b) posterior on W along rollouts")
        handles = [Line2D([], [], ls=LINESTYLES[k % len(LINESTYLES)], marker=MARKERS[k % len(MARKERS)], mfc="white",
                          color=shade(k, len(rows)), label=f"$\\tau$ = {r['temperature']:g}") for k, r in enumerate(rows)]
        handles += [Line2D([], [], color="k", ls=(0, (1, 1)), label=r"closed form at $\tau=1$"),
                    Line2D([], [], color="0.4", label="lines: exact (tempered Bayes)"),
                    Line2D([], [], color="0.4", marker="o", mfc="white", ls="none", label="markers: model, 95% CI over seeds")]
        figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        figure.suptitle(rf"Waluigi collapse: $\pi_W$ = {grid['prior_w']:g}, $\rho$ = {grid['reveal_prob']:g}, "
                        f"{grid['num_seeds']} seeds x {grid['num_rollouts']} rollouts")
        paths = save(figure, figures, NAME)
    length = rows[0]["n"][-1]
    header = ["temperature", f"model P(revealed by {length})", "tempered Bayes", f"model mean P(W given x_1..{length})",
              "tempered Bayes"]
    body = [[f"{r['temperature']:g}", pm(r["model_revealed_final"]), f"{r['bayes_revealed'][-1]:.4f}",
             pm(r["model_posterior_w_final"]), f"{r['bayes_posterior_w'][-1]:.4f}"] for r in rows]
    note = (f"Model: mean ± 95% interval over {grid['num_seeds']} seeds; tempered Bayes: {grid['num_exact_rollouts']} "
            "rollouts of the exact predictor at that temperature (Monte Carlo; at temperature 1 the closed form "
            "pi_W (1 - (1 - rho)^n) is in the figure).")
    return paths + write_table(tables, NAME, header, body, record, note)
