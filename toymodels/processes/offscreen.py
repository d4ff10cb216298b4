"""C6: offscreen-text hallucination. Commentary that describes an output the data no longer shows.

A document has three tokens and then the absorbing end-of-document token:

    command m        drawn from command_probs (M commands)
    output           genuinely EMPTY with probability e = empty_prob, else a content c in 1..K drawn from
                     content_probs[m]; data processing then strips a real output with probability
                     s = strip_prob, independently of c: the stripped output shows the EMPTY token, or,
                     when marked=True, a STRIPPED token of its own
    commentary       describes the true output: "say c" for content c (an injective function of c),
                     "say nothing" for a genuinely empty output
    EOD EOD ...

So after a command and an EMPTY-looking output, the Bayes predictor's probability that the commentary
describes content (the hallucination rate) is P(real and stripped) / P(looks empty)
= (1-e)s / ((1-e)s + e), whatever the command; with marking, an EMPTY output is always genuinely empty
and that rate is 0. The commentary after a visible content is a copy (entropy 0); after a STRIPPED
token it is a guess with entropy H(c | command = m).

Finite-state: all randomness is drawn up front, into the hidden state z = (true output, stripped)
(2K + 1 values: (c, kept), (c, stripped), empty), and each phase of the document emits one token from
it. Every state has one successor, so filtering is a standard emit-then-move HMM. Latents:
  "output"    the true output ("c1".."cK" or "empty"): what the commentary has to report
  "stripped"  whether data processing removed a real output ("kept" or "stripped")
"""

from __future__ import annotations

import numpy as np

from toymodels.processes._validation import as_probabilities, device_dtype, sum_tolerance
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import register_family

