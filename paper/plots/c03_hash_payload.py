"""C3 figure and table, from results/c03_hash_payload/<profile>.json only (exact references included there).

(a) Generation: the fraction of generations the data can produce (P(x) > 0) against the forward KL F,
    per seed and hash setting, over the bound Q(supp P) >= exp(-F) that every predictor obeys; the
    non-inverting Q0 sits on it at (H(h), V^-k); exact Bayes at (0, 1).
(b) Verification against generation: the consistent fraction of generations next to the AUCs of three
    checks that tell held-out consistent sequences from one-digit corruptions (the model's likelihood
    ratio to Q0 over the head, its log-probability of the end-of-document token after the payload, and
    a linear probe on the residual stream at that position); mean and 95% interval over seeds. Q0's
    values: V^-k and AUC 1/2.
(c) Where the forward KL is paid: per-position chain-rule terms (Monte Carlo) of the models and of Q0.
The table: per hash setting, all of these numbers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from plots.simple_table import pm, write_sections
from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c03_hash_payload"
CHECKS = (("consistent", "generates\nconsistent"), ("head_llr_auc", "AUC: head\nlikelihood ratio"),
          ("tail_auc", "AUC: tail\nlog-prob"), ("probe_auc", "AUC: probe\nat tail"))


def _style(k: int, n: int) -> dict:
    return {"color": shade(k, n), "marker": MARKERS[k % len(MARKERS)], "ls": LINESTYLES[k % len(LINESTYLES)]}


def _panel_generation(ax, record: dict) -> None:
    settings = record["settings"]
    top = max([s["exact"]["hash_entropy"] for s in settings] + [m["forward_kl"] for s in settings for m in s["models"]])
    f = np.linspace(0, 1.08 * top, 200)
    ax.plot(f, np.exp(-f), color="0.4", lw=1.2, zorder=1)
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    for k, setting in enumerate(settings):
        style = _style(k, len(settings))
        models = setting["models"]
        ax.errorbar([m["forward_kl"] for m in models], [m["consistent"] for m in models],
                    xerr=[m["forward_kl_stderr"] for m in models], yerr=[m["consistent_stderr"] for m in models],
                    fmt=style["marker"], color=style["color"], ms=5, capsize=2, zorder=3)
        q0 = setting["q0"]
        ax.errorbar([q0["forward_kl"]], [q0["consistent"]], xerr=[q0["forward_kl_stderr"]], yerr=[q0["consistent_stderr"]],
                    fmt="*", color=style["color"], mec="k", mew=0.6, ms=10, capsize=2, zorder=4)
        ax.axhline(setting["exact"]["v_minus_k"], color=style["color"], lw=0.8, ls=style["ls"], zorder=0)
    ax.set(yscale="log", xlabel="forward KL $F$ (nats per document)", ylabel="fraction of generations with $P(x) > 0$",
           title="(a) generation: consistent fraction vs loss")
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _panel_checks(ax, record: dict) -> None:
    settings = record["settings"]
    width = 0.8 / len(settings)
    for k, setting in enumerate(settings):
        style = _style(k, len(settings))
        x = np.arange(len(CHECKS)) - 0.4 + width * (k + 0.5)
        means = [setting["summary"][name]["mean"] for name, _ in CHECKS]
        halves = [setting["summary"][name]["half_width"] for name, _ in CHECKS]
        ax.errorbar(x, means, yerr=halves, fmt=style["marker"], color=style["color"], ms=6, capsize=3, ls="none", zorder=3)
        per_seed = [[m["consistent"] for m in setting["models"]]] + [
            [m["verification"][n.removesuffix("_auc")]["auc"] for m in setting["models"]] for n, _ in CHECKS[1:]]
        for xi, values in zip(x, per_seed):
            ax.plot(np.full(len(values), xi + 0.06), values, ".", color=style["color"], ms=3, alpha=0.7, zorder=2)
        ax.hlines(setting["exact"]["v_minus_k"], -0.45, 0.45, color=style["color"], lw=1.0, ls=style["ls"])
    ax.hlines(0.5, 0.55, len(CHECKS) - 0.55, color="0.4", lw=1.0, ls="--")
    ax.axvline(0.5, color="0.7", lw=0.8)
    ax.set_xticks(np.arange(len(CHECKS)), [label for _, label in CHECKS])
    ax.set(ylim=(0, 1.04), ylabel="fraction (generation) or AUC (verification)", title="(b) generator vs verifier")
    ax.grid(True, axis="y", color="0.9", lw=0.6)


def _panel_positions(ax, record: dict) -> None:
    settings = record["settings"]
    for k, setting in enumerate(settings):
        style = _style(k, len(settings))
        terms = np.asarray([m["forward_kl_per_position"] for m in setting["models"]], np.float64)
        t = np.arange(terms.shape[1])
        ax.errorbar(t, terms.mean(axis=0), yerr=terms.std(axis=0, ddof=1) / np.sqrt(len(terms)) if len(terms) > 1 else None,
                    fmt=style["marker"] + style["ls"], color=style["color"], ms=4, capsize=2, lw=1.0)
        ax.plot(t, setting["q0"]["forward_kl_per_position"], "*:", color=style["color"], mec="k", mew=0.4, ms=7, lw=0.8)
        k_len = setting["setting"]["hash_length"]
        ax.axvspan(-0.5, k_len - 0.5, color="0.93", zorder=0)
    ax.set(xlabel="position $t$ (shaded: hash; then payload; last: end of document)",
           ylabel=r"$E_P\,KL(p(\cdot|x_{<t})\,\|\,q(\cdot|x_{<t}))$ (nats)", title="(c) where the loss is paid")
    ax.grid(True, color="0.9", lw=0.6)


def _legend(figure, record: dict) -> None:
    settings = record["settings"]
    handles = [Line2D([], [], color=_style(k, len(settings))["color"], marker=_style(k, len(settings))["marker"],
                      ls=_style(k, len(settings))["ls"], label=s["label"]) for k, s in enumerate(settings)]
    grey = "0.3"
    handles += [Line2D([], [], color="0.4", label=r"bound $\exp(-F)$"),
                Line2D([], [], color=grey, marker="*", ls="none", ms=9, label=r"$Q_0$ (never inverts $H$)"),
                Line2D([], [], color=grey, ls="--", label="lines: $V^{-k}$ (Q0), AUC 1/2 (chance)"),
                Line2D([], [], color=grey, marker=".", ls="none", label="small dots: single seeds")]
    figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)


def _tables(record: dict, tables: Path) -> list[Path]:
    settings = record["settings"]
    seeds = len(settings[0]["seeds"])
    generation = [[s["label"], pm(s["summary"]["consistent"], 3), f"{s['exact']['v_minus_k']:.3f}",
                   pm(s["summary"]["exp_minus_forward_kl"], 3), pm(s["summary"]["forward_kl"], 3),
                   f"{s['exact']['hash_entropy']:.3f}", f"{s['q0']['consistent']:.3f}", f"{s['q0']['forward_kl']:.3f}"]
                  for s in settings]
    verification = [[s["label"]] + [pm(s["summary"][f"{score}_{stat}"], 3) for score in ("head_llr", "tail", "probe")
                                    for stat in ("auc", "accuracy")] for s in settings]
    sections = [
        (f"Generation and loss (mean ± 95% Student-t interval over {seeds} seeds; Monte Carlo). Consistent: fraction "
         "of generations with P(x) > 0; any predictor has at least exp(-F). Q0 (never inverts H), measured with the "
         "same estimators: exact values V^-k and H(h).",
         ["hash", "consistent: model", "V^-k", "exp(-F) model", "F model (nats)", "H(h) (nats)", "Q0: consistent",
          "Q0: F"], generation),
        ("Verification: held-out consistent sequences against one-digit corruptions (P(x) = 0); AUC on the test half, "
         "accuracy with a threshold (or probe, layer chosen) fitted on the fit half. Head LLR: log q - log Q0 over hash "
         "and payload; tail: log q(end of document | head); probe: ridge probe on the residual stream at the tail "
         "position. Q0: its head LLR is 0 and its tail prediction ignores the head (AUC 1/2 for both).",
         ["hash", "head LLR: AUC", "head LLR: accuracy", "tail: AUC", "tail: accuracy", "probe: AUC", "probe: accuracy"],
         verification),
    ]
    return write_sections(tables, NAME, sections, record)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    """C3's figure (pdf, png) and table (md, tex) from one result record."""
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 3, figsize=(13.5, 4.4), constrained_layout=True)
        _panel_generation(axes[0], record)
        _panel_checks(axes[1], record)
        _panel_positions(axes[2], record)
        _legend(figure, record)
        paths = save(figure, figures, NAME)
    return paths + _tables(record, tables)
