"""TableProcess, an explicit distribution over V^L, against sums over the table itself.

The oracle for every prefix probability is a plain sum of table entries over the completions of the
prefix, enumerated with itertools (tests/brute_force.py: table_prefix_prob, prefix_marginals); a second
implementation (HMMProcess) is compared with a TableProcess built from its enumerated sequence
probabilities. Tables are random with zeros (sparse entries, whole impossible first tokens, point
masses), so impossible prefixes and ids >= V are exercised everywhere.

Table shapes (V, L) come from a short fixed list so that jit caches stay small, and token batches are
padded to a fixed number of rows.
"""

from __future__ import annotations

import functools
import itertools

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from log_checks import LOG_ATOL, assert_log_matches
from scipy.special import logsumexp
from strategies import hmms_of_shapes

from toymodels.predictors import Process
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.table import TableProcess

# (V, L): a single token, and tables with 16, 27 and 9 sequences.
TABLE_SHAPES = ((1, 3), (2, 4), (3, 3), (3, 2))
TABLE_STYLES = ("dense", "sparse", "dead_first_token", "point_mass")
ROWS = 625  # (V + 2)^L <= 5^4
FEW = max(5, settings().max_examples // 5)


@st.composite
def tables(draw, shapes=TABLE_SHAPES, styles=TABLE_STYLES):
    """A random table of shape [V] * L (non-negative, summing to 1, usually with zeros)."""
    vocab, length = draw(st.sampled_from(shapes))
    style = draw(st.sampled_from(styles))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = vocab**length
    probs = rng.dirichlet(np.full(size, 0.5))
    if style == "sparse":
        probs *= rng.random(size) < 0.5
    elif style == "dead_first_token" and vocab > 1:
        probs.reshape(vocab, -1)[rng.integers(vocab)] = 0.0  # every sequence starting with that token
    elif style == "point_mass":
        probs = np.zeros(size)
    if probs.sum() == 0:
        probs[rng.integers(size)] = 1.0
    return (probs / probs.sum()).reshape((vocab,) * length)


def enumerate_with_impossible(vocab_size: int, length: int) -> np.ndarray:
    """[ROWS, length]: every sequence over {0..V-1, V, V+5} (the last two impossible), rows repeated."""
    symbols = list(range(vocab_size)) + [vocab_size, vocab_size + 5]
    seqs = np.array(list(itertools.product(symbols, repeat=length)), np.int64).reshape(len(symbols) ** length, length)
    return seqs[np.arange(ROWS) % len(seqs)]


def prefix_oracle(table):
    """P(prefix) by summing the table over completions (memoised per prefix)."""
    return functools.lru_cache(maxsize=None)(lambda prefix: bf.table_prefix_prob(table, prefix))


def expected_conditionals(table, seqs) -> np.ndarray:
    """[N, L, V]: P(x_{t+1} = v | x_<=t) as a ratio of table sums; all 0 after an impossible prefix."""
    vocab = table.shape[0]
    prob = prefix_oracle(table)
    out = np.zeros(seqs.shape + (vocab,))
    for n, row in enumerate(seqs):
        for t in range(seqs.shape[1]):
            prefix = tuple(int(x) for x in row[:t])
            denominator = prob(prefix)
            if denominator > 0:
                out[n, t] = [prob(prefix + (v,)) / denominator for v in range(vocab)]
    return out


# --------------------------------------------------------------------------------------------------
# Exact values against sums over the table
# --------------------------------------------------------------------------------------------------


@given(tables())
def test_log_prob_matches_table(table):
    """log_prob(x) == log table[x] for every x in (V+2)^L; ids >= V and zero entries give exactly -inf."""
    vocab, length = table.shape[0], table.ndim
    process = TableProcess(table)
    seqs = enumerate_with_impossible(vocab, length)
    prob = prefix_oracle(table)
    expected = np.array([prob(tuple(int(x) for x in row)) for row in seqs])
    assert_log_matches(process.log_prob(seqs), expected)


@given(tables(), st.data())
def test_shorter_lengths_are_marginals(table, data):
    """For l < L, log_prob of a length-l sequence is the log of its marginal (the table summed over the
    last L - l tokens), and log_conditionals match the same prefix sums."""
    vocab, length = table.shape[0], table.ndim
    short = data.draw(st.integers(0, length - 1), label="short")
    process = TableProcess(table)
    seqs = enumerate_with_impossible(vocab, short)
    marginal = bf.prefix_marginals(table.reshape(-1), vocab, length, short)  # lexicographic over V^l
    in_vocab = np.all(seqs < vocab, axis=1)
    index = seqs[in_vocab] @ (vocab ** np.arange(short - 1, -1, -1)) if short else np.zeros(in_vocab.sum(), int)
    expected = np.zeros(ROWS)
    expected[in_vocab] = marginal[index]
    assert_log_matches(process.log_prob(seqs), expected)
    assert_log_matches(process.log_conditionals(seqs), expected_conditionals(table, seqs))


@given(tables())
def test_log_conditionals_match_prefix_sums(table):
    """log_conditionals[t, v] == log P(x_<=t v) / P(x_<=t) from table sums where the prefix is possible,
    and -inf for every v after an impossible prefix (zero mass or an id >= V)."""
    vocab, length = table.shape[0], table.ndim
    seqs = enumerate_with_impossible(vocab, length)
    log_cond = np.asarray(TableProcess(table).log_conditionals(seqs))
    assert log_cond.shape == (ROWS, length, vocab)
    expected = expected_conditionals(table, seqs)
    assert_log_matches(log_cond, expected)  # expected rows after an impossible prefix are all 0


@given(tables())
def test_step_matches_prefix_sums(table):
    """init_state(B) then step(token) gives the same conditionals as the table sums (and as
    log_conditionals) at every t < L; never NaN, also after the table's last token."""
    vocab, length = table.shape[0], table.ndim
    process = TableProcess(table)
    seqs = enumerate_with_impossible(vocab, length)
    state, log_next = process.init_state(ROWS)
    outputs = [np.asarray(log_next)]
    for t in range(length):
        state, log_next = process.step(state, jnp.asarray(seqs[:, t], jnp.int32))
        outputs.append(np.asarray(log_next))
    stepped = np.stack(outputs, axis=1)
    assert not np.any(np.isnan(stepped))
    assert_log_matches(stepped[:, :length], expected_conditionals(table, seqs))
    np.testing.assert_allclose(stepped[:, :length], np.asarray(process.log_conditionals(seqs)), rtol=0, atol=1e-12)


# Sampling: each example counts n = 20,000 samples of length l <= L over K = V^l <= 27 sequences and
# runs one exact two-sided binomial test per sequence. The thorough profile runs 500 examples: at most
# 500 * 27 = 13,500 tests; a family-wise false-failure rate of 1e-3 per run gives, by Bonferroni, a
# per-test level of 1e-3 / 13,500 = 7.4e-8 (z about 5.4: a frequency of 1/27 is checked to about 0.007).
SAMPLE_N = 20_000
SAMPLE_ALPHA = 1e-3 / (500 * 27)


@given(tables(), st.data())
def test_sample_frequencies_match_table(table, data):
    """sample(key, n, l) for l <= L: the count of every x in V^l is binomial(n, marginal P(x)) (exact
    binomial test, Bonferroni level over the thorough profile)."""
    vocab, length = table.shape[0], table.ndim
    short = data.draw(st.integers(0, length), label="length")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    x = np.asarray(TableProcess(table).sample(jax.random.key(seed), SAMPLE_N, short))
    assert x.shape == (SAMPLE_N, short) and np.issubdtype(x.dtype, np.integer)
    if short == 0:
        return
    assert x.min() >= 0 and x.max() < vocab
    marginal = bf.prefix_marginals(table.reshape(-1), vocab, length, short)
    counts = np.bincount(x @ (vocab ** np.arange(short - 1, -1, -1)), minlength=vocab**short)
    pvalues = bf.binomial_pvalues(counts, marginal)
    note(f"counts={counts}, expected={SAMPLE_N * marginal}")
    assert pvalues.min() >= SAMPLE_ALPHA


# --------------------------------------------------------------------------------------------------
# Constructors
# --------------------------------------------------------------------------------------------------


@given(tables(), st.floats(-800.0, 800.0), st.integers(0, 2**32 - 1))
def test_from_log_weights_equals_normalised_table(table, offset, seed):
    """from_log_weights(w) is the table exp(w) / sum exp(w) (normalised with scipy's logsumexp), also
    when exp(w) would overflow or underflow and with -inf weights; a flat array with vocab_size works."""
    vocab, length = table.shape[0], table.ndim
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        log_weights = np.log(table) + offset + rng.normal(size=table.shape)  # zeros stay -inf
    expected = np.exp(log_weights - logsumexp(log_weights))
    seqs = bf.all_sequences(vocab, length)
    processes = [TableProcess.from_log_weights(log_weights)]
    if vocab > 1:  # with V = 1 a flat array cannot say its length (1^L = 1 for every L)
        processes.append(TableProcess.from_log_weights(log_weights.reshape(-1), vocab))
    for process in processes:
        assert process.vocab_size == vocab and process.max_length == length
        np.testing.assert_allclose(np.asarray(process.probs()), expected.reshape(-1), rtol=1e-12, atol=0)
        assert_log_matches(process.log_prob(seqs), expected.reshape(-1))


@given(tables(shapes=tuple(shape for shape in TABLE_SHAPES if shape[0] > 1)))
def test_flat_table_with_vocab_size_equals_shaped_table(table):
    """TableProcess(flat, vocab_size=V) gives the same log_prob as TableProcess(table of shape [V] * L)
    and as the table itself (lexicographic order, first token most significant). V > 1: with V = 1 a
    flat array cannot say its length."""
    vocab, length = table.shape[0], table.ndim
    seqs = bf.all_sequences(vocab, length)
    flat = TableProcess(table.reshape(-1), vocab_size=vocab)
    assert flat.vocab_size == vocab and flat.max_length == length
    expected = np.array([table[tuple(row)] for row in seqs])
    assert_log_matches(flat.log_prob(seqs), expected)
    assert_log_matches(TableProcess(table).log_prob(seqs), expected)


@settings(max_examples=FEW)
@given(hmms_of_shapes(shapes=((2, 3), (3, 2))))
def test_table_from_hmm_matches_hmm_process(hmm):
    """A TableProcess built from an HMM's enumerated sequence probabilities over V^4 gives the same
    log_prob and log_conditionals as the HMMProcess itself (two implementations agreeing), including
    the -inf pattern of impossible prefixes."""
    transitions, initial = hmm
    vocab, length = transitions.shape[0], 4
    probs = bf.hmm_sequence_probs(transitions, initial, bf.all_sequences(vocab, length))
    table = TableProcess(probs.reshape((vocab,) * length))
    process = HMMProcess(transitions, initial)
    seqs = enumerate_with_impossible(vocab, length)
    table_cond, hmm_cond = np.asarray(table.log_conditionals(seqs)), np.asarray(process.log_conditionals(seqs))
    np.testing.assert_array_equal(np.isneginf(table_cond), np.isneginf(hmm_cond))
    finite = np.isfinite(hmm_cond)
    np.testing.assert_allclose(table_cond[finite], hmm_cond[finite], rtol=0, atol=LOG_ATOL)
    table_lp, hmm_lp = np.asarray(table.log_prob(seqs)), np.asarray(process.log_prob(seqs))
    np.testing.assert_array_equal(np.isneginf(table_lp), np.isneginf(hmm_lp))
    np.testing.assert_allclose(table_lp[np.isfinite(hmm_lp)], hmm_lp[np.isfinite(hmm_lp)], rtol=0, atol=LOG_ATOL)


def test_metadata_and_protocol():
    """A TableProcess is a Process with vocab_size V, max_length L, no latents (posterior raises
    ValueError), and float32 tables stay float32."""
    table = np.full((2, 2, 2), 1 / 8)
    process = TableProcess(table)
    assert isinstance(process, Process)
    assert process.vocab_size == 2 and process.max_length == 3
    assert process.latents == {}
    with pytest.raises(ValueError):
        process.posterior(np.zeros((1, 2), np.int64))
    single = TableProcess(table.astype(np.float32))
    log_prob = single.log_prob(np.zeros((1, 3), np.int64))
    assert log_prob.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(log_prob), 3 * np.log(0.5), rtol=1e-6)


