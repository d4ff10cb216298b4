"""The C6 offscreen family's test oracle: the generative story enumerated in plain Python (command m,
true output c or empty, stripped or not, the commentary that output determines) into a table of
documents and their probabilities; helpers that compare the library with it; the strategies that draw
configurations. Shared by test_family_offscreen.py and test_family_offscreen_corners.py.
"""

from __future__ import annotations

import itertools

import brute_force as bf
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from toymodels.processes.offscreen import offscreen

# (num_commands, num_contents): a single command and content (the guess is certain too), and more
# contents than commands. Each shape and marking is a new compilation, so the list is short.
SHAPES = ((1, 1), (2, 3))
LENGTH = 4  # one full document plus one EOD, and every shorter prefix
MAX_PREFIX = LENGTH  # the longest prefix the oracle tabulates
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
