"""C9 figure and table, from results/c09_reweighting/<profile>.json only.

(a) Fine-tuning on a persona subset: exact forward KL from the restricted-prior mixture (the exact
    answer) and from the original mixture to the model, against steps (mean over seeds, 95% interval).
(b) KL-regularised REINFORCE: exact KL(pi_theta || pi*_beta) against steps, per beta.
(c) Hack rate against beta: the trained policies and the closed-form optimum pi*_beta, with the base.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from plots.simple_table import pm, write_table
from plots.stats import mean_and_half_width
from plots.style import LINESTYLES, MARKERS, RC, save, shade

NAME = "c09_reweighting"


def _panel_finetuning(ax, ft: dict) -> None:
    steps = np.asarray(ft["steps"])
    for k, (key, label) in enumerate((("kl_to_target", "from the restricted-prior mixture (exact answer)"),
                                      ("kl_to_base", "from the original mixture"))):
        mean, half = mean_and_half_width(ft[key])
        ax.errorbar(steps, mean, yerr=half, color=shade(2 * k, 3), ls=LINESTYLES[k], marker=MARKERS[k], ms=4,
                    mfc="white", capsize=2, label=label)
    ax.axhline(ft["bayes_gap"], color="k", lw=0.8, ls=":", label="KL between the two mixtures")
    ax.set(yscale="log", xlabel="fine-tuning step", ylabel="forward KL over 6 tokens (nats)",
           title=f"(a) SFT on personas {tuple(ft['subset'])}")
    ax.legend(fontsize=7)


def _panel_rl(ax, rl: dict) -> None:
    steps = np.asarray(rl["steps"])
    for k, row in enumerate(rl["betas"]):
        mean, half = mean_and_half_width(row["kl_to_optimum"])
        ax.errorbar(steps, np.maximum(mean, 1e-7), yerr=half, color=shade(k, len(rl["betas"])),
                    ls=LINESTYLES[k % len(LINESTYLES)], marker=MARKERS[k % len(MARKERS)], ms=4, mfc="white", capsize=2,
                    label=rf"$\beta$ = {row['beta']:g}")
    ax.set(yscale="log", xlabel="REINFORCE step", ylabel=r"KL($\pi_\theta \| \pi^*_\beta$) (nats)",
           title="(b) RL converges to the closed-form optimum")
    ax.legend(fontsize=7)


def _panel_hack(ax, rl: dict) -> None:
    betas = np.array([row["beta"] for row in rl["betas"]])
    ax.plot(betas, [row["optimum"]["hack_rate"] for row in rl["betas"]], "-", color="0.3", label=r"optimum $\pi^*_\beta$ (exact)")
    ax.errorbar(betas, [row["hack_rate"]["mean"] for row in rl["betas"]], yerr=[row["hack_rate"]["half_width"] for row in rl["betas"]],
                fmt="o", color="k", mfc="white", capsize=3, label="trained policy (95% CI)")
    ax.axhline(rl["base_hack_rate"], color="0.5", ls=":", lw=0.9, label="base model")
    ax.set(xscale="log", xlabel=r"KL penalty $\beta$", ylabel=f"P(more than {rl['cap']} of token 0)",
           title="(c) reward hacking as the penalty shrinks")
    ax.legend(fontsize=7)


def draw(record: dict, figures: Path, tables: Path) -> list[Path]:
    ft, rl = record["finetuning"], record["rl"]
    with plt.rc_context(RC):
        figure, axes = plt.subplots(1, 3, figsize=(13, 3.9), constrained_layout=True)
        _panel_finetuning(axes[0], ft)
        _panel_rl(axes[1], rl)
        _panel_hack(axes[2], rl)
        for ax in axes:
            ax.grid(True, color="0.92", lw=0.5)
        paths = save(figure, figures, NAME)
    header = ["procedure", "setting", "exact KL to its answer (end)", "hack rate (model)", "hack rate (optimum)",
              "true reward (model)", "true reward (optimum)"]
    body = [["SFT", f"personas {tuple(ft['subset'])}", pm(ft["final"]["kl_to_target"]), "", "", "", ""]]
    for row in rl["betas"]:
        body.append(["RL", f"beta = {row['beta']:g}", pm(row["final_kl"], 1, True), pm(row["hack_rate"], 3),
                     f"{row['optimum']['hack_rate']:.3f}", pm(row["true_reward"], 3), f"{row['optimum']['true_reward']:.3f}"])
    note = ("Mean ± 95% interval over seeds. SFT: forward KL over the enumerated length from the restricted-prior "
            f"mixture (the two mixtures differ by {ft['bayes_gap']:.3f} nats). RL: KL(pi_theta || pi*) exact; base hack "
            f"rate {rl['base_hack_rate']:.3f}, base true reward {rl['base_true_reward']:.3f}.")
    return paths + write_table(tables, NAME, header, body, record, note)
