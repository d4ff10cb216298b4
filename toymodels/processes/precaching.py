"""C8: a process where computation at early positions helps only later tokens, and its Markov control.

`precaching(vocab_size, delay, operation, seed)` repeats blocks of d + 1 tokens (d = delay, V tokens):

    x_1 .. x_d   i.i.d. uniform on {0..V-1}: no token says anything about the next one
    a            = g_d, the fold g_0 = 0, g_i = table[x_i, g_{i-1}], a deterministic function of the block

Blocks start at position 0, so position t (0-based) is an answer iff t mod (d + 1) = d. The table is a
Latin square (every row and column a permutation), so every g_i, every answer, and hence every token
is uniform on its own: the unigram statistics carry nothing. Two tables:
  "sum"          table[x, g] = (g + x) mod V: the answer is the sum of the block mod V.
  "permutation"  table[x, g] = tau((alpha(x) + beta(g)) mod V) with alpha, beta, tau random permutations
                 (numpy seed): each input applies its own permutation to the accumulator, and the order
                 of the inputs matters (no count of the inputs determines the answer).
Per-position conditional entropies are exactly log V at inputs and 0 at answers: an entropy rate of
d / (d + 1) log V nats per token.

Why early pre-computation helps, and only with gradients from later positions: at an answer position
a predictor must output f(x_1..x_d). It can compute f there from scratch, reading all d inputs at once,
but a sequential fold done that way needs depth that grows with d. The cheap solution carries the
running accumulator g_i forward, computing it at input position i from x_i and g_{i-1}. That work is
worthless for the loss at input positions (the next input is uniform whatever the model has
computed), so the only training signal that can build it is the gradient of the *answer's* loss flowing
back into the earlier positions' keys and values. Myopic training (stop-gradient on earlier keys and
values) removes exactly that signal. For "sum" a shortcut exists (attention can count the inputs and an
MLP reduce the counts mod V); "permutation" has none, so it is the sharper test.

`markov_control(vocab_size, delay)` is a first-order Markov chain with the same entropy rate and the same
unigram statistics, where nothing can be pre-computed (the next token depends on the current one
only): the first token is uniform; then repeat the last token with probability p, else move to each
other token with (1 - p) / (V - 1). The kernel is doubly stochastic, so every token is uniform, and p in
[1/V, 1] solves H(p) + (1 - p) log(V - 1) = d / (d + 1) log V, so every position after the first has
conditional entropy d / (d + 1) log V (the first has log V, as in `precaching`).
"""

from __future__ import annotations

import numpy as np

from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import register_family

OPERATIONS = ("sum", "permutation")


def _int_at_least(value, name: str, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def operation_table(vocab_size: int, operation: str = "sum", seed: int = 0) -> np.ndarray:
    """[V, V] int table with table[x, g] = the accumulator after input x from accumulator g; a Latin
    square (see the module docstring)."""
    vocab = _int_at_least(vocab_size, "vocab_size", 1)
    seed = _int_at_least(seed, "seed", 0)
    values = np.arange(vocab)
    if operation == "sum":
        return (values[None, :] + values[:, None]) % vocab
    if operation == "permutation":
        rng = np.random.default_rng(seed)
        alpha, beta, tau = rng.permutation(vocab), rng.permutation(vocab), rng.permutation(vocab)
        return tau[(alpha[:, None] + beta[None, :]) % vocab]
    raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}")


