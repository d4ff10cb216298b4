"""C6: offscreen-text hallucination is what a Bayes predictor does with stripped data.

When data processing strips real outputs with probability s (independently of their content) and
leaves their commentary, the Bayes predictor that sees an empty-looking output describes content with
probability (1-e)s / ((1-e)s + e), e the probability of a genuinely empty output; if the stripping is
marked with its own token, that rate is 0. The commentary copies a visible content (entropy 0), guesses
after a marked stripped output (entropy H(c | command)), and mixes both after an unmarked empty one
(entropy h(r) + r H(c | command)), so marking saves exactly P(looks empty) h(r) nats per document.

Oracle (tests/claims/_oracles_b.py): the story's documents listed branch by branch (command, empty or
content, stripped or kept, commentary), with conditionals as ratios of sums; the closed forms of
theory.claims.c06_offscreen are checked against it and against the library's Bayes conditionals.
"""

from __future__ import annotations

import numpy as np
import pytest
from _oracles_b import entropy, offscreen_story, story_next
from hypothesis import given
from hypothesis import strategies as st

from theory.claims import c06_offscreen as c06
from toymodels.processes.offscreen import offscreen

NUM_COMMANDS, NUM_CONTENTS = 2, 3  # one shape per marking: the HMM filter compiles twice in all
ROWS = 16  # library queries are padded to this many rows (one compilation per shape)
ATOL = 1e-12

# The corners exactly, and interior values away from float64's subnormal range (where the library's
# filter would underflow to zero probability: a numerics limit, not the claim).
probabilities = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(1e-9, 1 - 1e-9))


@st.composite
def configs(draw, marked=(False, True)):
    """Keyword arguments of `offscreen`, with random (sometimes sparse) content and command priors."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    content = rng.dirichlet(np.full(NUM_CONTENTS, 0.7), size=NUM_COMMANDS)
    if draw(st.booleans()):  # some contents impossible after some commands
        content = content * (rng.random(content.shape) < 0.6)
        content[np.arange(NUM_COMMANDS), rng.integers(NUM_CONTENTS, size=NUM_COMMANDS)] += 0.1
        content = content / content.sum(axis=1, keepdims=True)
    command = rng.dirichlet(np.ones(NUM_COMMANDS)) if draw(st.booleans()) else np.eye(NUM_COMMANDS)[0]
    return dict(
        strip_prob=draw(probabilities),
        empty_prob=draw(probabilities),
        marked=draw(st.sampled_from(marked)),
        num_contents=NUM_CONTENTS,
        num_commands=NUM_COMMANDS,
        content_probs=content,
        command_probs=command,
    )


def story(config):
    return offscreen_story(config["strip_prob"], config["empty_prob"], config["content_probs"],
                           config["command_probs"], config["marked"])


def commentary_distributions(process, prefixes) -> np.ndarray:
    """[N, V] the library's Bayes distribution of the commentary after each (command, shown output)."""
    rows = np.zeros((ROWS, 3), np.int64)
    rows[: len(prefixes), :2] = prefixes
    return np.exp(np.asarray(process.log_conditionals(rows))[: len(prefixes), 2])


@given(configs())
def test_bayes_hallucination_rate(config):
    """After (command m, EMPTY) the Bayes probability that the commentary describes content is
    (1-e)s / ((1-e)s + e) unmarked and 0 marked, for every command, by the story and by the library;
    the rest of the mass says "nothing"."""
    process = offscreen(**config)
    docs, layout = story(config)
    assert process.info["empty_token"] == layout["empty"] and process.vocab_size == layout["vocab"]
    s, e, marked = config["strip_prob"], config["empty_prob"], config["marked"]
    if (e if marked else (1 - e) * s + e) == 0:
        with pytest.raises(ValueError, match="empty_prob"):
            c06.hallucination_rate(s, e, marked)
        return
    rate = c06.hallucination_rate(s, e, marked)
    if not marked:
        assert rate == pytest.approx((1 - e) * s / ((1 - e) * s + e), abs=ATOL)
    commands = [layout["commands"][i] for i in range(NUM_COMMANDS) if config["command_probs"][i] > 0]
    library = commentary_distributions(process, [(m, layout["empty"]) for m in commands])
    for m, probs in zip(commands, library):
        oracle = story_next(docs, (m, layout["empty"]), layout["vocab"])
        assert oracle[list(layout["says"])].sum() == pytest.approx(rate, abs=ATOL)
        np.testing.assert_allclose(probs, oracle, rtol=0, atol=ATOL)
        assert probs[layout["nothing"]] == pytest.approx(1 - rate, abs=ATOL)


