"""C7 figure and table, from results/c07_generated_text/<profile>.json only.

One panel per earlier model M (data = (1 - beta) H + beta M): the mean exact posterior P(M | x_1..x_t)
against t under the trained predictor's own rollouts (mean over seeds, 95% interval band; thin lines:
single seeds), next to exact Bayes generation (closed form: beta at every t, a martingale; and its
Monte Carlo check), H's rollouts (the posterior falls) and M's rollouts (it rises), each +- 1 s.e.
Last panel: how each predictor errs, its next-token entropy minus the exact Bayes entropy on held-out
data, next to M's own (same sign: the predictor errs the way M does).
The table: the posterior at the longest t and the entropy gaps, per M.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from scipy import stats

from plots.simple_table import pm, write_table
from plots.style import RC, save, shade

NAME = "c07_generated_text"
REFERENCES = (("human", "H rollouts", "--", shade(0, 3)), ("generator", "M rollouts", "-.", shade(2, 3)),
              ("bayes", "exact Bayes rollouts (MC)", ":", "0.35"))


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = values.mean(axis=0)
    if len(values) < 2:
        return mean, np.zeros_like(mean)
    return mean, stats.t.ppf(0.975, len(values) - 1) * values.std(axis=0, ddof=1) / np.sqrt(len(values))


def _panel(ax, row: dict) -> None:
    t = np.asarray(row["t"])
    ax.plot(t, row["closed_form_bayes"], color="k", lw=1.0, zorder=4)
    for key, _, ls, colour in REFERENCES:
        mean, se = np.asarray(row[key]), np.asarray(row[f"{key}_stderr"])
        ax.plot(t, mean, ls, color=colour, lw=1.3)
        ax.fill_between(t, mean - se, mean + se, color=colour, alpha=0.15, lw=0)
    curves = np.asarray(row["model"], np.float64)
    for curve in curves:
        ax.plot(t, curve, color="0.55", lw=0.5, zorder=2)
    mean, half = _band(curves)
    ax.fill_between(t, mean - half, mean + half, color="0.2", alpha=0.25, lw=0, zorder=3)
    ax.plot(t, mean, "o-", color="0.1", ms=2.5, lw=1.2, zorder=5)
    ax.set(xlabel="tokens generated $t$", ylabel=r"mean exact posterior $P(M \mid x_{1..t})$",
           title=f"M = H at temperature {row['temperature']:g} ({row['name']})")
    ax.grid(True, color="0.9", lw=0.6)


def _panel_entropy(ax, rows: list[dict]) -> None:
    for k, row in enumerate(rows):
        gaps = np.asarray(row["entropy_gap"], np.float64)
        summary = row["entropy_gap_summary"]
        ax.errorbar([k - 0.1], [summary["mean"]], yerr=[summary["half_width"]], fmt="o", color="0.1", ms=5, capsize=3)
        ax.plot(np.full(len(gaps), k - 0.02), gaps, ".", color="0.5", ms=3)
        ax.plot([k + 0.12], [row["bayes_entropy_gap_of_generator"]], "D", color=shade(2, 3), mec="k", mew=0.5, ms=5)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), [f"data with M at\n$\\tau$ = {r['temperature']:g}" for r in rows])
    ax.set(xlim=(-0.6, len(rows) - 0.4), ylabel="entropy minus exact Bayes entropy (nats per token)",
           title="how each predictor errs")
    ax.grid(True, axis="y", color="0.9", lw=0.6)


def _legend(figure) -> None:
    handles = [Line2D([], [], color="k", lw=1.0, label=r"closed form: $\beta$ (martingale)")]
    handles += [Line2D([], [], ls=ls, color=colour, label=f"{label} ±1 s.e.") for _, label, ls, colour in REFERENCES]
    handles += [Line2D([], [], color="0.1", marker="o", ms=3, label="trained predictor's rollouts (mean, 95% CI band)"),
                Line2D([], [], color="0.55", lw=0.5, label="single seeds"),
                Line2D([], [], color=shade(2, 3), marker="D", mec="k", ls="none", label="right: M's own entropy gap")]
    figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)


def _verdict(summary: dict, beta: float) -> str:
    if summary["low"] > beta:
        return "above beta (looks model-made)"
    if summary["high"] < beta:
        return "below beta (looks human)"
    return "not distinguishable from beta"


def _table(record: dict, tables: Path) -> list[Path]:
    rows = record["rows"]
    length = len(rows[0]["t"])
    header = ["M", "beta", f"model E[pi_{length}]", "exact Bayes (MC)", "H rollouts", "M rollouts", "model's rollouts are",
              "entropy gap: model (nats)", "entropy gap: M"]
    body = [[f"H at tau = {r['temperature']:g}", f"{r['beta']:g}", pm(r["model_final"]), f"{r['bayes'][-1]:.4f}",
             f"{r['human'][-1]:.4f}", f"{r['generator'][-1]:.4f}", _verdict(r["model_final"], r["beta"]),
             pm(r["entropy_gap_summary"]), f"{r['bayes_entropy_gap_of_generator']:+.4f}"] for r in rows]
    note = (f"pi_t = exact P(M | x_1..x_t) after t = {length} tokens; model: mean ± 95% Student-t interval over "
            f"{len(rows[0]['seeds'])} seeds of the mean over its rollouts. Entropy gap: mean next-token entropy minus "
            "the exact Bayes entropy of the data, on held-out data.")
    return write_table(tables, NAME, header, body, record, note=note)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    """C7's figure (pdf, png) and table (md, tex) from one result record."""
    rows = record["rows"]
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, len(rows) + 1, figsize=(4.3 * (len(rows) + 1), 4.2), constrained_layout=True)
        for ax, row in zip(axes[:-1], rows):
            _panel(ax, row)
        _panel_entropy(axes[-1], rows)
        _legend(figure)
        paths = save(figure, figures, NAME)
    return paths + _table(record, tables)
