"""Across-seed summaries the figures draw: the mean and a 95% Student-t half-width per column."""

from __future__ import annotations

import numpy as np
from scipy import stats


def mean_and_half_width(values, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the leading (seed) axis and the half-width of its Student-t interval (0 for one seed)."""
    x = np.asarray(values, np.float64)
    mean = x.mean(axis=0)
    if x.shape[0] < 2:
        return mean, np.zeros_like(mean)
    return mean, stats.t.ppf(0.5 + level / 2, x.shape[0] - 1) * x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])