# Fixed layout: positions (0-based) of the document's tokens; position >= DOCUMENT_LENGTH holds EOD.
COMMAND_POSITION, OUTPUT_POSITION, COMMENTARY_POSITION, DOCUMENT_LENGTH = 0, 1, 2, 3
START, AWAIT_OUTPUT, AWAIT_COMMENTARY, DONE = range(4)


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _probability(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not (np.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def _distribution_rows(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = as_probabilities(value, name, ndim=len(shape)).astype(np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    sums = array.sum(axis=-1)
    tolerance = sum_tolerance(device_dtype(np.asarray(value)))  # rounding of the dtype given, no more
    if not np.allclose(sums, 1.0, rtol=0, atol=tolerance):
        raise ValueError(f"{name} must sum to 1 over its last axis (within {tolerance:g}), got sums {sums}")
    return array / sums[..., None]  # float64, without that rounding (the HMM built from it checks in float64)


def default_content_probs(num_commands: int, num_contents: int) -> np.ndarray:
    """p(c | m): half the mass on content (m mod K), the other half uniform over all K contents, so
    the command is informative without making the content certain."""
    probs = np.full((num_commands, num_contents), 0.5 / num_contents)
    probs[np.arange(num_commands), np.arange(num_commands) % num_contents] += 0.5
    return probs


@register_family("offscreen", example=dict(strip_prob=0.3, empty_prob=0.2, num_contents=2, num_commands=1))
def offscreen(
    strip_prob: float,
    empty_prob: float,
    marked: bool = False,
    num_contents: int = 3,
    num_commands: int = 2,
    content_probs=None,
    command_probs=None,
    reserve_stripped_token: bool = False,
) -> HMMProcess:
    """The offscreen-stripping process of C6 (see the module docstring).

    Args:
        strip_prob: s, the probability that a real (non-empty) output is stripped, independent of c.
        empty_prob: e, the probability of a genuinely empty output (before stripping).
        marked: if True a stripped output shows a STRIPPED token; otherwise the EMPTY token.
        num_contents: K, the number of distinct contents (and of content commentaries).
        num_commands: M, the number of commands.
        content_probs: [M, K], p(c | m) given that the output is real (default: `default_content_probs`).
        command_probs: [M], the distribution of the command (default uniform).
        reserve_stripped_token: unmarked only: keep the STRIPPED id in the vocabulary (never emitted),
            so that the unmarked and the marked process share one vocabulary and a model of one can be
            fine-tuned on the other (C6's "fine-tuning on marked data").

    Token ids (all in `info`): commands 0..M-1, contents M..M+K-1, commentary "say c" M+K..M+2K-1,
    "say nothing" M+2K, EMPTY M+2K+1, STRIPPED M+2K+2 (marked or reserved only), EOD the last id.
    """
    s = _probability(strip_prob, "strip_prob")
    e = _probability(empty_prob, "empty_prob")
    if not isinstance(marked, (bool, np.bool_)):
        raise ValueError(f"marked must be a bool, got {marked!r}")
    if not isinstance(reserve_stripped_token, (bool, np.bool_)):
        raise ValueError(f"reserve_stripped_token must be a bool, got {reserve_stripped_token!r}")
    has_stripped = bool(marked or reserve_stripped_token)
    k = _positive_int(num_contents, "num_contents")
    m = _positive_int(num_commands, "num_commands")
    content = (
        default_content_probs(m, k)
        if content_probs is None
        else _distribution_rows(content_probs, "content_probs", (m, k))
    )
    command = np.full(m, 1.0 / m) if command_probs is None else _distribution_rows(command_probs, "command_probs", (m,))

    commands = tuple(range(m))
    contents = tuple(range(m, m + k))
    commentary = tuple(range(m + k, m + 2 * k))
    nothing = m + 2 * k
    empty = nothing + 1
    stripped = empty + 1 if has_stripped else None
    eod = empty + (2 if has_stripped else 1)
    vocab = eod + 1

    # z: 0..K-1 (c, kept), K..2K-1 (c, stripped), 2K genuinely empty. P(m, z) for the initial draw.
    num_z = 2 * k + 1
    joint = np.zeros((m, num_z))
    joint[:, :k] = command[:, None] * (1 - e) * content * (1 - s)
    joint[:, k : 2 * k] = command[:, None] * (1 - e) * content * s
    joint[:, 2 * k] = command * e
    prior_z = joint.sum(axis=0)

    def state(phase: int, z: int) -> int:
        return phase * num_z + z

    t = np.zeros((vocab, 4 * num_z, 4 * num_z))
    for z in range(num_z):
        # The command given the drawn output; an output of prior probability 0 is unreachable, and
        # any distribution keeps its row stochastic.
        given_z = joint[:, z] / prior_z[z] if prior_z[z] > 0 else np.full(m, 1.0 / m)
        t[list(commands), state(START, z), state(AWAIT_OUTPUT, z)] = given_z
        c = z % k
        if z < k:
            shown, said = contents[c], commentary[c]
        elif z < 2 * k:
            shown, said = (stripped if marked else empty), commentary[c]
        else:
            shown, said = empty, nothing
        t[shown, state(AWAIT_OUTPUT, z), state(AWAIT_COMMENTARY, z)] = 1.0
        t[said, state(AWAIT_COMMENTARY, z), state(DONE, z)] = 1.0
        t[eod, state(DONE, z), state(DONE, z)] = 1.0
    initial = np.zeros(4 * num_z)
    initial[[state(START, z) for z in range(num_z)]] = prior_z

    z_output = np.array([c for c in range(k)] * 2 + [k])
    z_stripped = np.array([0] * k + [1] * k + [0])
    labels = (
        [f"cmd{i + 1}" for i in range(m)]
        + [f"out:c{c + 1}" for c in range(k)]
        + [f"say:c{c + 1}" for c in range(k)]
        + ["say:nothing", "EMPTY"]
        + (["STRIPPED"] if has_stripped else [])
        + ["EOD"]
    )
    info = {
        "family": "offscreen",
        "marked": bool(marked),
        "command_tokens": commands,
        "content_tokens": contents,
        "commentary_tokens": commentary,
        "nothing_token": nothing,
        "empty_token": empty,
        "eod_token": eod,
        "command_position": COMMAND_POSITION,
        "output_position": OUTPUT_POSITION,
        "commentary_position": COMMENTARY_POSITION,
        "document_length": DOCUMENT_LENGTH,
        "token_labels": tuple(labels),
    }
    if has_stripped:
        info["stripped_token"] = stripped
    return HMMProcess(
        t,
        initial,
        latents={
            "output": (tuple(f"c{c + 1}" for c in range(k)) + ("empty",), np.tile(z_output, 4)),
            "stripped": (("kept", "stripped"), np.tile(z_stripped, 4)),
        },
        info=info,
    )
