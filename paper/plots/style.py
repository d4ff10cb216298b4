"""Shared look: readable in greyscale (distinct luminance, line styles and markers per series)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")
RC = {"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7.5, "figure.dpi": 150, "savefig.dpi": 200}


def shade(index: int, count: int) -> tuple[float, float, float, float]:
    """Colour of series `index` of `count`: cividis from dark to light, so greyscale keeps them apart."""
    return plt.get_cmap("cividis")(0.8 * index / max(count - 1, 1))


def save(figure, figures: Path, stem: str) -> list[Path]:
    """Write <stem>.pdf and <stem>.png; no creation date in the PDF, so reruns give identical files."""
    figures.mkdir(parents=True, exist_ok=True)
    paths = [figures / f"{stem}.pdf", figures / f"{stem}.png"]
    figure.savefig(paths[0], metadata={"CreationDate": None})
    figure.savefig(paths[1])
    plt.close(figure)
    return paths
