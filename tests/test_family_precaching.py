"""C8's pre-caching process and its Markov control, against their definitions written in the test.

Pre-caching oracle: blocks of d uniform inputs and one answer, the answer the left fold of the inputs
through the Latin-square table (read from info["operation_table"], whose Latin property and, for
"sum", closed form are checked separately). A sequence has probability V^-(number of inputs) if every
answer is right, else 0. Control oracle: first token uniform, then repeat with probability p and move to
each other token with (1 - p) / (V - 1), with p checked to solve the stated entropy equation.

Exact per-position conditional entropies H(X_t | X_<t) come from enumerating every sequence of V^L
with oracle weights: log V at inputs and 0 at answers (rate d / (d + 1) log V); the control has log V
at t = 0 and d / (d + 1) log V at every later position; every position's marginal is uniform in both.
"""

from __future__ import annotations

import brute_force as bf
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_checks import LOG_ATOL

from toymodels.processes.precaching import markov_control, operation_table, precaching, repeat_probability
from toymodels.processes.registry import families, make_process

# (V, d): one-input blocks over two tokens, and two-input blocks over three tokens (longer blocks are
# in test_long_sequences). L = 2(d + 1) covers two whole blocks (so the reset after an answer). Each
# shape is a compilation (several seconds on a loaded 2-core machine), so the list is short.
SHAPES = ((2, 1), (3, 2))
OPERATIONS = ("sum", "permutation")
FEW = max(5, settings().max_examples // 5)


def length_for(delay: int) -> int:
    return 2 * (delay + 1)


# --------------------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------------------


def precaching_reference(table, delay, seqs):
    """(log P(x_<=t) [N, L+1], P(x_t = v | x_<t) [N, L, V] (0 after an impossible prefix),
    accumulator after t tokens [N, L+1] (frozen after an impossible prefix)), from the definition."""
    table = np.asarray(table)
    vocab = table.shape[0]
    seqs = np.asarray(seqs, np.int64)
    n, length = seqs.shape
    log_prefix = np.zeros((n, length + 1))
    cond = np.zeros((n, length, vocab))
    acc = np.zeros((n, length + 1), np.int64)
    g = np.zeros(n, np.int64)
    alive = np.ones(n, bool)
    for t in range(length):
        x = seqs[:, t]
        answer = t % (delay + 1) == delay
        if answer:
            cond[alive, t, g[alive]] = 1.0
            ok = x == g
            step = np.where(ok, 0.0, -np.inf)
        else:
            cond[alive, t] = 1.0 / vocab
            ok = x < vocab
            step = np.where(ok, -np.log(vocab), -np.inf)
        log_prefix[:, t + 1] = np.where(alive, log_prefix[:, t] + step, -np.inf)
        new_alive = alive & ok
        if answer:
            g = np.where(new_alive, 0, g)
        else:
            g = np.where(new_alive, table[np.minimum(x, vocab - 1), g], g)
        alive = new_alive
        acc[:, t + 1] = g
    return log_prefix, cond, acc


def control_kernel(vocab: int, p: float) -> np.ndarray:
    kernel = np.full((vocab, vocab), (1 - p) / max(vocab - 1, 1))
    np.fill_diagonal(kernel, p)
    return kernel


def control_reference(vocab, p, seqs):
    """(P(x) [N], P(x_t = v | x_<t) [N, L, V]) of the control, from its definition (ids >= V: 0)."""
    kernel = control_kernel(vocab, p)
    seqs = np.asarray(seqs, np.int64)
    n, length = seqs.shape
    prob = np.ones(n)
    cond = np.zeros((n, length, vocab))
    for t in range(length):
        row = np.full((n, vocab), 1.0 / vocab) if t == 0 else kernel[np.minimum(seqs[:, t - 1], vocab - 1)]
        cond[:, t] = np.where(prob[:, None] > 0, row, 0.0)
        x = seqs[:, t]
        prob = prob * np.where(x < vocab, row[np.arange(n), np.minimum(x, vocab - 1)], 0.0)
    return prob, cond


def assert_log_matches(log_lib, log_ref, atol=LOG_ATOL):
    log_lib, log_ref = np.asarray(log_lib, np.float64), np.asarray(log_ref, np.float64)
    assert log_lib.shape == log_ref.shape
    assert not np.any(np.isnan(log_lib))
    impossible = np.isneginf(log_ref)
    np.testing.assert_array_equal(np.isneginf(log_lib), impossible)
    np.testing.assert_allclose(log_lib[~impossible], log_ref[~impossible], rtol=0, atol=atol)


def log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)


