"""C6: when data processing strips tool outputs, the Bayes predictor hallucinates commentary on outputs
it never saw (seed 000).

Documents are (command, output, commentary) (`toymodels.processes.offscreen`). The output is genuinely
empty with probability e, else a content c; data processing strips a real output with probability s,
independently of c, so it looks empty, yet the commentary still describes c. A predictor that sees an
empty-looking output cannot tell the two apart, and the Bayes-optimal one describes content (it
hallucinates) with probability (1-e)s / ((1-e)s + e). If stripping leaves its own mark, an empty
output is always genuinely empty and the rate is 0: this hallucination comes from the data, and a
marked version of the data removes it.

The commentary's entropy says which mode the predictor is in: 0 after a visible content (copying),
H(c | command) after a marked stripped output (guessing), and h(r) + r H(c | command) after an unmarked
empty-looking one (r the hallucination rate, h the binary entropy). Marking therefore lowers the
expected commentary loss of the Bayes predictor by exactly P(looks empty) h(r) nats per document.
Assumptions: e is the empty probability before stripping; stripping is independent of the content;
commentary on an empty output never describes content; commentary is an injective function of c.
"""

from __future__ import annotations

import math

import numpy as np

from toymodels.processes.offscreen import offscreen

__all__ = [
    "binary_entropy",
    "commentary_entropy_after_content",
    "commentary_entropy_after_empty",
    "commentary_entropy_after_stripped",
    "hallucination_rate",
    "looks_empty_probability",
    "marking_loss_reduction",
    "offscreen",
]


def _probability(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def _distribution(value, name: str) -> np.ndarray:
    array = np.asarray(value, np.float64)
    if array.ndim != 1 or array.size == 0 or np.any(~np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be a non-empty vector of non-negative probabilities")
    if abs(array.sum() - 1.0) > 1e-9:
        raise ValueError(f"{name} must sum to 1, got {array.sum()}")
    return array


def binary_entropy(r: float) -> float:
    """h(r) = -r log r - (1 - r) log(1 - r) in nats, with 0 log 0 = 0."""
    r = _probability(r, "r")
    return float(sum(-x * math.log(x) for x in (r, 1.0 - r) if x > 0))


def _entropy(probs: np.ndarray) -> float:
    return float(sum(-x * math.log(x) for x in probs if x > 0))


def looks_empty_probability(strip_prob: float, empty_prob: float) -> float:
    """P(the output looks empty) = (1-e)s + e without a mark; with a mark only e shows EMPTY."""
    s, e = _probability(strip_prob, "strip_prob"), _probability(empty_prob, "empty_prob")
    return (1.0 - e) * s + e


def hallucination_rate(strip_prob: float, empty_prob: float, marked: bool = False) -> float:
    """P(commentary describes content | EMPTY shown) under the Bayes predictor, for every command:
    (1-e)s / ((1-e)s + e) unmarked (stripping is independent of the command and the content), and 0
    marked (a stripped output shows its own token, so EMPTY means genuinely empty)."""
    s, e = _probability(strip_prob, "strip_prob"), _probability(empty_prob, "empty_prob")
    if not isinstance(marked, (bool, np.bool_)):
        raise ValueError(f"marked must be True or False, got {marked!r}")
    shows_empty = e if marked else (1.0 - e) * s + e
    if shows_empty == 0.0:
        raise ValueError(
            f"strip_prob={s} and empty_prob={e} make an EMPTY output impossible"
            + ("" if marked else " (both 0)")
            + "; the rate after it is undefined: choose a positive empty_prob"
        )
    return 0.0 if marked else (1.0 - e) * s / shows_empty


def commentary_entropy_after_content() -> float:
    """H(commentary | command, visible content c) = 0: the commentary copies c."""
    return 0.0


def commentary_entropy_after_stripped(content_probs_row) -> float:
    """H(commentary | command m, STRIPPED shown) = H(c | m): a guess with distribution p(c | m)."""
    return _entropy(_distribution(content_probs_row, "content_probs_row"))


def commentary_entropy_after_empty(strip_prob: float, empty_prob: float, content_probs_row, marked: bool = False) -> float:
    """H(commentary | command m, EMPTY shown): h(r) + r H(c | m) unmarked ("say nothing" with
    probability 1 - r, else "say c" with probability r p(c | m)), 0 marked."""
    row = _distribution(content_probs_row, "content_probs_row")
    r = hallucination_rate(strip_prob, empty_prob, marked)
    return binary_entropy(r) + r * _entropy(row)


def marking_loss_reduction(strip_prob: float, empty_prob: float) -> float:
    """Expected commentary loss (nats per document) of the Bayes predictor on unmarked data minus that
    on marked data: P(looks empty) h(r). The mark tells "stripped" from "empty", which is exactly the
    binary uncertainty h(r) of an empty-looking output; the content guess H(c | m) remains either way.
    Independent of the contents and commands. 0 when nothing ever looks empty."""
    shown = looks_empty_probability(strip_prob, empty_prob)
    if shown == 0.0:
        return 0.0
    return shown * binary_entropy(hallucination_rate(strip_prob, empty_prob))