def test_jit_cache_shared_across_tables():
    """Two different tables of the same shape share the compiled scan: no recompilation."""
    from toymodels.processes import table as table_module

    rng = np.random.default_rng(0)
    first, second = (TableProcess(rng.dirichlet(np.ones(8)).reshape(2, 2, 2)) for _ in range(2))
    seqs = bf.all_sequences(2, 3)
    first.log_prob(seqs)
    size = table_module._prefix_scan._cache_size()
    second.log_prob(seqs)
    assert table_module._prefix_scan._cache_size() == size


# --------------------------------------------------------------------------------------------------
# Errors at the boundary
# --------------------------------------------------------------------------------------------------

UNIFORM = np.full((2, 2, 2), 1 / 8)


@pytest.mark.parametrize(
    "probs, vocab_size, argument",
    [
        pytest.param(0.5 * UNIFORM, None, "probs", id="sums-below-1"),
        pytest.param(2 * UNIFORM, None, "probs", id="sums-above-1"),
        pytest.param(
            np.where(np.arange(8).reshape(2, 2, 2) == 0, -0.125, 0.125 + 0.25 / 7), None, "probs", id="negative"
        ),
        pytest.param(np.where(np.arange(8).reshape(2, 2, 2) == 0, np.nan, 1 / 8), None, "probs", id="nan"),
        pytest.param(np.where(np.arange(8).reshape(2, 2, 2) == 0, np.inf, 1 / 8), None, "probs", id="inf"),
        pytest.param(np.full((2, 3), 1 / 6), None, "probs", id="non-cubic-2x3"),
        pytest.param(np.full((3, 3, 2), 1 / 18), None, "probs", id="non-cubic-3x3x2"),
        pytest.param(np.zeros((0,)), None, "probs", id="empty"),
        pytest.param(UNIFORM.reshape(-1), None, "vocab_size", id="flat-without-vocab_size"),
        pytest.param(np.full(6, 1 / 6), 4, "vocab_size", id="flat-not-a-power"),
        pytest.param(np.full(6, 1 / 6), 1, "vocab_size", id="flat-vocab_size-1"),
        pytest.param(np.full(8, 1 / 8), 0, "vocab_size", id="flat-vocab_size-0"),
        pytest.param(np.full(8, 1 / 8), 2.5, "vocab_size", id="flat-vocab_size-2.5"),
        pytest.param(UNIFORM, 3, "vocab_size", id="vocab_size-disagrees-with-shape"),
        pytest.param(np.full((2, 2), "a"), None, "probs", id="strings"),
    ],
)
def test_bad_tables_raise(probs, vocab_size, argument):
    """A table that is not a distribution over V^L raises ValueError naming the argument."""
    with pytest.raises(ValueError, match=argument):
        TableProcess(probs, vocab_size)


