"""C6 offscreen stripping: the family against an oracle written from CLAIMS.md's definition.

The oracle (offscreen_story.py) enumerates the generative story in plain Python into a table of
documents and their probabilities, and every expected number is read off it: sequence and prefix
probabilities, next-token conditionals, posteriors over the true output and over stripping. Closed
forms of C6 (the hallucination rate (1-e)s / ((1-e)s + e), zero with marking, commentary entropy 0 when
copying and H(c | m) when guessing) are checked against both the oracle and the library. Corners,
sampling, layout and bad arguments: test_family_offscreen_corners.py.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from log_checks import assert_log_matches
from offscreen_story import (
    LENGTH,
    Oracle,
    all_sequences_with_impossible,
    build,
    certain,
    configs,
    entropy,
    query,
)

from toymodels.processes.offscreen import default_content_probs, offscreen

# --------------------------------------------------------------------------------------------------
# Exact inference against the oracle
# --------------------------------------------------------------------------------------------------


@given(configs())
def test_probabilities_and_conditionals_match_story(config):
    """log_prob of every sequence over {0..V} of length 4 (id V impossible), and log_conditionals at
    every position, equal the logs of the story's probabilities: -inf exactly where they are 0."""
    process, oracle = build(config)
    seqs = all_sequences_with_impossible(process.vocab_size, LENGTH)
    assert_log_matches(process.log_prob(seqs), oracle.probs(seqs))
    assert_log_matches(process.log_conditionals(seqs), oracle.conditionals(seqs))


@given(configs())
def test_posteriors_match_story(config):
    """posterior("output") and posterior("stripped") after t tokens equal P(latent | x_<=t) from the
    story, entry 0 the prior; after an impossible token they stay at the last possible posterior."""
    process, oracle = build(config)
    seqs = all_sequences_with_impossible(process.vocab_size, LENGTH)
    expected_output, expected_stripped = oracle.posteriors(seqs)
    output = np.asarray(process.posterior(seqs, "output"))
    stripped = np.asarray(process.posterior(seqs, "stripped"))
    assert not np.any(np.isnan(output)) and not np.any(np.isnan(stripped))
    np.testing.assert_allclose(output, expected_output, rtol=0, atol=1e-12)
    np.testing.assert_allclose(stripped, expected_stripped, rtol=0, atol=1e-12)
    assert process.latents["output"] == tuple(f"c{c + 1}" for c in range(config["num_contents"])) + ("empty",)
    assert process.latents["stripped"] == ("kept", "stripped")


# --------------------------------------------------------------------------------------------------
# C6's closed forms
# --------------------------------------------------------------------------------------------------


def hallucination_rate(s, e):
    return (1 - e) * s / ((1 - e) * s + e)


@given(configs(marked=(False,)))
def test_hallucination_rate_after_empty_output(config):
    """Unmarked: after (m, EMPTY) the Bayes probability that the commentary describes content is
    (1-e)s / ((1-e)s + e) for every command m, from log_conditionals, from posterior("output"), from
    posterior("stripped") and from the story alike; EMPTY is impossible when (1-e)s + e = 0."""
    process, oracle = build(config)
    s, e = config["strip_prob"], config["empty_prob"]
    info = process.info
    rows = np.array([[m, info["empty_token"], info["nothing_token"]] for m in info["command_tokens"]])
    log_cond = query(process, "log_conditionals", rows)[:, 2]
    output = query(process, "posterior", rows, "output")[:, 2]
    stripped = query(process, "posterior", rows, "stripped")[:, 2]
    for i, m in enumerate(info["command_tokens"]):
        if (1 - e) * s + e == 0 or config["command_probs"][i] == 0:
            assert oracle.prob((m, info["empty_token"])) == 0
            assert np.all(np.isneginf(log_cond[i]))
            continue
        rate = hallucination_rate(s, e)
        describes = np.exp(log_cond[i, list(info["commentary_tokens"])]).sum()
        np.testing.assert_allclose(describes, rate, rtol=0, atol=1e-12)
        story = oracle.conditional((m, info["empty_token"]))[list(info["commentary_tokens"])].sum()
        np.testing.assert_allclose(story, rate, rtol=0, atol=1e-12)
        np.testing.assert_allclose(output[i, :-1].sum(), rate, rtol=0, atol=1e-12)
        np.testing.assert_allclose(stripped[i, 1], rate, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.exp(log_cond[i, info["nothing_token"]]), 1 - rate, rtol=0, atol=1e-12)