def position_entropies(log_cond, weights) -> np.ndarray:
    """[L]: H(X_t | X_<t) = -sum_x P(x) log p(x_t | x_<t) summed over full sequences x (the suffix
    marginalises out), from per-sequence log-conditionals [N, L, V] and P(x) [N]."""
    probs = np.exp(log_cond)
    per_prefix = -(probs * np.where(probs > 0, log_cond, 0.0)).sum(axis=-1)  # entropy of each row
    return (weights[:, None] * per_prefix).sum(axis=0)


# --------------------------------------------------------------------------------------------------
# The operation table
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_operation_table_is_a_latin_square(vocab, operation):
    """Every row and every column of the table is a permutation of 0..V-1; "sum" is (g + x) mod V."""
    for seed in range(3):
        table = operation_table(vocab, operation, seed)
        assert table.shape == (vocab, vocab)
        for line in list(table) + list(table.T):
            assert sorted(line) == list(range(vocab))
        if operation == "sum":
            x, g = np.meshgrid(np.arange(vocab), np.arange(vocab), indexing="ij")
            np.testing.assert_array_equal(table, (x + g) % vocab)


def test_permutation_tables_depend_on_seed_and_are_not_sums():
    """Different seeds give different tables, and for V = 5 not the modular sum."""
    tables = {operation_table(5, "permutation", seed).tobytes() for seed in range(10)}
    assert len(tables) > 1
    assert any(not np.array_equal(operation_table(5, "permutation", s), operation_table(5, "sum")) for s in range(10))


# --------------------------------------------------------------------------------------------------
# Exact inference against the definition
# --------------------------------------------------------------------------------------------------


@given(st.sampled_from(SHAPES), st.sampled_from(OPERATIONS), st.integers(0, 2**16))
def test_precaching_matches_definition(shape, operation, seed):
    """Over every sequence of {0..V}^L (id V impossible): log_prob, log_conditionals and the
    "accumulator" and "phase" posteriors equal the definition's; the table in info is the documented one."""
    vocab, delay = shape
    process = precaching(vocab, delay, operation, seed)
    table = np.array(process.info["operation_table"])
    np.testing.assert_array_equal(table, operation_table(vocab, operation, seed))
    seqs = bf.all_sequences(vocab + 1, length_for(delay))
    log_prefix, cond, acc = precaching_reference(table, delay, seqs)
    assert_log_matches(process.log_prob(seqs), log_prefix[:, -1])
    assert_log_matches(process.log_conditionals(seqs), log(cond))
    accumulator = np.asarray(process.posterior(seqs, "accumulator"))
    np.testing.assert_allclose(accumulator, np.eye(vocab)[acc], rtol=0, atol=1e-12)
    phase = np.asarray(process.posterior(seqs, "phase"))
    # the phase is the position in the block, frozen after an impossible token
    last = np.where(np.isneginf(log_prefix), -1, np.arange(length_for(delay) + 1)).max(axis=1)
    frozen = np.minimum(np.arange(length_for(delay) + 1)[None], last[:, None]) % (delay + 1)
    np.testing.assert_allclose(phase, np.eye(delay + 1)[frozen], rtol=0, atol=1e-12)


