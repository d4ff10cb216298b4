"""C1 figure and table, from results/c01_posterior_mixture/<profile>.json only.

(a) Per-position KL from the exact Bayes mixture to: the trained transformers (each seed, and their
    mean; the table gives 95% intervals), the MAP-author predictor and the best single author (+- 1 s.e. over held-out sequences), the
    other single authors (thin).
(b) Held-out R^2 of a linear probe from each layer's residual stream to the exact author posterior, with
    the shuffled-target control (mean, 95% interval across seeds).
(c) The hierarchy: expected posterior entropy over the source and over the author within its source
    against length, exact (enumeration) and Monte Carlo (+- 1 s.e. band).
The table: per-token KLs, probe R^2 per layer, the hierarchy entropies at lengths 0, 1, 2, 4, ...
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from plots.simple_table import pm, write_sections
from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c01_posterior_mixture"


def _panel_kl(ax, record: dict) -> None:
    t = np.asarray(record["positions"])
    best = record["best_single"]
    for label, single in record["single"].items():
        if label != best:
            ax.plot(t, single["kl"], color="0.75", lw=0.8, ls=":", zorder=1)
    ax.plot([], [], color="0.75", lw=0.8, ls=":", label="other single authors")
    series = [(f"best single author ({best})", record["single"][best], MARKERS[1], LINESTYLES[1]),
              ("MAP author", record["map_author"], MARKERS[2], LINESTYLES[2])]
    for k, (label, c, marker, ls) in enumerate(series):
        ax.errorbar(t, c["kl"], yerr=c["stderr"], color=shade(k + 1, 3), marker=marker, ms=3, ls=ls, lw=1.1,
                    capsize=1.5, label=label + r" $\pm$1 s.e.", zorder=2)
    model = record["transformer"]
    per_seed = np.asarray(model["kl_per_seed"])
    colour = shade(0, 3)
    for k, row in enumerate(per_seed):  # each seed, not a band: a t-interval can reach below 0 on a log axis
        ax.plot(t, row, color=colour, lw=0.6, alpha=0.5, zorder=3, label="transformer, each seed" if k == 0 else None)
    ax.plot(t, model["kl"], color=colour, marker=MARKERS[0], ms=3, lw=1.5, zorder=4,
            label=f"transformer, mean of {len(per_seed)} seeds")
    ax.set(yscale="log", xlabel=r"position $t$ (tokens of context)",
           ylabel=r"$E_x\,\mathrm{KL}(p(\cdot|x_{<t})\,\|\,q(\cdot|x_{<t}))$  (nats)",
           title="(a) distance from the Bayes mixture")
    ax.legend(loc="lower right", framealpha=0.9)
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _panel_probe(ax, record: dict) -> None:
    rows = record["probes"]["per_layer"]
    layers = np.array([r["layer"] for r in rows])
    for k, (name, label, marker, fill) in enumerate((("r2", "probe", "o", None), ("r2_shuffled", "shuffled control", "s", "white"))):
        mean = np.array([r[name]["mean"] for r in rows])
        half = np.array([r[name]["half_width"] for r in rows])
        ax.errorbar(layers + (k - 0.5) * 0.08, mean, yerr=half, fmt=marker, ls=LINESTYLES[k], color=shade(2 * k, 3),
                    mfc=fill or shade(2 * k, 3), ms=5, capsize=3, label=f"{label} (95% CI)")
    ax.axhline(0, color="0.6", lw=0.7)
    ax.set(xticks=layers, xticklabels=["embed"] + [f"block {i}" for i in layers[1:]], ylim=(min(-0.1, ax.get_ylim()[0]), 1.05),
           xlabel="residual stream after", ylabel=r"held-out $R^2$ (author posterior)",
           title=r"(b) linear probe to $\pi(a \mid x_{<t})$")
    ax.legend(loc="center right")
    ax.grid(True, axis="y", color="0.9", lw=0.6)


def _panel_hierarchy(ax, record: dict) -> None:
    h = record["hierarchy"]
    mc, exact = h["monte_carlo"], h["exact"]
    t_mc, t_exact = np.asarray(mc["t"]), np.asarray(exact["t"])
    names = (("source", "source", MARKERS[0]), ("within", "author given source", MARKERS[1]))
    for k, (key, label, marker) in enumerate(names):
        colour = shade(2 * k, 3)
        mean, se = np.asarray(mc[key]), np.asarray(mc[f"{key}_stderr"])
        ax.fill_between(t_mc[1:], (mean - se)[1:], (mean + se)[1:], color=colour, alpha=0.3, lw=0)
        ax.plot(t_mc[1:], mean[1:], LINESTYLES[k], color=colour, lw=1.3, label=f"{label}: Monte Carlo $\\pm$1 s.e.")
        ax.plot(t_exact[1:], np.asarray(exact[key])[1:], marker, color=colour, mfc="white", ms=4.5, ls="none",
                label=f"{label}: exact (enumeration)")
        ax.axhline(h["prior_entropy"][key], color=colour, lw=0.7, ls=":")
    ax.set(xscale="log", xlabel=r"length $t$ (tokens read)", ylabel=r"$E\,H(\mathrm{source}\mid x_{\leq t})$, $E\,H(\mathrm{author}\mid\mathrm{source}, x_{\leq t})$ (nats)",
           title="(c) hierarchy, C1(d): sure of the source long before the author")
    ax.text(0.02, 0.03, "dotted: prior entropies", transform=ax.transAxes, fontsize=7)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.1), framealpha=0.9)
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _pm(mean: float, half: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _num(x: float) -> str:
    """4 decimals, or 2 significant digits in scientific notation for tiny nonzero values."""
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.1e}"


def _sections(record: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    model, best = record["transformer"], record["best_single"]
    last = len(record["positions"]) - 1
    seeds = len(model["kl_per_seed"])
    kl_rows = [[f"transformer ({seeds} seeds, 95% CI)", pm(model["per_token"]),
                _pm(model["kl"][last], (model["kl_high"][last] - model["kl_low"][last]) / 2)],
               ["MAP author (± s.e.)", _pm(record["map_author"]["per_token"], record["map_author"]["per_token_stderr"]),
                _pm(record["map_author"]["kl"][last], record["map_author"]["stderr"][last])]]
    for label, c in sorted(record["single"].items(), key=lambda item: item[1]["per_token"]):
        name = f"{label} only" + (" (best single author)" if label == best else "") + " (± s.e.)"
        kl_rows.append([name, _pm(c["per_token"], c["per_token_stderr"]), _pm(c["kl"][last], c["stderr"][last])])
    kl = ("Per-token KL from the exact Bayes mixture to each predictor (nats), held-out data",
          ["predictor", "mean over positions", f"at position t = {last}"], kl_rows)
    probe_rows = [["embedding" if r["layer"] == 0 else f"block {r['layer']}", pm(r["r2"], 3), pm(r["r2_shuffled"], 3),
                   pm(r["r2_train"], 3), f"{r['mse']['mean']:.2e}"] for r in record["probes"]["per_layer"]]
    probe = (f"Linear probe from the residual stream to the exact author posterior (R^2, 95% CI over {seeds} seeds)",
             ["residual stream after", "held-out R^2", "held-out R^2, shuffled targets", "probe-training R^2", "held-out MSE"],
             probe_rows)
    h = record["hierarchy"]
    mc, exact = h["monte_carlo"], h["exact"]
    rows = []
    for t in [0] + [2**k for k in range(int(np.log2(max(mc["t"]))) + 1)]:
        cells = [str(t)]
        for key in ("source", "within"):
            cells += [_num(exact[key][t]) if t < len(exact["t"]) else "", f"{_num(mc[key][t])} ± {_num(mc[f'{key}_stderr'][t])}"]
        rows.append(cells)
    hierarchy = ("Hierarchy: expected posterior entropies (nats) of the source and of the author within its source",
                 ["length t", "source, exact", "source, Monte Carlo ± s.e.", "author given source, exact",
                  "author given source, Monte Carlo ± s.e."], rows)
    return [kl, probe, hierarchy]


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    """C1's figure (pdf, png) and tables (md, tex) from one result record."""
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 3, figsize=(13.5, 4.3), constrained_layout=True)
        _panel_kl(axes[0], record)
        _panel_probe(axes[1], record)
        _panel_hierarchy(axes[2], record)
        paths = save(figure, figures, NAME)
    return paths + write_sections(tables, NAME, _sections(record), record)
