"""C6 offscreen stripping: the family against an oracle written from CLAIMS.md's definition.

The oracle enumerates the generative story in plain Python (command m, true output c or empty,
stripped or not, the commentary that output determines) into a table of documents and their
probabilities, and reads every expected number off it: sequence and prefix probabilities, next-token
conditionals, posteriors over the true output and over stripping. Closed forms of C6 (the hallucination
rate (1-e)s / ((1-e)s + e), zero with marking, commentary entropy 0 when copying and H(c | m) when
guessing) are checked against both the oracle and the library.

Token ids come from `info` (their layout is checked separately); shapes (M commands, K contents,
marked) come from a short list so the jit caches stay small.
"""

from __future__ import annotations

import itertools

import brute_force as bf
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels.processes.offscreen import default_content_probs, offscreen
from toymodels.processes.registry import families, make_process

# (num_commands, num_contents): a single command and content (the guess is certain too), and more
# contents than commands. Each shape and marking is a new compilation, so the list is short.
SHAPES = ((1, 1), (2, 3))
LENGTH = 4  # one full document plus one EOD, and every shorter prefix
MAX_PREFIX = LENGTH  # the longest prefix the oracle tabulates
LOG_ATOL = 1e-9
FEW = max(5, settings().max_examples // 5)


# --------------------------------------------------------------------------------------------------
# The oracle: the generative story, enumerated
# --------------------------------------------------------------------------------------------------


def story(s, e, content, command):
    """[(m, true output c or None, stripped, probability)] for every branch of the story."""
    out = []
    for m, c in itertools.product(range(content.shape[0]), range(content.shape[1])):
        out.append((m, c, False, command[m] * (1 - e) * content[m, c] * (1 - s)))
        out.append((m, c, True, command[m] * (1 - e) * content[m, c] * s))
    out.extend((m, None, False, command[m] * e) for m in range(content.shape[0]))
    return out


class Oracle:
    """Prefix probabilities, conditionals and posteriors of the offscreen process, from the story.

    Tables over every prefix of length t <= MAX_PREFIX, indexed by the prefix read as a base-(V + 1)
    number (id V stands for any impossible id): each branch of the story adds its probability to the
    prefixes of its document followed by EOD; every other prefix has probability 0."""

    def __init__(self, s, e, marked, content, command, info):
        self.vocab = info["eod_token"] + 1
        self.width = self.vocab + 1
        self.eod = info["eod_token"]
        self.branches = []  # (document tokens, true output index (K = empty), stripped, probability)
        k = content.shape[1]
        for m, c, stripped, prob in story(s, e, content, command):
            if c is None:
                shown, said = info["empty_token"], info["nothing_token"]
            else:
                shown = (
                    (info["stripped_token"] if marked else info["empty_token"])
                    if stripped
                    else info["content_tokens"][c]
                )
                said = info["commentary_tokens"][c]
            self.branches.append(((info["command_tokens"][m], shown, said), k if c is None else c, stripped, prob))
        self.num_outputs = k + 1
        self.prefix_prob, self.output_joint, self.stripped_joint = [], [], []
        for t in range(MAX_PREFIX + 1):
            prob, output, stripped = (
                np.zeros(self.width**t),
                np.zeros((self.width**t, k + 1)),
                np.zeros((self.width**t, 2)),
            )
            for document, o, was_stripped, p in self.branches:
                code = self.encode(np.array([(document + (self.eod,) * MAX_PREFIX)[:t]]))[0]
                prob[code] += p
                output[code, o] += p
                stripped[code, int(was_stripped)] += p
            self.prefix_prob.append(prob)
            self.output_joint.append(output)
            self.stripped_joint.append(stripped)

    def encode(self, seqs) -> np.ndarray:
        seqs = np.minimum(np.asarray(seqs, np.int64), self.vocab)
        return seqs @ (self.width ** np.arange(seqs.shape[1] - 1, -1, -1))

    def probs(self, seqs) -> np.ndarray:
        """[N]: P(x) for every row."""
        return self.prefix_prob[np.shape(seqs)[1]][self.encode(seqs)]

    def conditionals(self, seqs) -> np.ndarray:
        """[N, L, V]: P(x_t = v | x_<t); all 0 after an impossible prefix."""
        seqs = np.asarray(seqs, np.int64)
        out = np.zeros(seqs.shape + (self.vocab,))
        for t in range(seqs.shape[1]):
            code = self.encode(seqs[:, :t])
            here = self.prefix_prob[t][code]
            extended = self.prefix_prob[t + 1][code[:, None] * self.width + np.arange(self.vocab)]
            out[:, t] = np.divide(extended, here[:, None], out=np.zeros_like(extended), where=here[:, None] > 0)
        return out

    def posteriors(self, seqs) -> tuple[np.ndarray, np.ndarray]:
        """[N, L+1, K+1] and [N, L+1, 2]: P(latent | x_<=t); the last possible one after an impossible prefix."""
        seqs = np.asarray(seqs, np.int64)
        outputs, strips = [], []
        for t in range(seqs.shape[1] + 1):
            code = self.encode(seqs[:, :t])
            here = self.prefix_prob[t][code][:, None]
            alive = here > 0
            output = np.divide(
                self.output_joint[t][code], here, out=np.zeros((len(seqs), self.num_outputs)), where=alive
            )
            stripped = np.divide(self.stripped_joint[t][code], here, out=np.zeros((len(seqs), 2)), where=alive)
            outputs.append(np.where(alive, output, outputs[-1] if outputs else output))
            strips.append(np.where(alive, stripped, strips[-1] if strips else stripped))
        return np.stack(outputs, axis=1), np.stack(strips, axis=1)

    def prob(self, prefix) -> float:
        return float(self.probs(np.array([prefix], np.int64).reshape(1, len(prefix)))[0])

    def conditional(self, prefix) -> np.ndarray:
        """P(next = v | prefix) for one prefix (all 0 if the prefix is impossible)."""
        padded = np.array([list(prefix) + [0]], np.int64)
        return self.conditionals(padded)[0, -1]


def all_sequences_with_impossible(vocab: int, length: int) -> np.ndarray:
    """Every sequence over {0..V} (id V is impossible) of the given length."""
    return bf.all_sequences(vocab + 1, length)


def assert_log_matches(log_lib, prob_ref, atol=LOG_ATOL):
    log_lib = np.asarray(log_lib, np.float64)
    prob_ref = np.asarray(prob_ref, np.float64)
    assert log_lib.shape == prob_ref.shape
    assert not np.any(np.isnan(log_lib))
    zero = prob_ref == 0
    assert np.all(np.isneginf(log_lib[zero])), "an impossible event has a finite log-probability"
    assert np.all(np.isfinite(log_lib[~zero])), "a possible event has log-probability -inf"
    np.testing.assert_allclose(log_lib[~zero], np.log(prob_ref[~zero]), rtol=0, atol=atol)


def query(process, method: str, rows, *args) -> np.ndarray:
    """process.<method>(rows, *args) for a few rows [n, <= 4], padded with zeros to the enumeration
    batch [(V + 1)^4, 4] of this shape, so that every query reuses the enumeration tests' compilations
    (a new batch shape would compile the filter again, seconds on a loaded 2-core machine). Positions
    < a row's length do not depend on the padding; log_prob needs full rows of length 4."""
    rows = np.asarray(rows, np.int64)
    batch = np.zeros(((process.vocab_size + 1) ** LENGTH, LENGTH), np.int64)
    batch[: len(rows), : rows.shape[1]] = rows
    return np.asarray(getattr(process, method)(batch, *args))[: len(rows)]


def certain(log_p) -> bool:
    """log p = 0 up to float64 rounding: XLA may divide by multiplying with a reciprocal, so a
    probability of exactly 1 can come out 1 ulp short."""
    return bool(abs(float(log_p)) <= 1e-12)


def entropy(p) -> float:
    p = np.asarray(p, np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------

# Exact corners 0, 1 and 1/2, or a float in [1e-6, 1]: XLA on CPU flushes subnormal floats to zero, so
# probabilities whose products fall below 1e-308 are out of the library's range (and of any float64 code).
probabilities = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(1e-6, 1.0))


@st.composite
def configs(draw, shapes=SHAPES, marked=(False, True), positive_rate=False):
    """Keyword arguments of `offscreen`, with explicit (sometimes sparse) content and command priors."""
    m, k = draw(st.sampled_from(shapes))
    if positive_rate:  # both a stripped and a genuinely empty output possible
        s, e = draw(st.floats(0.01, 1.0)), draw(st.floats(0.01, 0.99))
    else:
        s, e = draw(probabilities), draw(probabilities)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    content = rng.dirichlet(np.full(k, 0.7), size=m)
    if draw(st.booleans()):  # sparse rows: some contents impossible after some commands
        mask = rng.random((m, k)) < 0.5
        mask[np.arange(m), rng.integers(k, size=m)] = True
        content = content * mask
        content /= content.sum(axis=1, keepdims=True)
    command = rng.dirichlet(np.ones(m))
    return dict(
        strip_prob=s,
        empty_prob=e,
        marked=draw(st.sampled_from(marked)),
        num_contents=k,
        num_commands=m,
        content_probs=content,
        command_probs=command,
    )


def build(config):
    process = offscreen(**config)
    oracle = Oracle(
        config["strip_prob"],
        config["empty_prob"],
        config["marked"],
        np.asarray(config["content_probs"]),
        np.asarray(config["command_probs"]),
        process.info,
    )
    return process, oracle


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