@register_family("precaching", example=dict(vocab_size=3, delay=2, operation="permutation", seed=0))
def precaching(vocab_size: int, delay: int, operation: str = "permutation", seed: int = 0) -> HMMProcess:
    """Blocks of `delay` uniform inputs and one answer, the fold of the inputs through `operation`'s
    table (see the module docstring); defined at every length.

    Hidden states: "start" (a block begins, g = 0) and (i, g) for i = 1..d inputs seen with accumulator
    g: S = 1 + dV. Latents: "phase" (inputs of the current block seen so far, "0".."d"; at phase d the
    next token is the answer) and "accumulator" (g, "g0".."g{V-1}"; g0 at a block's start).
    """
    vocab = _int_at_least(vocab_size, "vocab_size", 1)
    d = _int_at_least(delay, "delay", 1)
    table = operation_table(vocab, operation, seed)

    def state(phase: int, g: int) -> int:
        return 0 if phase == 0 else 1 + (phase - 1) * vocab + g

    num_states = 1 + d * vocab
    t = np.zeros((vocab, num_states, num_states))
    for phase in range(d):
        for g in range(vocab) if phase > 0 else (0,):
            for x in range(vocab):
                t[x, state(phase, g), state(phase + 1, table[x, g])] = 1.0 / vocab
    for g in range(vocab):
        t[g, state(d, g), state(0, 0)] = 1.0  # the answer, then a fresh block
    initial = np.zeros(num_states)
    initial[state(0, 0)] = 1.0
    phase_of = np.array([0] + [p for p in range(1, d + 1) for _ in range(vocab)])
    accumulator_of = np.array([0] + [g for _ in range(d) for g in range(vocab)])
    return HMMProcess(
        t,
        initial,
        latents={
            "phase": (tuple(str(p) for p in range(d + 1)), phase_of),
            "accumulator": (tuple(f"g{g}" for g in range(vocab)), accumulator_of),
        },
        info={
            "family": "precaching",
            "delay": d,
            "block_length": d + 1,
            "operation": operation,
            "operation_table": tuple(tuple(int(v) for v in row) for row in table),
        },
    )


def _row_entropy(p: float, vocab: int) -> float:
    """Entropy (nats) of the row (p on the last token, (1 - p) / (V - 1) on each other)."""
    out = 0.0 if p in (0.0, 1.0) else -p * np.log(p)
    if p < 1.0:
        rest = (1.0 - p) / (vocab - 1)
        out -= (vocab - 1) * rest * np.log(rest)
    return out


def repeat_probability(vocab_size: int, delay: int) -> float:
    """The p in [1/V, 1] whose repeat row has entropy d / (d + 1) log V (bisection: the row entropy
    falls strictly from log V at p = 1/V to 0 at p = 1)."""
    vocab = _int_at_least(vocab_size, "vocab_size", 1)
    d = _int_at_least(delay, "delay", 1)
    if vocab == 1:
        return 1.0
    target = d / (d + 1) * np.log(vocab)
    low, high = 1.0 / vocab, 1.0
    for _ in range(200):  # far past float64 resolution; the interval stops shrinking well before
        middle = 0.5 * (low + high)
        if _row_entropy(middle, vocab) > target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@register_family("precaching_control", example=dict(vocab_size=3, delay=2))
def markov_control(vocab_size: int, delay: int) -> HMMProcess:
    """The Markov control of `precaching(vocab_size, delay)`: matched entropy rate d / (d + 1) log V and
    matched (uniform) unigram statistics (see the module docstring). Hidden states: "start" and the last
    token; the latent "last_token" names them."""
    vocab = _int_at_least(vocab_size, "vocab_size", 1)
    d = _int_at_least(delay, "delay", 1)
    p = repeat_probability(vocab, d)
    kernel = np.full((vocab, vocab), (1.0 - p) / max(vocab - 1, 1))
    np.fill_diagonal(kernel, p)
    num_states = vocab + 1  # 0: start; 1 + v: last token v
    t = np.zeros((vocab, num_states, num_states))
    for v in range(vocab):
        t[v, 0, 1 + v] = 1.0 / vocab
        t[v, 1:, 1 + v] = kernel[:, v]
    initial = np.zeros(num_states)
    initial[0] = 1.0
    return HMMProcess(
        t,
        initial,
        latents={"last_token": (("start",) + tuple(str(v) for v in range(vocab)), np.arange(num_states))},
        info={"family": "precaching_control", "delay": d, "block_length": d + 1},
    )