@given(configs(marked=(True,), positive_rate=True))
def test_marking_removes_hallucination(config):
    """Marked: after (m, EMPTY) the commentary says nothing with probability 1 (every content
    commentary exactly -inf): hallucination rate 0. After (m, STRIPPED) the commentary is a guess with
    distribution p(. | m), entropy H(c | m); its average over the commands seen with STRIPPED is
    H(c | command) = sum_m P(m) H(c | m)."""
    process, oracle = build(config)
    info = process.info
    content, command = np.asarray(config["content_probs"]), np.asarray(config["command_probs"])
    rows = np.array(
        [[m, info["empty_token"], 0] for m in info["command_tokens"]]
        + [[m, info["stripped_token"], 0] for m in info["command_tokens"]]
    )
    log_cond = query(process, "log_conditionals", rows)[:, 2]
    probs = np.exp(log_cond)
    num = len(info["command_tokens"])
    for i in range(num):
        if command[i] == 0:
            assert np.all(np.isneginf(log_cond[i])) and np.all(np.isneginf(log_cond[num + i]))
            continue
        assert np.all(np.isneginf(log_cond[i, list(info["commentary_tokens"])]))
        assert certain(log_cond[i, info["nothing_token"]])
        guess = probs[num + i, list(info["commentary_tokens"])]
        np.testing.assert_allclose(guess, content[i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(entropy(probs[num + i]), entropy(content[i]), rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            guess,
            oracle.conditional((info["command_tokens"][i], info["stripped_token"]))[list(info["commentary_tokens"])],
            rtol=0,
            atol=1e-12,
        )
    # P(m | STRIPPED shown) = P(m): stripping is independent of the command
    seen = np.array([oracle.prob((m, info["stripped_token"])) for m in info["command_tokens"]])
    weights = seen / seen.sum()
    np.testing.assert_allclose(weights, command, rtol=0, atol=1e-12)
    average = sum(w * entropy(probs[num + i]) for i, w in enumerate(weights) if w > 0)
    h_c_given_command = sum(command[i] * entropy(content[i]) for i in range(num))
    np.testing.assert_allclose(average, h_c_given_command, rtol=0, atol=1e-12)


@given(configs())
def test_commentary_copies_visible_content(config):
    """After (m, content c) the commentary is "say c" with probability exactly 1: entropy 0 (copying)."""
    process, oracle = build(config)
    info = process.info
    rows, expected = [], []
    for (i, m), (c, shown) in itertools.product(enumerate(info["command_tokens"]), enumerate(info["content_tokens"])):
        if oracle.prob((m, shown)) > 0:
            rows.append([m, shown, 0])
            expected.append(info["commentary_tokens"][c])
    if not rows:
        return
    log_cond = query(process, "log_conditionals", rows)[:, 2]
    hit = np.zeros(log_cond.shape, bool)
    hit[np.arange(len(rows)), expected] = True
    assert np.all(np.isneginf(log_cond[~hit]))
    np.testing.assert_allclose(log_cond[hit], 0.0, rtol=0, atol=1e-12)


def test_commentary_entropy_copying_versus_guessing():
    """With the default p(c | m) (half on content m mod K, half uniform), the commentary's entropy is
    0 after every visible content and H(c | m) after STRIPPED, computed from log_conditionals and from
    the story; the guessing entropy is positive, so the two differ."""
    config = dict(strip_prob=0.4, empty_prob=0.25, marked=True, num_contents=3, num_commands=2)
    content = default_content_probs(2, 3)
    process = offscreen(**config)
    oracle = Oracle(0.4, 0.25, True, content, np.full(2, 0.5), process.info)
    info = process.info
    for i, m in enumerate(info["command_tokens"]):
        rows = np.array([[m, shown, 0] for shown in info["content_tokens"] + (info["stripped_token"],)])
        log_cond = query(process, "log_conditionals", rows)[:, 2]
        probs = np.exp(log_cond)
        entropies = [entropy(p) for p in probs]
        np.testing.assert_allclose(entropies[:-1], 0.0, rtol=0, atol=1e-12)
        story = oracle.conditional((m, info["stripped_token"]))
        np.testing.assert_allclose(entropies[-1], entropy(story), rtol=0, atol=1e-12)
        np.testing.assert_allclose(entropies[-1], entropy(content[i]), rtol=0, atol=1e-12)
        assert entropies[-1] > 0.5