@given(configs())
def test_commentary_entropy_copying_and_guessing(config):
    """The commentary's entropy is 0 after a visible content (copying), H(c | m) after a marked
    STRIPPED output (guessing), and h(r) + r H(c | m) after EMPTY (0 when marked), by the closed forms,
    the story and the library alike."""
    process = offscreen(**config)
    docs, layout = story(config)
    s, e, marked = config["strip_prob"], config["empty_prob"], config["marked"]
    shown = sorted({doc[:2] for doc in docs})  # every possible (command, shown output)
    library = commentary_distributions(process, shown)
    for prefix, probs in zip(shown, library):
        oracle = story_next(docs, prefix, layout["vocab"])
        np.testing.assert_allclose(probs, oracle, rtol=0, atol=ATOL)
        row = config["content_probs"][layout["commands"].index(prefix[0])]
        if prefix[1] in layout["contents"]:
            expected = c06.commentary_entropy_after_content()
        elif prefix[1] == layout["stripped"]:
            expected = c06.commentary_entropy_after_stripped(row)
            assert expected == pytest.approx(entropy(row), abs=ATOL)
        else:
            expected = c06.commentary_entropy_after_empty(s, e, row, marked)
        assert entropy(oracle) == pytest.approx(expected, abs=1e-9)
        assert entropy(probs) == pytest.approx(expected, abs=1e-9)


@given(configs(marked=(False,)))
def test_marking_saves_exactly_the_stripped_or_empty_ambiguity(config):
    """The Bayes predictor's expected commentary loss E[-log p(commentary | command, shown)] on the
    unmarked data exceeds that on the marked data by P(looks empty) h(r) nats, whatever the contents
    and commands (library conditionals, weighted by the story's document probabilities)."""
    losses = []
    for marked in (False, True):
        settings = dict(config, marked=marked)
        process = offscreen(**settings)
        docs, _ = story(settings)
        prefixes = sorted({doc[:2] for doc in docs})
        library = dict(zip(prefixes, commentary_distributions(process, prefixes)))
        losses.append(sum(prob * -np.log(library[doc[:2]][doc[2]]) for doc, prob in docs.items()))
    s, e = config["strip_prob"], config["empty_prob"]
    assert losses[0] - losses[1] == pytest.approx(c06.marking_loss_reduction(s, e), abs=1e-9)
    assert c06.looks_empty_probability(s, e) == pytest.approx((1 - e) * s + e, abs=ATOL)


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_hallucination_rate_limits(s, e):
    """Stripping nothing (s = 0) or every output empty (e = 1) gives rate 0; stripping everything
    with no empty outputs (s = 1, e = 0) gives rate 1; the rate grows with s and falls with e."""
    assert c06.hallucination_rate(0.0, max(e, 1e-3)) == 0.0
    assert c06.hallucination_rate(max(s, 1e-3), 1.0) == 0.0
    assert c06.hallucination_rate(1.0, 0.0) == 1.0
    if 0 < e < 1 and 0 < s < 1:
        assert c06.hallucination_rate(s, e) <= c06.hallucination_rate(min(1.0, s + 0.1), e)
        assert c06.hallucination_rate(s, e) >= c06.hallucination_rate(s, min(1.0, e + 0.1))
        assert c06.binary_entropy(c06.hallucination_rate(s, e)) <= np.log(2) + ATOL


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: c06.hallucination_rate(1.5, 0.2), "strip_prob"),
        (lambda: c06.hallucination_rate(0.5, -0.2), "empty_prob"),
        (lambda: c06.hallucination_rate(0.0, 0.0), "empty_prob"),
        (lambda: c06.hallucination_rate(0.5, 0.2, marked="yes"), "marked"),
        (lambda: c06.commentary_entropy_after_stripped([0.5, 0.6]), "content_probs_row"),
        (lambda: c06.binary_entropy(2.0), "r"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
