"""C6 figure and table, from results/c06_offscreen/<profile>.json only (closed forms included there).

(a) Hallucination rate after an EMPTY-looking output against the strip probability s, one series per
    empty probability e: trained models (mean over seeds, 95% interval) over the closed form
    (1-e)s / ((1-e)s + e); marked-stripping models (Bayes rate 0) as hollow points.
(b) The same rates against the exact Bayes rate (y = x is exact agreement), read off the model's
    conditionals (filled) and counted in its own generations (hollow, plain data only).
(c) Fine-tuning on marked data: models trained on unmarked data (same vocabulary) fine-tuned on marked
    data; their rate after EMPTY against fine-tuning steps, from the unmarked Bayes rate (dashed) towards
    the marked one, 0.
The table: per grid point, closed form, exact Bayes, model, model generations, commentary entropy after
a visible output (copying); for marked data also the rate and entropy after STRIPPED (guessing); the
fine-tuning rates per length. The probe part of C6's experiment is not measured (said in the table note).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from plots.simple_table import pm, write_sections
from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c06_offscreen"
NOT_MEASURED = ("Not measured here: the linear probe separating copying from hallucinating states (part of "
                "CLAIMS.md C6's experiment).")


def _empties(record: dict) -> list[float]:
    return [c["empty_prob"] for c in record["closed_form_curves"]["curves"]]


def _style(record: dict, e: float) -> dict:
    empties = _empties(record)
    k = empties.index(e)
    return {"color": shade(k, len(empties)), "marker": MARKERS[k % len(MARKERS)], "ls": LINESTYLES[k % len(LINESTYLES)]}


def _panel_rate(ax, record: dict) -> None:
    curves = record["closed_form_curves"]
    plain_empties = {r["empty_prob"] for r in record["rows"] if not r["marked"]}
    for curve in curves["curves"]:
        if curve["empty_prob"] in plain_empties:
            style = _style(record, curve["empty_prob"])
            ax.plot(curves["strip_prob"], curve["rate"], style["ls"], color=style["color"], lw=1.2, zorder=1)
    for row in record["rows"]:
        style, rate = _style(record, row["empty_prob"]), row["summary"]["rate"]
        face = "white" if row["marked"] else style["color"]
        ax.errorbar([row["strip_prob"]], [rate["mean"]], yerr=[rate["half_width"]], fmt=style["marker"], color=style["color"],
                    mfc=face, ms=5, capsize=2.5, zorder=3)
    ax.axhline(0, color="0.5", lw=0.8, ls=":", zorder=0)
    ax.text(0.98, 0.06, "not measured: the copying/hallucinating probe", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=6.5, color="0.35")
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), xlabel="strip probability $s$",
           ylabel="P(commentary describes content | EMPTY shown)", title="(a) hallucination rate vs stripping")
    ax.grid(True, color="0.9", lw=0.6)


def _panel_agreement(ax, record: dict) -> None:
    ax.plot([0, 1], [0, 1], color="0.5", lw=1.0, zorder=0)
    for row in record["rows"]:
        style = _style(record, row["empty_prob"])
        rate = row["summary"]["rate"]
        ax.errorbar([row["bayes"]], [rate["mean"]], yerr=[rate["half_width"]], fmt=style["marker"], color=style["color"],
                    mfc=style["color"], ms=5, capsize=2.5, zorder=3)
        if not row["marked"]:
            gen = row["summary"]["generated"]
            # Shifted right by a hair so that the two estimates of one grid point do not hide each other.
            ax.errorbar([row["bayes"] + 0.015], [gen["mean"]], yerr=[gen["half_width"]], fmt=style["marker"],
                        color=style["color"], mfc="white", ms=6, capsize=2.5, zorder=2)
    ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="exact Bayes rate (from the process; hollow points shifted)",
           ylabel="trained model's rate", title="(b) model against exact Bayes")
    ax.set_aspect("equal")
    ax.grid(True, color="0.9", lw=0.6)


def _panel_finetune(ax, record: dict) -> None:
    for entry in record["finetune"]:
        style = _style(record, entry["empty_prob"])
        steps = [p["steps"] for p in entry["points"]]
        rates = [p["rate_after_empty"] for p in entry["points"]]
        ax.errorbar(steps, [r["mean"] for r in rates], yerr=[r["half_width"] for r in rates], fmt=style["marker"] + "-",
                    color=style["color"], mfc="white", ms=5, capsize=2.5, lw=1.0, zorder=3,
                    label=f"s = {entry['strip_prob']:g}, e = {entry['empty_prob']:g}")
        ax.axhline(entry["bayes_unmarked"], color=style["color"], lw=0.9, ls="--", zorder=1)
    ax.axhline(0, color="0.5", lw=0.8, ls=":", zorder=0)
    ax.set_xscale("symlog", linthresh=10)
    ax.set(ylim=(-0.03, 1.03), xlabel="fine-tuning steps on marked data",
           ylabel="P(commentary describes content | EMPTY shown)",
           title="(c) fine-tuning on marked data\n(dashed: unmarked Bayes rate; marked Bayes rate 0)")
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.grid(True, color="0.9", lw=0.6)


def _legend(figure, record: dict) -> None:
    handles = [Line2D([], [], color=_style(record, e)["color"], ls=_style(record, e)["ls"], marker=_style(record, e)["marker"],
                      label=f"e = {e:g}") for e in _empties(record)]
    grey = "0.3"
    handles += [Line2D([], [], color=grey, label=r"closed form $(1-e)s/((1-e)s+e)$"),
                Line2D([], [], color=grey, marker="o", ls="none", label="(a) model, plain data; (b) model conditionals"),
                Line2D([], [], color=grey, marker="o", mfc="white", ls="none",
                       label="(a) model, marked data (Bayes 0); (b) model generations"),
                Line2D([], [], color="0.5", label="(b) y = x")]
    figure.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)


def _f(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def _tables(record: dict, tables: Path) -> list[Path]:
    seeds = len(record["rows"][0]["seeds"])
    plain = [r for r in record["rows"] if not r["marked"]]
    marked = [r for r in record["rows"] if r["marked"]]
    head = ["s", "e", "closed form", "exact Bayes", "model", "model generations", "copy entropy (nats)"]
    sections = [(f"Hallucination rate after an EMPTY-looking output, plain data (mean ± 95% CI over {seeds} seeds). "
                 "Copy entropy: the model's commentary entropy after a visible output (exact: 0). " + NOT_MEASURED, head,
                 [[f"{r['strip_prob']:g}", f"{r['empty_prob']:g}", _f(r["closed_form"]), _f(r["bayes"]), pm(r["summary"]["rate"]),
                   pm(r["summary"]["generated"]), pm(r["summary"]["copy_entropy"])] for r in plain])]
    if marked:
        sections.append(("Marked stripping: rate after EMPTY (exact 0) and, after STRIPPED, rate (exact 1) and "
                         "commentary entropy (exact: H(c given command), the guess).",
                         ["s", "e", "rate after EMPTY (model)", "rate after STRIPPED (model)", "entropy after STRIPPED (model)",
                          "exact H(c given command)"],
                         [[f"{r['strip_prob']:g}", f"{r['empty_prob']:g}", pm(r["summary"]["rate"]), pm(r["summary"]["stripped_rate"]),
                           pm(r["summary"]["stripped_entropy"]), _f(r["bayes_stripped_entropy"])] for r in marked]))
    if record.get("finetune"):
        sections.append(("Fine-tuning on marked data: models trained on unmarked data (in the marked vocabulary), "
                         "fine-tuned on marked data; rate after EMPTY (unmarked Bayes rate before, exact 0 after) and "
                         "after STRIPPED (exact 1).",
                         ["s", "e", "fine-tuning steps", "rate after EMPTY", "rate after STRIPPED", "unmarked Bayes rate"],
                         [[f"{f['strip_prob']:g}", f"{f['empty_prob']:g}", str(p["steps"]), pm(p["rate_after_empty"]),
                           pm(p["rate_after_stripped"]), _f(f["bayes_unmarked"])] for f in record["finetune"]
                          for p in f["points"]]))
    return write_sections(tables, NAME, sections, record)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    """C6's figure (pdf, png) and table (md, tex) from one result record."""
    with plt.rc_context(RC):
        finetune = bool(record.get("finetune"))
        figure, axes = plt.subplots(1, 3 if finetune else 2, figsize=(14.0 if finetune else 9.5, 4.6),
                                    constrained_layout=True)
        _panel_rate(axes[0], record)
        _panel_agreement(axes[1], record)
        if finetune:
            _panel_finetune(axes[2], record)
        _legend(figure, record)
        paths = save(figure, figures, NAME)
    return paths + _tables(record, tables)
