"""C12 figure and table, from results/c12_own_outputs/<profile>.json only.

(a) Forward KL F and (b) generation KL G against the generation, for each fitter (transformer, Markov
MLE) and each data setting (own outputs only, 50% fresh data, accumulated data): mean over loop seeds with
95% intervals. A seed whose value is infinite (support lost) is left out of the mean and counted in the
table, never replaced by a large finite number.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from scipy import stats

from plots.simple_table import write_table
from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c12_own_outputs"
FIELDS = (("forward_kl", "(a) forward KL $F$ (prediction-loss gap)"), ("generation_kl", "(b) generation KL $G$"))


def _finite_mean_half(column: np.ndarray) -> tuple[float, float, int]:
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return np.nan, 0.0, column.size
    half = stats.t.ppf(0.975, finite.size - 1) * finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else 0.0
    return float(finite.mean()), float(half), int(column.size - finite.size)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    rows = record["rows"]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fitters = list(dict.fromkeys(r["fitter"] for r in rows))
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 2, figsize=(10, 3.9), constrained_layout=True)
        for ax, (field, title) in zip(axes, FIELDS):
            for row in rows:
                k, f = settings.index(row["setting"]), fitters.index(row["fitter"])
                values = np.asarray(row[field], np.float64)
                stats_ = [_finite_mean_half(values[:, g]) for g in range(values.shape[1])]
                x = np.asarray(row["generation"]) + (f - 0.5) * 0.08
                means, halves = np.array([s[0] for s in stats_]), np.array([s[1] for s in stats_])
                lower = np.minimum(halves, 0.9 * means)  # log axis: clip the lower bar above zero
                ax.errorbar(x, means, yerr=[lower, halves], color=shade(k, len(settings)),
                            ls=LINESTYLES[f % len(LINESTYLES)], marker=MARKERS[k % len(MARKERS)],
                            mfc="white" if f else shade(k, len(settings)), ms=4, capsize=2)
            ax.set(yscale="log", xlabel="generation", ylabel="nats (exact, whole sequence)", title=title,
                   xticks=np.asarray(rows[0]["generation"]))
            ax.grid(True, color="0.92", lw=0.5)
        handles = [Line2D([], [], color=shade(k, len(settings)), marker=MARKERS[k % len(MARKERS)], label=s)
                   for k, s in enumerate(settings)]
        handles += [Line2D([], [], color="0.3", ls=LINESTYLES[f % len(LINESTYLES)], mfc="white" if f else "0.3",
                           marker="o", label=name) for f, name in enumerate(fitters)]
        figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
        grid = record["config"]["grid"]
        figure.suptitle(f"Retraining on own outputs: N = {grid['num_samples']} sequences of {grid['length']} tokens per "
                        f"generation, {grid['num_seeds']} loop seeds (95% CI; infinite values excluded, see table)")
        paths = save(figure, figures, NAME)
    header = ["fitter", "data", "F gen 0", "F last gen", "G gen 0", "G last gen", "seeds with F = inf at the end"]
    body = []
    for row in rows:
        cells = [row["fitter"], row["setting"]]
        for field in ("forward_kl", "generation_kl"):
            values = np.asarray(row[field], np.float64)
            for g in (0, values.shape[1] - 1):
                mean, half, infinite = _finite_mean_half(values[:, g])
                cells.append("inf" if np.isnan(mean) else f"{mean:.4f} ± {half:.4f}" + (f" ({infinite} inf)" if infinite else ""))
        cells.append(str(int(np.sum(~np.isfinite(np.asarray(row["forward_kl"], np.float64)[:, -1])))))
        body.append(cells)
    note = ("Exact F and G over all sequences of the generation length; mean ± 95% interval over finite seeds; "
            "'inf' counts seeds whose model lost support the true process needs.")
    return paths + write_table(tables, NAME, header, body, record, note)