@given(st.sampled_from(SHAPES), st.sampled_from(OPERATIONS), st.integers(0, 2**16))
def test_precaching_entropies_and_marginals(shape, operation, seed):
    """By enumeration of V^L with the definition's weights: H(X_t | X_<t) is log V at inputs and 0 at
    answers (computed from the library's conditionals), so a block averages d / (d + 1) log V; every
    position's marginal is uniform (the answers too: the table is a Latin square)."""
    vocab, delay = shape
    process = precaching(vocab, delay, operation, seed)
    length = length_for(delay)
    seqs = bf.all_sequences(vocab + 1, length)  # the same batch shape as above: no new compilation
    log_prefix, _, _ = precaching_reference(np.array(process.info["operation_table"]), delay, seqs)
    weights = np.exp(log_prefix[:, -1])
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=0, atol=1e-12)
    entropies = position_entropies(np.asarray(process.log_conditionals(seqs)), weights)
    answers = np.arange(length) % (delay + 1) == delay
    np.testing.assert_allclose(entropies, np.where(answers, 0.0, np.log(vocab)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(entropies[: delay + 1].mean(), delay / (delay + 1) * np.log(vocab), rtol=0, atol=1e-12)
    for t in range(length):
        marginal = np.bincount(np.minimum(seqs[:, t], vocab), weights=weights, minlength=vocab + 1)
        np.testing.assert_allclose(marginal, np.append(np.full(vocab, 1 / vocab), 0.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("vocab, delay", [(2, 1), (3, 2), (4, 1), (8, 5), (64, 4)])
def test_repeat_probability_solves_the_entropy_equation(vocab, delay):
    """p lies in [1/V, 1] and -p log p - (1 - p) log((1 - p) / (V - 1)) = d / (d + 1) log V."""
    p = repeat_probability(vocab, delay)
    assert 1 / vocab <= p <= 1
    row = -p * np.log(p) - (1 - p) * np.log((1 - p) / (vocab - 1))
    np.testing.assert_allclose(row, delay / (delay + 1) * np.log(vocab), rtol=0, atol=1e-12)


@given(st.sampled_from(SHAPES))
def test_control_matches_definition_and_entropy(shape):
    """The control's log_prob and log_conditionals over {0..V}^L equal the definition's (id V
    impossible); H(X_t | X_<t) is log V at t = 0 and d / (d + 1) log V after (library conditionals,
    definition weights); every position's marginal is uniform."""
    vocab, delay = shape
    process = markov_control(vocab, delay)
    p = repeat_probability(vocab, delay)
    length = length_for(delay)
    seqs = bf.all_sequences(vocab + 1, length)
    prob, cond = control_reference(vocab, p, seqs)
    assert_log_matches(process.log_prob(seqs), log(prob))
    log_cond = np.asarray(process.log_conditionals(seqs))
    assert_log_matches(log_cond, log(cond))
    entropies = position_entropies(log_cond, prob)
    expected = np.full(length, delay / (delay + 1) * np.log(vocab))
    expected[0] = np.log(vocab)
    np.testing.assert_allclose(entropies, expected, rtol=0, atol=1e-12)
    for t in range(length):
        marginal = np.bincount(seqs[:, t], weights=prob, minlength=vocab + 1)
        np.testing.assert_allclose(marginal, np.append(np.full(vocab, 1 / vocab), 0.0), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Corners, long sequences, sampling
# --------------------------------------------------------------------------------------------------


def test_deterministic_corners():
    """V = 1: both processes emit 0 forever with probability 1. A wrong answer makes log_prob -inf and
    every later conditional -inf; at an answer position the conditional is one-hot. (The V = 3, d = 2
    rows ride in the enumeration batch of that shape, so nothing new compiles for them.)"""
    rows = np.array([[0] * 7, [0, 0, 1, 0, 0, 0, 0]])
    for process in (precaching(1, 2), markov_control(1, 2)):
        log_prob = np.asarray(process.log_prob(rows))
        assert abs(log_prob[0]) <= 1e-12 and np.isneginf(log_prob[1])
    process = precaching(3, 2, "sum")
    batch = bf.all_sequences(4, length_for(2))
    batch[:2] = [[1, 2, 0, 2, 2, 1], [1, 2, 1, 2, 2, 1]]  # right, then a wrong first answer
    log_cond = np.asarray(process.log_conditionals(batch))[:2]
    log_prob = np.asarray(process.log_prob(batch))[:2]
    np.testing.assert_allclose(log_prob[0], -4 * np.log(3), rtol=1e-14)  # 4 inputs
    assert np.isneginf(log_prob[1])
    assert np.all(np.isneginf(log_cond[1, 3:]))
    for row, t, answer in ((0, 2, 0), (0, 5, 1)):  # (1 + 2) mod 3 = 0, (2 + 2) mod 3 = 1
        assert abs(log_cond[row, t, answer]) <= 1e-12
        assert np.all(np.isneginf(np.delete(log_cond[row, t], answer)))


def test_long_sequences():
    """10^4 sampled tokens: every answer is the fold of its block (the definition); the log-conditionals
    of the observed tokens sum to exactly -(number of inputs) log V. The control, on a 10^4-token
    sequence drawn in NumPy from its definition: they sum to the definition's log-probability. No NaN."""
    vocab, delay, length = 4, 3, 10_000
    process = precaching(vocab, delay, "permutation", 7)
    x = np.asarray(process.sample(jax.random.key(0), 2, length))
    log_prefix, _, _ = precaching_reference(np.array(process.info["operation_table"]), delay, x)
    assert np.all(np.isfinite(log_prefix[:, -1]))
    inputs = np.sum(np.arange(length) % (delay + 1) != delay)
    log_cond = np.asarray(process.log_conditionals(x))
    assert not np.any(np.isnan(log_cond))
    observed = np.take_along_axis(log_cond, x[..., None], axis=-1)[..., 0].sum(axis=1)
    np.testing.assert_allclose(observed, -inputs * np.log(vocab), rtol=1e-12)

    control = markov_control(vocab, delay)
    kernel = control_kernel(vocab, repeat_probability(vocab, delay))
    rng = np.random.default_rng(1)
    y = np.zeros((2, length), np.int64)
    y[:, 0] = rng.integers(vocab, size=2)
    for t in range(1, length):
        y[:, t] = [rng.choice(vocab, p=kernel[v]) for v in y[:, t - 1]]
    log_cond = np.asarray(control.log_conditionals(y))
    assert not np.any(np.isnan(log_cond))
    observed = np.take_along_axis(log_cond, y[..., None], axis=-1)[..., 0].sum(axis=1)
    expected = -np.log(vocab) + np.log(kernel)[y[:, :-1], y[:, 1:]].sum(axis=1)
    np.testing.assert_allclose(observed, expected, rtol=1e-12)


# Calibrated sampling. Pre-caching, V = 3, d = 2, length 4 (one block and one input): the 3^3 = 27
# possible sequences have probability 1/27 each, every other sequence 0 (checked exactly). The control
# adds the 27 cells of V^3. The thorough profile runs at most 100 examples (FEW): Bonferroni over
# 100 * (27 + 27) = 5,400 exact binomial tests at a family-wise false-failure rate of 1e-3 gives a
# per-test level of 1.85e-7 (z about 5.2); with n = 10,000 (370 expected per pre-caching cell, sd 19) a
# cell off by 27% relative is caught.
SAMPLE_N, SAMPLE_L, CONTROL_L = 10_000, 4, 3
SAMPLE_ALPHA = 1e-3 / (100 * (27 + 27))


@settings(max_examples=FEW)
@given(st.sampled_from(OPERATIONS), st.integers(0, 2**16), st.integers(0, 2**32 - 1))
def test_sample_frequencies(operation, table_seed, key_seed):
    """Sequence frequencies of both processes pass exact binomial tests against the definitions."""
    vocab, delay = 3, 2
    process = precaching(vocab, delay, operation, table_seed)
    x = np.asarray(process.sample(jax.random.key(key_seed), SAMPLE_N, SAMPLE_L))
    seqs = bf.all_sequences(vocab, SAMPLE_L)
    probs = np.exp(precaching_reference(np.array(process.info["operation_table"]), delay, seqs)[0][:, -1])
    counts = np.bincount(x @ (vocab ** np.arange(SAMPLE_L - 1, -1, -1)), minlength=vocab**SAMPLE_L)
    assert np.all(counts[probs == 0] == 0)
    assert bf.binomial_pvalues(counts, probs).min() >= SAMPLE_ALPHA

    control = markov_control(vocab, delay)
    y = np.asarray(control.sample(jax.random.key(key_seed + 1), SAMPLE_N, CONTROL_L))
    probs = control_reference(vocab, repeat_probability(vocab, delay), bf.all_sequences(vocab, CONTROL_L))[0]
    counts = np.bincount(y @ (vocab ** np.arange(CONTROL_L - 1, -1, -1)), minlength=vocab**CONTROL_L)
    assert bf.binomial_pvalues(counts, probs).min() >= SAMPLE_ALPHA


# --------------------------------------------------------------------------------------------------
# Registry and boundary checks
# --------------------------------------------------------------------------------------------------


def test_registered_examples_are_small():
    for name in ("precaching", "precaching_control"):
        assert name in families()
    process = make_process("precaching", vocab_size=3, delay=2, operation="permutation", seed=0)
    control = make_process("precaching_control", vocab_size=3, delay=2)
    assert process.vocab_size == control.vocab_size == 3
    assert process.num_states <= 30 and control.num_states <= 30
    assert process.info["block_length"] == control.info["block_length"] == 3
    assert set(process.latents) == {"phase", "accumulator"}


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: precaching(0, 2), "vocab_size"),
        (lambda: precaching(2.5, 2), "vocab_size"),
        (lambda: precaching(True, 2), "vocab_size"),
        (lambda: precaching(3, 0), "delay"),
        (lambda: precaching(3, "2"), "delay"),
        (lambda: precaching(3, 2, "xor"), "operation"),
        (lambda: precaching(3, 2, "permutation", -1), "seed"),
        (lambda: operation_table(3, "sum", 1.5), "seed"),
        (lambda: markov_control(0, 2), "vocab_size"),
        (lambda: markov_control(3, 0), "delay"),
        (lambda: repeat_probability(3, -1), "delay"),
    ],
)
def test_bad_arguments_raise(build, name):
    with pytest.raises(ValueError, match=name):
        build()
