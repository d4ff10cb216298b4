"""C2 figure and table, from results/c2_sticky_marker/<profile>.json only (closed forms included there).

(a) F_n(Q') - F_n(Q) per token vs eps, measured for a perfect and an imperfect Q, over -log(1 - eps).
(b) P(g appears within n tokens of Q') vs n, for Q = P: exact (enumeration) and Monte Carlo (+- 1 s.e.)
    over the closed form 1 - (1 - eps)^n.
(c) TV_n(P, Q') vs n for both Q over the same curve, now a lower bound (equality for Q = P).
The table: per-token cost measured vs closed form, P(g appears) at the longest sampled n and at n = 1000.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c2_sticky_marker"


def _rows(record: dict, section: str, **where) -> list[dict]:
    return [r for r in record[section] if all(r[k] == v for k, v in where.items())]


def _panel_cost(ax, record: dict) -> None:
    curves = record["closed_form_curves"]
    ax.plot(curves["eps"], curves["cost_per_token"], color="0.45", lw=1.2, zorder=1, label=r"closed form $-\log(1-\varepsilon)$")
    styles = {"perfect": dict(marker="o", s=42, facecolors="none", edgecolors="k", label=r"measured, $Q = P$"),
              "imperfect": dict(marker="x", s=30, color="k", label=r"measured, imperfect $Q$")}
    worst = 0.0
    for predictor, style in styles.items():
        rows = _rows(record, "enumeration", predictor=predictor)
        eps = np.array([r["eps"] for r in rows])
        per_token = np.array([r["cost"] / r["n"] for r in rows])
        worst = max([worst] + [abs(r["cost"] - r["cost_closed_form"]) / r["n"] for r in rows])
        ax.scatter(eps, per_token, zorder=2, linewidths=1.0, **style)
    lengths = sorted({r["n"] for r in record["enumeration"]})
    ax.set(xscale="log", yscale="log", xlabel=r"marker probability $\varepsilon$ per token",
           ylabel=r"$(F_n(Q') - F_n(Q))\,/\,n$  (nats per token)", title="(a) prediction cost of the marker")
    ax.text(0.97, 0.04, f"exact, n = {lengths[0]}..{lengths[-1]} (points overlap)\n"
            f"max |measured - closed form| = {worst:.1e} nats/token", transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    ax.legend(loc="upper left")
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _eps_styles(record: dict) -> list[dict]:
    curves = record["closed_form_curves"]["p_marker"]
    return [{"eps": c["eps"], "curve": c["value"], "color": shade(k, len(curves)), "marker": MARKERS[k % len(MARKERS)],
             "ls": LINESTYLES[k % len(LINESTYLES)]} for k, c in enumerate(curves)]


def _bound_lines(ax, record: dict) -> None:
    for style in _eps_styles(record):
        ax.plot(record["closed_form_curves"]["n"], style["curve"], style["ls"], color=style["color"], lw=1.2, zorder=1)


def _finish_probability_axis(ax, record: dict, title: str) -> None:
    tops = [r["p_marker"] + r["p_marker_stderr"] for r in record["monte_carlo"]]
    ax.set(xscale="log", ylim=(-0.02, max([1.05] + tops) + 0.03), xlabel="generation length $n$ (tokens)",
           ylabel="probability", title=title)
    ax.grid(True, which="major", color="0.9", lw=0.6)


def _panel_marker(ax, record: dict) -> None:
    _bound_lines(ax, record)
    for style in _eps_styles(record):
        exact = _rows(record, "enumeration", predictor="perfect", eps=style["eps"])
        ax.plot([r["n"] for r in exact], [r["generation_off_support"] for r in exact], style["marker"], color=style["color"],
                ms=4.5, ls="none", zorder=3)
        sampled = _rows(record, "monte_carlo", eps=style["eps"])
        ax.errorbar([r["n"] for r in sampled], [r["p_marker"] for r in sampled], yerr=[r["p_marker_stderr"] for r in sampled],
                    fmt=style["marker"], mfc="white", mec=style["color"], ecolor=style["color"], ms=5, capsize=2.5, zorder=4)
    _finish_probability_axis(ax, record, r"(b) $P$(g appears within $n$ tokens of $Q'$) $= Q'(P = 0)$, $Q = P$")
    eps_entries = [Line2D([], [], ls=s["ls"], marker=s["marker"], color=s["color"], label=rf"$\varepsilon$ = {s['eps']:g}")
                   for s in _eps_styles(record)]
    ax.legend(handles=eps_entries, loc="lower right", framealpha=0.9)


def _panel_tv(ax, record: dict) -> None:
    _bound_lines(ax, record)
    for style in _eps_styles(record):
        colour, marker = style["color"], style["marker"]
        exact = {q: _rows(record, "enumeration", predictor=q, eps=style["eps"]) for q in ("perfect", "imperfect")}
        sampled = _rows(record, "monte_carlo", eps=style["eps"])
        ax.plot([r["n"] for r in exact["perfect"]], [r["tv"] for r in exact["perfect"]], marker, color=colour, ms=4.5,
                ls="none", zorder=3)
        ax.errorbar([r["n"] for r in sampled], [r["tv_perfect"] for r in sampled], yerr=[r["tv_perfect_stderr"] for r in sampled],
                    fmt=marker, mfc="white", mec=colour, ecolor=colour, ms=5, capsize=2.5, zorder=4)
        ax.plot([r["n"] for r in exact["imperfect"]], [r["tv"] for r in exact["imperfect"]], "+", color=colour, ms=6,
                mew=1.0, ls="none", zorder=2)
        ax.errorbar([r["n"] for r in sampled], [r["tv_imperfect"] for r in sampled],
                    yerr=[r["tv_imperfect_stderr"] for r in sampled], fmt="x", color=colour, ms=5, mew=1.0, capsize=2.5, zorder=2)
    _finish_probability_axis(ax, record, r"(c) total variation $TV_n(P, Q')$")


def _kinds_legend(figure) -> None:
    grey = "0.3"
    kinds = [Line2D([], [], color=grey, label=r"$1-(1-\varepsilon)^n$: $P$(g appears), and the lower bound on $TV_n$"),
             Line2D([], [], marker="o", color=grey, ls="none", label=r"$Q = P$: exact (enumeration)"),
             Line2D([], [], marker="o", mfc="white", color=grey, ls="none", label=r"$Q = P$: Monte Carlo $\pm$1 s.e."),
             Line2D([], [], marker="+", color=grey, ls="none", label=r"imperfect $Q$: exact"),
             Line2D([], [], marker="x", color=grey, ls="none", label=r"imperfect $Q$: Monte Carlo $\pm$1 s.e.")]
    figure.legend(handles=kinds, loc="outside lower center", ncol=len(kinds), frameon=False)


def _table_rows(record: dict) -> list[dict]:
    rows = []
    for summary in record["closed_form_curves"]["summary"]:
        eps = summary["eps"]
        exact = _rows(record, "enumeration", eps=eps)
        sampled = max(_rows(record, "monte_carlo", eps=eps), key=lambda r: r["n"], default=None)
        rows.append({"eps": eps, "measured": float(np.mean([r["cost"] / r["n"] for r in exact])),
                     "error": max(abs(r["cost"] - r["cost_closed_form"]) / r["n"] for r in exact),
                     "sampled": sampled, **{k: summary[k] for k in ("cost_per_token", "n", "p_marker", "p_no_marker")}})
    return rows


def _probability(p: float, complement: float, latex: bool) -> str:
    """p to 5 decimals, or as 1 - complement when that would print 1.00000."""
    return f"{p:.5f}" if complement >= 5e-6 else "1 - " + _scientific(complement, latex, dollars=False)


def _scientific(x: float, latex: bool, dollars: bool = True) -> str:
    mantissa, exponent = f"{x:.1e}".split("e")
    if not latex:
        return f"{mantissa}e{int(exponent)}"
    text = rf"{mantissa}\times 10^{{{int(exponent)}}}"
    return f"${text}$" if dollars else text


def _mean_se(value: float, stderr: float, latex: bool) -> str:
    return f"{value:.4f} $\\pm$ {stderr:.4f}" if latex else f"{value:.4f} ± {stderr:.4f}"


def _tables(record: dict, tables: Path) -> list[Path]:
    """Markdown and LaTeX (booktabs) versions of one table, one row per eps. P(g appears) is given at the
    longest sampled n (two Monte Carlo estimates and the closed form) and, if that is not C2's n, there too."""
    rows = _table_rows(record)
    n_mc, claim_n = (rows[0]["sampled"] or {}).get("n"), rows[0]["n"]
    md_head = ["eps", "cost/token measured (nats)", "-log(1-eps) (nats)", "max abs error (nats/token; all n, both Q)"]
    tex_head = [r"$\varepsilon$", "measured", r"$-\log(1-\varepsilon)$", "max error"]
    groups = [r"\multicolumn{3}{c}{$(F_n(Q') - F_n(Q))/n$ (nats)}"]
    if n_mc:
        # Both Monte Carlo columns are shares of sampled generations of Q' (Q = P): those holding g (the
        # off-support fraction of G's estimator) and TV_n's estimate E[(1 - P/Q')_+], which equals it here.
        md_head += [f"P(g in {n_mc}), MC: generations with g", f"P(g in {n_mc}), MC: TV_n estimate", f"P(g in {n_mc}) closed form"]
        tex_head += ["MC: generations with g", r"MC: $TV_n$ estimate", "closed form"]
        groups.append(rf"\multicolumn{{3}}{{c}}{{$P(g\ \mathrm{{in}}\ {n_mc})$}}")
    if n_mc != claim_n:
        md_head.append(f"P(g in {claim_n}) closed form")
        tex_head.append("closed form")
        groups.append(rf"$P(g\ \mathrm{{in}}\ {claim_n})$")
    md = ["| " + " | ".join(md_head) + " |", "|" + "---:|" * len(md_head)]
    tex = [r"\begin{tabular}{" + "r" * len(md_head) + "}", r"\toprule", " & " + " & ".join(groups) + r" \\",
           " & ".join(tex_head) + r" \\", r"\midrule"]
    for r in rows:
        for latex, lines in ((False, md), (True, tex)):
            cells = [f"{r['eps']:g}", f"{r['measured']:.5g}", f"{r['cost_per_token']:.5g}", _scientific(r["error"], latex)]
            at_claim = _probability(r["p_marker"], r["p_no_marker"], latex)
            at_claim = f"${at_claim}$" if latex and at_claim.startswith("1 - ") else at_claim
            if n_mc:
                s = r["sampled"]
                cells += [_mean_se(s["p_marker"], s["p_marker_stderr"], latex), _mean_se(s["tv_perfect"], s["tv_perfect_stderr"], latex),
                          at_claim if n_mc == claim_n else f"{s['p_marker_closed_form']:.5f}"]
            if n_mc != claim_n:
                cells.append(at_claim)
            lines.append(" & ".join(cells) + r" \\" if latex else "| " + " | ".join(cells) + " |")
    tex += [r"\bottomrule", r"\end{tabular}"]
    tables.mkdir(parents=True, exist_ok=True)
    paths = [tables / f"{NAME}.md", tables / f"{NAME}.tex"]
    source = (f"Generated by paper/draw.py from results/{NAME}/{record['config']['profile']}.json "
              f"(code {record['metadata']['code_version']}).")
    paths[0].write_text("\n".join(md) + f"\n\n{source}\n")
    paths[1].write_text(f"% {source} Needs booktabs.\n" + "\n".join(tex) + "\n")
    return paths


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    """C2's figure (pdf, png) and table (md, tex) from one result record."""
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 3, figsize=(12.5, 4.2), constrained_layout=True)
        _panel_cost(axes[0], record)
        _panel_marker(axes[1], record)
        _panel_tv(axes[2], record)
        _kinds_legend(figure)
        paths = save(figure, figures, NAME)
    return paths + _tables(record, tables)
