"""C6 offscreen stripping: deterministic corners, long sequences, calibrated sampling, the token layout,
the registry and bad arguments (the story oracle is in offscreen_story.py)."""

from __future__ import annotations

import brute_force as bf
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_checks import assert_log_matches
from offscreen_story import (
    FEW,
    LENGTH,
    Oracle,
    all_sequences_with_impossible,
    build,
    certain,
    configs,
    query,
)

from toymodels.processes.offscreen import default_content_probs, offscreen
from toymodels.processes.registry import families, make_process

# --------------------------------------------------------------------------------------------------
# Deterministic corners
# --------------------------------------------------------------------------------------------------


def test_corners():
    """s = 0: an EMPTY output is genuinely empty (rate 0). s = e = 0: EMPTY is impossible after every
    command. s = 1, e = 0: every output looks empty and the commentary always describes content
    (rate 1). e = 1: no content appears and the commentary always says nothing. (One command and one
    content: a shape the property tests have compiled already.)"""

    def empty_document(p):
        return [[0, p.info["empty_token"], p.info["nothing_token"], p.info["eod_token"]]]

    p = offscreen(0.0, 0.3, num_contents=1, num_commands=1)
    log_cond = query(p, "log_conditionals", empty_document(p))[0, 2]
    assert certain(log_cond[p.info["nothing_token"]])
    assert np.all(np.isneginf(log_cond[list(p.info["commentary_tokens"])]))

    p = offscreen(0.0, 0.0, num_contents=1, num_commands=1)
    log_cond = query(p, "log_conditionals", empty_document(p))[0]
    assert np.isneginf(log_cond[1, p.info["empty_token"]])
    assert np.all(np.isneginf(log_cond[2:]))
    assert np.isneginf(query(p, "log_prob", empty_document(p))[0])

    p = offscreen(1.0, 0.0, num_contents=1, num_commands=1)
    log_cond = query(p, "log_conditionals", empty_document(p))[0]
    assert certain(log_cond[1, p.info["empty_token"]])
    assert np.isneginf(log_cond[2, p.info["nothing_token"]])
    assert certain(log_cond[2, p.info["commentary_tokens"][0]])

    p = offscreen(0.5, 1.0, num_contents=1, num_commands=1)
    log_cond = query(p, "log_conditionals", empty_document(p))[0]
    assert np.all(np.isneginf(log_cond[1, list(p.info["content_tokens"])]))
    assert certain(log_cond[1, p.info["empty_token"]]) and certain(log_cond[2, p.info["nothing_token"]])
    assert certain(log_cond[3, p.info["eod_token"]])
    assert certain(query(p, "log_prob", empty_document(p))[0])


def test_long_sequences_sample_and_score():
    """Samples of 10^4 tokens: a document then EOD forever; log_prob equals the log of the story's
    document probability; no NaN in log_prob or log_conditionals."""
    config = dict(strip_prob=0.3, empty_prob=0.2, marked=False, num_contents=3, num_commands=2)
    process = offscreen(**config)
    oracle = Oracle(0.3, 0.2, False, default_content_probs(2, 3), np.full(2, 0.5), process.info)
    x = np.asarray(process.sample(jax.random.key(3), 4, 10_000))
    assert x.shape == (4, 10_000)
    assert np.all(x[:, 3:] == process.info["eod_token"])
    log_prob = np.asarray(process.log_prob(x))
    np.testing.assert_allclose(log_prob, [np.log(oracle.prob(row[:3])) for row in x], rtol=0, atol=1e-12)
    log_cond = np.asarray(process.log_conditionals(x))
    assert not np.any(np.isnan(log_cond))
    np.testing.assert_allclose(log_cond[:, 3:, process.info["eod_token"]], 0.0, rtol=0, atol=1e-12)


# Calibrated sampling test. Cells: the M(2K + 1) = 14 branches' documents (distinct documents when
# marked; unmarked, a stripped and a genuinely empty output give different commentary, so still
# distinct) plus one cell for everything else (probability 0). The thorough profile runs at most 100
# examples (FEW) of at most 15 cells: Bonferroni over 1,500 exact binomial tests at a family-wise
# false-failure rate of 1e-3 gives a per-test level of 1e-3 / 1,500 = 6.7e-7 (z about 5): with
# n = 10,000 a document of probability 0.05 (sd 22 counts) is caught when off by about 22% relative.
SAMPLE_N = 10_000
SAMPLE_ALPHA = 1e-3 / (100 * 15)


@settings(max_examples=FEW)
@given(configs(shapes=((2, 3),), marked=(True,)), st.integers(0, 2**32 - 1))
def test_sample_frequencies(config, seed):
    """Document frequencies among 10,000 samples pass exact binomial tests against the story's
    probabilities (Bonferroni level above); no sample is a document of probability 0."""
    process, oracle = build(config)
    x = np.asarray(process.sample(jax.random.key(seed), SAMPLE_N, 4))
    documents = sorted({branch[0] for branch in oracle.branches})
    index = {d: i for i, d in enumerate(documents)}
    counts = np.zeros(len(documents) + 1, np.int64)
    for row, n in zip(*np.unique(x, axis=0, return_counts=True)):
        cell = index.get(tuple(row[:3]), len(documents)) if row[3] == process.info["eod_token"] else len(documents)
        counts[cell] += n
    probs = np.array([oracle.prob(d) for d in documents] + [0.0])
    assert counts[-1] == 0
    assert bf.binomial_pvalues(counts, probs).min() >= SAMPLE_ALPHA, (counts, SAMPLE_N * probs)


