"""C5 figure and table, from results/c05_compounding/<profile>.json only.

Rows: model sizes. Columns: (a) forward KL per token F_n / n (teacher forced) and generation KL per token
G_n / n (own rollouts) against n, per temperature; (b) the best discriminator's accuracy (1 + TV_n) / 2
against n. Mean over seeds with 95% intervals. The table adds the trap rate (rollouts ending in a
period-1 or period-2 loop) against the data's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from plots.simple_table import pm, write_table
from plots.stats import mean_and_half_width
from plots.style import MARKERS, RC, save, shade

NAME = "c05_compounding"


def _band(ax, n, values, colour, ls, marker) -> None:
    """Mean over seeds as a line; 95% intervals as error bars at a few lengths (bands would hide each other).
    On a log axis the lower bar is clipped at a tenth of the mean."""
    mean, half = mean_and_half_width(values)
    ax.plot(n, mean, ls=ls, color=colour, lw=1.2)
    if marker is None:
        return
    at = np.unique(np.linspace(0, len(n) - 1, 6).round().astype(int))
    low = np.minimum(half[at], 0.9 * mean[at]) if ax.get_yscale() == "log" else half[at]
    ax.errorbar(n[at], mean[at], yerr=[low, half[at]], fmt=marker, color=colour, mfc="white", ms=4, capsize=2)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    rows, grid = record["rows"], record["config"]["grid"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    temperatures = sorted({r["temperature"] for r in rows})
    colour = {t: shade(k, len(temperatures)) for k, t in enumerate(temperatures)}
    marker = {t: MARKERS[k % len(MARKERS)] for k, t in enumerate(temperatures)}
    with plt.rc_context(RC):
        figure, axes = plt.subplots(len(sizes), 2, figsize=(10, 3.2 * len(sizes)), constrained_layout=True, squeeze=False)
        for i, size in enumerate(sizes):
            axes[i, 0].set_yscale("log")
            for row in (r for r in rows if r["size"] == size):
                n, tau = np.asarray(row["n"]), row["temperature"]
                _band(axes[i, 0], n, row["generation_per_token"], colour[tau], "-", marker[tau])
                _band(axes[i, 0], n, row["forward_per_token"], colour[tau], ":", None)
                _band(axes[i, 1], n, row["discriminator_accuracy"], colour[tau], "-", marker[tau])
            axes[i, 0].set(yscale="log", xlabel="length $n$ (tokens)", ylabel="nats per token",
                           title=f"(a{i + 1}) {size}: $G_n/n$ (solid), $F_n/n$ (dotted)")
            axes[i, 1].set(xlabel="length $n$ (tokens)", ylabel="accuracy", ylim=(0.48, 1.01),
                           title=f"(b{i + 1}) {size}: best discriminator, $(1 + TV_n)/2$")
            for ax in axes[i]:
                ax.grid(True, color="0.92", lw=0.5)
        handles = [Line2D([], [], color=colour[t], marker=marker[t], mfc="white", label=f"$\\tau$ = {t:g}") for t in temperatures]
        figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        figure.suptitle(f"Rollouts of imperfect models of a {grid['vocab_size']}-token Markov chain "
                        f"({grid['num_seeds']} seeds, {grid['num_samples']} Monte Carlo sequences; error bars: 95% CI over seeds)")
        paths = save(figure, figures, NAME)
    length = rows[0]["n"][-1]
    header = ["model", "temperature", f"F_n/n at n={length}", f"G_n/n at n={length}", "discriminator accuracy",
              "trap rate", "data trap rate"]
    body = [[r["size"], f"{r['temperature']:g}", pm(r["final"]["forward_per_token"]), pm(r["final"]["generation_per_token"]),
             pm(r["final"]["discriminator_accuracy"], 3), pm(r["final"]["trap_rate"]),
             f"{record['data_trap_rate']:.4f} ± {record['data_trap_stderr']:.4f}"] for r in rows]
    note = ("Model columns: mean ± 95% interval over seeds (Monte Carlo against the exact chain); data trap rate: "
            f"± 1 s.e.; a trap is a rollout whose last {grid['trap_window']} tokens have period 1 or 2.")
    return paths + write_table(tables, NAME, header, body, record, note)
