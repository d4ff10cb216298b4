"""C11 figure and table, from results/c11_several_minds/<profile>.json only.

(a) Held-out R^2 of linear probes from each layer's residual stream to the exact posteriors over A's
    type, over B's type and over the pair, with shuffled-target controls (mean, 95% interval over seeds).
(b) The same probes' R^2 scored separately where A speaks the next token and where B does: is the silent
    agent's type decodable too?
(c) The exact factorisation check: mean total variation between the joint posterior over (a, b) and the
    product of its marginals, per position, for the dialog and for the coupled dialog.
(d) One held-out dialog: the exact posterior of each agent's finally most probable type against
    position, and what the last layer's probes decode from the same residual stream (seed 0).
The table: probe R^2 per layer and target, also split by who speaks next; the factorisation numbers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from plots.simple_table import pm, write_sections
from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c11_several_minds"
TARGETS = {"type_a": "A's type", "type_b": "B's type", "types": "the pair (a, b)"}
FLOOR = 1e-18  # panel (c) is logarithmic: values below this (exact zeros included) are drawn at it


def _panel_probe(ax, record: dict) -> None:
    per_layer = record["probes"]["per_layer"]
    for k, (name, label) in enumerate(TARGETS.items()):
        rows = per_layer[name]
        layers = np.array([r["layer"] for r in rows])
        colour, offset = shade(k, len(TARGETS)), (k - 1) * 0.07
        for metric, fill, ls in (("r2", colour, LINESTYLES[k]), ("r2_shuffled", "white", ":")):
            ax.errorbar(layers + offset, [r[metric]["mean"] for r in rows], yerr=[r[metric]["half_width"] for r in rows],
                        fmt=MARKERS[k], ls=ls, color=colour, mfc=fill, ms=5, capsize=3,
                        label=label if metric == "r2" else None)
    ax.plot([], [], "o", color="0.4", mfc="white", ls=":", label="open, dotted: shuffled control")
    ax.axhline(0, color="0.6", lw=0.7)
    layers = [r["layer"] for r in per_layer["type_a"]]
    ax.set(xticks=layers, xticklabels=["embed"] + [f"block {i}" for i in layers[1:]], ylim=(min(-0.1, ax.get_ylim()[0]), 1.05),
           xlabel="residual stream after", ylabel=r"held-out $R^2$ (95% CI over seeds)",
           title="(a) linear probes to each posterior")
    ax.legend(loc="upper left", framealpha=0.9)
    ax.grid(True, axis="y", color="0.9", lw=0.6)


def _panel_speaker(ax, record: dict) -> None:
    speaking = record["probes"]["by_next_speaker"]
    layers = np.array([r["layer"] for r in record["probes"]["per_layer"]["type_a"]])
    series = [("type_a", "A", "A's type, A speaks next"), ("type_a", "B", "A's type, B speaks next (A silent)"),
              ("type_b", "B", "B's type, B speaks next"), ("type_b", "A", "B's type, A speaks next (B silent)")]
    for k, (name, who, label) in enumerate(series):
        rows = speaking[name][who]
        silent = (name == "type_a") != (who == "A")
        colour = shade(0 if name == "type_a" else 2, 3)
        ax.errorbar(layers + (k - 1.5) * 0.05, [r["mean"] for r in rows], yerr=[r["half_width"] for r in rows],
                    fmt=MARKERS[k], ls=":" if silent else "-", color=colour, mfc="white" if silent else colour, ms=5,
                    capsize=3, label=label)
    ax.axhline(0, color="0.6", lw=0.7)
    ax.set(xticks=layers, xticklabels=["embed"] + [f"block {i}" for i in layers[1:]], ylim=(min(-0.1, ax.get_ylim()[0]), 1.05),
           xlabel="residual stream after", ylabel=r"held-out $R^2$ (95% CI over seeds)",
           title="(b) the same probes, by who speaks the next token")
    ax.legend(loc="upper left", framealpha=0.9)
    ax.grid(True, axis="y", color="0.9", lw=0.6)


def _panel_example(ax, record: dict) -> None:
    example = record["example"]
    t = np.asarray(record["positions"])
    for k, name in enumerate(("type_a", "type_b")):
        exact, decoded = np.asarray(example["exact"][name]), np.asarray(example["decoded"][name])
        final = int(np.argmax(exact[-1]))
        colour = shade(2 * k, 3)
        ax.plot(t, exact[:, final], LINESTYLES[k], color=colour, lw=1.4, label=f"{TARGETS[name]} {final}: exact")
        ax.plot(t, decoded[:, final], MARKERS[k], color=colour, mfc="white", ms=4, ls="none",
                label=f"{TARGETS[name]} {final}: probe, block {example['layer']}")
    ax.set(ylim=(-0.05, 1.05), xlabel=r"position $t$ (tokens of context)",
           ylabel=r"posterior probability given $x_{<t}$", title="(d) one held-out dialog, both posteriors decoded")
    ax.legend(loc="center right", framealpha=0.9)
    ax.grid(True, color="0.9", lw=0.6)


def _panel_factorisation(ax, record: dict) -> None:
    checks = record["factorisation"]
    labels = {"dialog": "dialog (independent policies)", "coupled_dialog": "coupled dialog (policies see both types)"}
    for k, (name, label) in enumerate(labels.items()):
        tv = np.asarray(checks[name]["tv"])
        ax.plot(np.arange(len(tv)), np.maximum(tv, FLOOR), LINESTYLES[k], marker=MARKERS[k], ms=3.5,
                color=shade(2 * k, 3), label=f"{label}; max abs(joint - product) = {checks[name]['max_abs']:.1e}")
    ax.set(yscale="log", ylim=(FLOOR / 3, 3), xlabel=r"length $t$ (tokens read)",
           ylabel=r"mean TV$(\pi(a,b|x_{\leq t}),\ \pi(a|x_{\leq t})\,\pi(b|x_{\leq t}))$",
           title="(c) exact factorisation of the joint posterior")
    if any(np.min(checks[name]["tv"]) < FLOOR for name in labels):
        ax.text(0.02, 0.3, f"values below {FLOOR:.0e} drawn at it", transform=ax.transAxes, fontsize=7)
    ax.legend(loc="center right", fontsize=6.5, framealpha=0.9)
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _sections(record: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    per_layer = record["probes"]["per_layer"]
    header = ["residual stream after"]
    for label in TARGETS.values():
        header += [f"R^2, {label}", "shuffled"]
    rows = []
    for i, layer in enumerate(r["layer"] for r in per_layer["type_a"]):
        cells = ["embedding" if layer == 0 else f"block {layer}"]
        for name in TARGETS:
            cells += [pm(per_layer[name][i]["r2"], 3), pm(per_layer[name][i]["r2_shuffled"], 3)]
        rows.append(cells)
    seeds = len(record["training"]["seeds"])
    probes = (f"Linear probes from one residual stream to each exact posterior (held-out R^2, 95% CI over {seeds} seeds)",
              header, rows)
    factor_rows = [[name.replace("_", " "), f"{c['max_abs']:.1e}", f"{c['mean_tv']:.1e}", f"{c['mean_mutual_information']:.1e}",
                    f"{c['max_mutual_information']:.1e}"] for name, c in record["factorisation"].items()]
    factorisation = ("Exact check on held-out data: the joint posterior over the two types vs the product of its marginals",
                     ["process", "max abs(joint - product)", "mean TV", "mean I(a; b) given x (nats)", "max I(a; b) given x (nats)"],
                     factor_rows)
    speaking = record["probes"]["by_next_speaker"]
    split_rows = []
    for i, layer in enumerate(r["layer"] for r in per_layer["type_a"]):
        cells = ["embedding" if layer == 0 else f"block {layer}"]
        for name in ("type_a", "type_b"):
            cells += [pm(speaking[name][who][i], 3) for who in "AB"]
        split_rows.append(cells)
    split = ("Probes fitted on the first half of the held-out sequences, scored on the second half where A speaks the "
             "next token and where B does (held-out R^2, 95% CI over seeds)",
             ["residual stream after", "A's type, A speaks", "A's type, B speaks", "B's type, A speaks", "B's type, B speaks"],
             split_rows)
    return [probes, split, factorisation]


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    """C11's figure (pdf, png) and tables (md, tex) from one result record."""
    with plt.rc_context(RC):
        figure, axes = plt.subplots(2, 2, figsize=(11.5, 8.4), constrained_layout=True)
        _panel_probe(axes[0, 0], record)
        _panel_speaker(axes[0, 1], record)
        _panel_factorisation(axes[1, 0], record)
        _panel_example(axes[1, 1], record)
        paths = save(figure, figures, NAME)
    return paths + write_sections(tables, NAME, _sections(record), record)