# --------------------------------------------------------------------------------------------------
# Layout, registry, boundary checks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("marked", [False, True])
def test_token_layout(marked):
    """Token ids are the documented layout: distinct, covering 0..V-1, EOD the last; labels one per id;
    stripped_token exactly when marked; positions 0, 1, 2 and document length 3."""
    m, k = 2, 3
    info = offscreen(0.1, 0.1, marked=marked, num_contents=k, num_commands=m).info
    ids = list(info["command_tokens"]) + list(info["content_tokens"]) + list(info["commentary_tokens"])
    ids += (
        [info["nothing_token"], info["empty_token"]]
        + ([info["stripped_token"]] if marked else [])
        + [info["eod_token"]]
    )
    assert ids == list(range(m + 2 * k + 3 + marked))
    assert ("stripped_token" in info) == marked and info["marked"] == marked
    assert len(info["token_labels"]) == len(ids)
    assert (
        info["command_position"],
        info["output_position"],
        info["commentary_position"],
        info["document_length"],
    ) == (0, 1, 2, 3)


@settings(max_examples=FEW)
@given(configs(marked=(False,)))
def test_reserved_stripped_token_keeps_the_unmarked_distribution(config):
    """reserve_stripped_token=True: the marked process's token layout (STRIPPED included) with the
    unmarked story's probabilities and conditionals (the oracle never shows STRIPPED, so every sequence
    with it is impossible), over every sequence of length 4 with impossible ids."""
    process, oracle = build({**config, "reserve_stripped_token": True})
    assert process.info == {**offscreen(**{**config, "marked": True}).info, "marked": False}
    seqs = all_sequences_with_impossible(process.vocab_size, LENGTH)
    assert_log_matches(process.log_prob(seqs), oracle.probs(seqs))
    assert_log_matches(process.log_conditionals(seqs), oracle.conditionals(seqs))


def test_registered_example_is_small():
    """The registry builds "offscreen" from its example; the example is small enough to enumerate."""
    assert "offscreen" in families()
    process = make_process("offscreen", strip_prob=0.3, empty_prob=0.2, num_contents=2, num_commands=1)
    assert process.vocab_size <= 8 and process.num_states <= 30


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(strip_prob=-0.1, empty_prob=0.2), "strip_prob"),
        (dict(strip_prob=1.5, empty_prob=0.2), "strip_prob"),
        (dict(strip_prob=float("nan"), empty_prob=0.2), "strip_prob"),
        (dict(strip_prob="a", empty_prob=0.2), "strip_prob"),
        (dict(strip_prob=0.2, empty_prob=-1e-3), "empty_prob"),
        (dict(strip_prob=0.2, empty_prob=2.0), "empty_prob"),
        (dict(strip_prob=0.2, empty_prob=0.2, marked="yes"), "marked"),
        (dict(strip_prob=0.2, empty_prob=0.2, reserve_stripped_token=1), "reserve_stripped_token"),
        (dict(strip_prob=0.2, empty_prob=0.2, num_contents=0), "num_contents"),
        (dict(strip_prob=0.2, empty_prob=0.2, num_contents=2.5), "num_contents"),
        (dict(strip_prob=0.2, empty_prob=0.2, num_commands=0), "num_commands"),
        (dict(strip_prob=0.2, empty_prob=0.2, num_commands=True), "num_commands"),
        (
            dict(strip_prob=0.2, empty_prob=0.2, num_commands=1, num_contents=2, content_probs=[[0.5, 0.6]]),
            "content_probs",
        ),
        (
            dict(strip_prob=0.2, empty_prob=0.2, num_commands=1, num_contents=2, content_probs=[[1.0, 0.0, 0.0]]),
            "content_probs",
        ),
        (
            dict(strip_prob=0.2, empty_prob=0.2, num_commands=1, num_contents=2, content_probs=[[1.5, -0.5]]),
            "content_probs",
        ),
        (dict(strip_prob=0.2, empty_prob=0.2, num_commands=2, command_probs=[0.5, 0.6]), "command_probs"),
        (dict(strip_prob=0.2, empty_prob=0.2, num_commands=2, command_probs=[1.0]), "command_probs"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        offscreen(**kwargs)


def test_float32_rows_are_accepted_within_their_rounding():
    """A float32 distribution sums to 1 only within float32 rounding (0.1 + 0.2 + 0.7 = 0.99999999 in
    float64): it is accepted, also in x64 mode, where it was once refused, and the process is exact."""
    rows = np.array([[0.1, 0.2, 0.7]], np.float32)
    process = offscreen(0.3, 0.2, num_contents=3, num_commands=1, content_probs=rows)
    tokens = process.sample(jax.random.key(0), 4, 6)
    assert np.all(np.isfinite(np.asarray(process.log_prob(tokens))))
