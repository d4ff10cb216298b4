"""C13 figure and tables, from results/c13_belief_geometry/<profile>.json only.

Top row: (a) held-out MSE of the final layer's linear probe to the exact Mess3 belief vs training
tokens (each seed, and mean +- s.d. across seeds) with the 0.0025 target and the shuffled-target
control; (b) loss / optimal - 1 vs tokens with the 1.002 target; (c) held-out 1 - R^2 per layer at the
last budget for the belief, the next-token distribution and the control. Bottom row: the belief
simplex, exact beliefs of held-out prefixes next to the final layer's probe predictions for them at
a few budgets (first seed), each point coloured by its exact belief (RGB = probabilities of A, B, C).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from plots.simple_table import write_sections
from plots.style import RC, save, shade

NAME = "c13_belief_geometry"
_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def _by_tokens(record: dict) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for row in record["checkpoints"]:
        out.setdefault(row["tokens"], []).append(row)
    return dict(sorted(out.items()))


def _seeds(record: dict) -> list[int]:
    return list(record["seeds"])


def _series(record: dict, value) -> tuple[np.ndarray, np.ndarray]:
    """tokens [T] and values [T, seeds] of value(row)."""
    groups = _by_tokens(record)
    return np.array(list(groups)), np.array([[value(r) for r in rows] for rows in groups.values()])


def _mean_sd(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sd = values.std(axis=1, ddof=1) if values.shape[1] > 1 else np.zeros(len(values))
    return values.mean(axis=1), sd


def _seed_lines(ax, tokens, values) -> None:
    for k in range(values.shape[1]):
        ax.plot(tokens, values[:, k], color=shade(k, values.shape[1]), lw=0.7, alpha=0.5, zorder=1)


def _panel_mse(ax, record: dict) -> None:
    tokens, mse = _series(record, lambda r: r["belief"]["mse"][-1])
    _, control = _series(record, lambda r: r["control"]["mse"][-1])
    _seed_lines(ax, tokens, mse)
    mean, sd = _mean_sd(mse)
    ax.errorbar(tokens, mean, yerr=sd, fmt="o-", color="k", ms=4, capsize=2.5, lw=1.2, zorder=3,
                label=f"final layer, mean $\\pm$ s.d. ({mse.shape[1]} seeds)")
    c_mean, c_sd = _mean_sd(control)
    ax.errorbar(tokens, c_mean, yerr=c_sd, fmt="s--", color="0.55", mfc="white", ms=4, capsize=2.5, lw=1.0, zorder=2,
                label="shuffled-target control")
    target = record["config"]["targets"]["mse"]
    ax.axhline(target, color="0.3", ls=":", lw=1.2, label=f"target {target:g}")
    ax.set(xscale="log", yscale="log", xlabel="training tokens per seed", ylabel="held-out probe MSE (per coordinate)",
           title="(a) linear probe to the exact belief")
    ax.legend(loc="center right", fontsize=7)
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _panel_loss(ax, record: dict) -> None:
    tokens, ratio = _series(record, lambda r: r["loss_ratio"] - 1)
    _seed_lines(ax, tokens, ratio)
    mean, sd = _mean_sd(ratio)
    ax.errorbar(tokens, mean, yerr=sd, fmt="o-", color="k", ms=4, capsize=2.5, lw=1.2, zorder=3,
                label=r"(optimal + KL) / optimal $-$ 1, mean $\pm$ s.d.")
    target = record["config"]["targets"]["loss_ratio"] - 1
    ax.axhline(target, color="0.3", ls=":", lw=1.2, label=f"target loss = {1 + target:g} x optimal")
    optimal = record["optimal"]["loss"]
    ax.set(xscale="log", yscale="log", xlabel="training tokens per seed", ylabel="loss / optimal $-$ 1",
           title=f"(b) excess loss over the exact Bayes loss ({optimal:.4f} nats)")
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _panel_layers(ax, record: dict) -> None:
    """1 - R^2 on a log axis: at the last budget every block decodes the belief to R^2 > 0.99, and only
    the unexplained fraction separates the layers (the control sits at about 1)."""
    rows = list(_by_tokens(record).values())[-1]
    layers = list(record["config"]["layers"]) + ["all"]
    x = np.arange(len(layers))
    kinds = (("belief", "belief state", "o", "k", "k"),
             ("next_token", "next-token distribution (affine in the belief for Mess3)", "x", "0.45", "0.45"),
             ("control", "control (shuffled beliefs)", "s", "0.55", "white"))
    for offset, (kind, label, marker, colour, face) in zip((-0.12, 0.0, 0.12), kinds):
        values = 1 - np.array([r[kind]["r2"] for r in rows])
        if kind == "belief":
            values = np.hstack([values, 1 - np.array([r["concatenated"]["r2"] for r in rows])])
        mean, sd = _mean_sd(values.T)
        ax.errorbar(x[: len(mean)] + offset, mean, yerr=sd, fmt=marker, color=colour, mfc=face, ms=5, capsize=2, label=label)
    ax.set_xticks(x, layers, rotation=20)
    ax.set(yscale="log", ylabel="held-out $1 - R^2$ (fraction of variance not decoded)",
           title=f"(c) per layer at {rows[0]['tokens'] / 1e6:.2g}M tokens (\"all\": layers concatenated)")
    ax.legend(loc="center right", fontsize=7)
    ax.grid(True, axis="y", which="major", color="0.9", lw=0.6)


def _simplex(ax, points: np.ndarray, colours: np.ndarray, title: str) -> None:
    xy = points @ _CORNERS
    ax.add_patch(plt.Polygon(_CORNERS, closed=True, fill=False, ec="0.6", lw=0.8))
    ax.scatter(xy[:, 0], xy[:, 1], c=np.clip(colours, 0, 1), s=2.5, lw=0, rasterized=True)
    for corner, label, (dx, dy) in zip(_CORNERS, "ABC", ((-0.04, -0.05), (0.02, -0.05), (-0.015, 0.02))):
        ax.text(corner[0] + dx, corner[1] + dy, label, fontsize=7, color="0.4")
    ax.set(xlim=(-0.06, 1.06), ylim=(-0.07, 0.93), aspect="equal", title=title)
    ax.axis("off")


def _panels_simplex(axes, record: dict) -> None:
    simplex = record["simplex"]
    exact = np.array(simplex["exact"])
    _simplex(axes[0], exact, exact, "exact beliefs (held-out prefixes)")
    budgets = sorted(simplex["predicted"], key=int)
    chosen = [budgets[0], budgets[len(budgets) // 2], budgets[-1]][: len(axes) - 1] if len(budgets) >= 3 else budgets
    rows = {r["tokens"]: r for r in record["checkpoints"] if r["seed"] == simplex["seed"]}
    for ax, tokens in zip(axes[1:], chosen):
        mse = rows[int(tokens)]["belief"]["mse"][-1]
        _simplex(ax, np.array(simplex["predicted"][tokens]), exact,
                 f"probe on {simplex['layer']}, {int(tokens) / 1e6:.2g}M tokens (MSE {mse:.1e})")
    for ax in axes[1 + len(chosen):]:
        ax.axis("off")


def _fmt(mean: float, sd: float, digits: int, scientific: bool = False) -> str:
    form = f".{digits}e" if scientific else f".{digits}f"
    return f"{mean:{form}} ± {sd:{form}}"


def _tables(record: dict, tables: Path) -> list[Path]:
    targets = record["config"]["targets"]
    budget_rows = []
    for s in record["summary"]:
        met = ("MSE" if s["mse_target_met"] else "") + (" + loss" if s["loss_target_met"] else "")
        budget_rows.append([f"{s['tokens'] / 1e6:.3g}M", _fmt(s["mse_mean"], s["mse_sd"], 2, True), f"{s['r2_mean']:.4f}",
                            f"{s['control_r2_mean']:.4f}", _fmt(s["loss_ratio_mean"], s["loss_ratio_sd"], 5),
                            met.strip(" +") or "none"])
    last = list(_by_tokens(record).values())[-1]
    layer_rows = []
    for index, layer in enumerate(record["config"]["layers"]):
        cells = [layer]
        for kind, key in (("belief", "r2"), ("belief", "mse"), ("next_token", "r2"), ("control", "r2")):
            values = np.array([r[kind][key][index] for r in last])
            cells.append(_fmt(values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0, 4 if key == "r2" else 2,
                              key == "mse"))
        layer_rows.append(cells)
    concatenated = np.array([[r["concatenated"]["r2"][0], r["concatenated"]["mse"][0]] for r in last])
    layer_rows.append(["all (concatenated)", f"{concatenated[:, 0].mean():.4f}", f"{concatenated[:, 1].mean():.2e}", "", ""])
    seeds = len(_seeds(record))
    sections = [
        (f"Final-layer belief probe and loss by training tokens (mean ± s.d. over {seeds} seeds; targets: MSE ≤ "
         f"{targets['mse']:g}, loss ≤ {targets['loss_ratio']:g} x optimal = {record['optimal']['loss']:.5f} nats)",
         ["tokens", "probe MSE", "probe R^2", "control R^2", "loss / optimal", "targets met (all seeds)"], budget_rows),
        (f"Held-out R^2 per residual stream at {last[0]['tokens'] / 1e6:.3g}M tokens (mean ± s.d. over {seeds} seeds; "
         "in Mess3 the next-token distribution is an affine copy of the belief, a b + (1 - a) / 3, so the "
         "belief and next-token R^2 agree by construction)",
         ["layer", "belief R^2", "belief MSE", "next-token R^2", "control R^2"], layer_rows),
    ]
    return write_sections(tables, NAME, sections, record)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    """C13's figure (pdf, png) and tables (md, tex) from one result record."""
    with plt.rc_context(RC):
        figure = plt.figure(figsize=(13, 7.6), constrained_layout=True)
        top, bottom = figure.subfigures(2, 1, height_ratios=(1.0, 0.9))
        axes = top.subplots(1, 3)
        _panel_mse(axes[0], record)
        _panel_loss(axes[1], record)
        _panel_layers(axes[2], record)
        _panels_simplex(bottom.subplots(1, 4), record)
        handles = [Line2D([], [], color=shade(k, len(_seeds(record))), lw=0.7, label=f"seed {s}")
                   for k, s in enumerate(_seeds(record))][:8]
        top.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=7)
        paths = save(figure, figures, NAME)
    return paths + _tables(record, tables)