@pytest.mark.parametrize(
    "log_weights, argument",
    [
        pytest.param(np.array([0.0, np.nan]), "log_weights", id="nan"),
        pytest.param(np.array([0.0, np.inf]), "log_weights", id="plus-inf"),
        pytest.param(np.full(4, -np.inf), "log_weights", id="all-minus-inf"),
    ],
)
def test_bad_log_weights_raise(log_weights, argument):
    """from_log_weights with NaN, +inf, or no finite weight raises ValueError naming log_weights."""
    with pytest.raises(ValueError, match=argument):
        TableProcess.from_log_weights(log_weights, 2)


def test_lengths_beyond_the_table_raise():
    """Tokens longer than the table, or a sample longer than the table, raise ValueError naming the
    argument."""
    process = TableProcess(UNIFORM)
    for method in ("log_prob", "log_conditionals"):
        with pytest.raises(ValueError, match="tokens"):
            getattr(process, method)(np.zeros((1, 4), np.int64))
    with pytest.raises(ValueError, match="length"):
        process.sample(jax.random.key(0), 5, 4)


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param(np.array([[0, -1]]), id="negative-id"),
        pytest.param(np.array([0, 1]), id="1-D"),
        pytest.param(np.array([[0.0, 1.0]]), id="float"),
    ],
)
@pytest.mark.parametrize("method", ["log_prob", "log_conditionals"])
def test_bad_tokens_raise(tokens, method):
    """Negative ids, 1-D batches and float tokens raise ValueError naming `tokens`."""
    with pytest.raises(ValueError, match="tokens"):
        getattr(TableProcess(UNIFORM), method)(tokens)


@pytest.mark.parametrize("num_sequences, length, argument", [(0, 2, "num_sequences"), (3, -1, "length")])
def test_bad_sample_sizes_raise(num_sequences, length, argument):
    """sample with num_sequences < 1 or a negative length raises ValueError naming the argument."""
    with pytest.raises(ValueError, match=argument):
        TableProcess(UNIFORM).sample(jax.random.key(0), num_sequences, length)


def test_huge_token_ids_are_impossible_or_rejected():
    """An id far beyond V (not representable in int32) is impossible (-inf) or a ValueError, never read
    as another token."""
    try:
        log_prob = np.asarray(TableProcess(np.full((2, 2), 0.25)).log_prob(np.array([[2**32, 0]], np.int64)))
    except ValueError:
        return
    assert log_prob[0] == -np.inf
