"""Tests of toymodels/sampling.py (`generate`): exact sampling distributions, temperature, greedy decoding,
prompts, the shared key schedule of the incremental and the recompute paths, boundary errors and jit
caching.

Frequencies are compared with exact sequence probabilities from path enumeration (tests/brute_force.py)
by two-sided exact binomial tests, one per sequence. Significance: every binomial test runs at level
ALPHA_PER_TEST = 2e-9, and no Hypothesis example of any test here runs more than 100 of them, so under
the thorough profile (500 examples) a correct sampler fails a given test with probability at most
500 * 100 * 2e-9 = 1e-4 (Bonferroni over sequences, union bound over examples). With N = 20000 samples a
test at that level (|z| ~ 6) still detects a probability that is off by about 0.01 at p = 0.05.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from brute_force import all_sequences, hmm_sequence_probs, sequence_probs_from_conditionals
from brute_force_pq import hmm_conditional, tempered_definition
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.stats import binomtest
from strategies import embed_hmm, hmms, random_hmm
from wrappers import ConditionalsOnly

from toymodels.predictors import with_temperature
from toymodels.processes import HMMProcess
from toymodels.sampling import _generate_incremental, _generate_recompute, generate

V = 3
LENGTH = 3
NUM_SAMPLES = 20_000
ALPHA_PER_TEST = 2e-9
seeds = st.integers(0, 2**31 - 1)
taus = st.one_of(st.sampled_from([0.3, 3.0]), st.floats(0.2, 5.0))


def process(arrays) -> HMMProcess:
    return HMMProcess(*embed_hmm(*arrays, vocab_size=V))




def sequence_index(tokens, vocab) -> np.ndarray:
    tokens = np.asarray(tokens)
    return tokens @ (vocab ** np.arange(tokens.shape[1] - 1, -1, -1))


def assert_frequencies_match(tokens, probs, vocab):
    """Rows of `tokens` (all in range) occur with the exact probabilities `probs` over vocab^L:
    zero-probability sequences never, the others each pass a binomial test at ALPHA_PER_TEST."""
    tokens = np.asarray(tokens)
    assert tokens.min() >= 0 and tokens.max() < vocab
    counts = np.bincount(sequence_index(tokens, vocab), minlength=vocab ** tokens.shape[1])
    assert np.all(counts[probs == 0] == 0), "a sequence of probability zero was generated"
    positive = np.flatnonzero(probs > 0)
    assert len(positive) <= 100
    for index in positive:
        p_value = binomtest(int(counts[index]), len(tokens), min(1.0, float(probs[index]))).pvalue
        assert p_value >= ALPHA_PER_TEST, (index, counts[index], len(tokens) * probs[index], p_value)


@given(q_arrays=hmms(), seed=seeds)
def test_step_and_recompute_share_keys_and_match_exact_probabilities(q_arrays, seed):
    """With or without init_state/step: identical tokens for one key, frequencies = exact probabilities."""
    q = process(q_arrays)
    key, other = jax.random.split(jax.random.PRNGKey(seed))
    stepped = np.asarray(generate(q, key, NUM_SAMPLES, LENGTH))
    recomputed = np.asarray(generate(ConditionalsOnly(q), key, NUM_SAMPLES, LENGTH))
    assert stepped.shape == (NUM_SAMPLES, LENGTH)
    np.testing.assert_array_equal(stepped, recomputed)
    probs = hmm_sequence_probs(*q_arrays, all_sequences(V, LENGTH))
    assert_frequencies_match(stepped, probs, V)
    assert_frequencies_match(generate(ConditionalsOnly(q), other, NUM_SAMPLES, LENGTH), probs, V)


@given(q_arrays=hmms(), tau=taus, seed=seeds)
def test_temperature_samples_the_tempered_predictor(q_arrays, tau, seed):
    """generate(q, temperature=tau) = generate(with_temperature(q, tau)) token for token, at q^(1/tau)."""
    q = process(q_arrays)
    key = jax.random.PRNGKey(seed)
    hot = np.asarray(generate(q, key, NUM_SAMPLES, LENGTH, temperature=tau))
    np.testing.assert_array_equal(hot, np.asarray(generate(with_temperature(q, tau), key, NUM_SAMPLES, LENGTH)))
    expected = sequence_probs_from_conditionals(tempered_definition(hmm_conditional(*q_arrays, V), tau), V, LENGTH)
    assert_frequencies_match(hot, expected, V)


@given(q_arrays=hmms(), seed=seeds)
def test_temperature_zero_is_greedy(q_arrays, seed):
    """temperature=0 picks the argmax of the exact conditional at every step, whatever the key."""
    cond = hmm_conditional(*q_arrays, V)
    path: tuple[int, ...] = ()
    for _ in range(LENGTH):
        probs = np.sort(cond(path))
        assume(probs[-1] - probs[-2] > 1e-9)  # a unique argmax
        path += (int(np.argmax(cond(path))),)
    q = process(q_arrays)
    for predictor in (q, ConditionalsOnly(q)):
        for key in (jax.random.PRNGKey(seed), jax.random.PRNGKey(seed + 1)):
            out = np.asarray(generate(predictor, key, 8, LENGTH, temperature=0.0))
            np.testing.assert_array_equal(out, np.broadcast_to(path, out.shape))


def positive_prompt(draw, q_arrays, length):
    """A prompt of positive probability under q."""
    prompt = draw(st.lists(st.integers(0, V - 1), min_size=length, max_size=length))
    assume(hmm_sequence_probs(*q_arrays, np.array([prompt], np.int64))[0] > 0)
    return prompt


@given(q_arrays=hmms(), seed=seeds, data=st.data())
def test_shared_prompt_is_kept_and_conditions_generation(q_arrays, seed, data):
    """A 1-D prompt is copied verbatim into every row, and the continuation follows P(. | prompt)."""
    prompt = positive_prompt(data.draw, q_arrays, 2)
    q = process(q_arrays)
    key = jax.random.PRNGKey(seed)
    out = np.asarray(generate(q, key, NUM_SAMPLES, 2, prompt=np.array(prompt)))
    assert out.shape == (NUM_SAMPLES, 4)
    np.testing.assert_array_equal(out[:, :2], np.broadcast_to(prompt, (NUM_SAMPLES, 2)))
    np.testing.assert_array_equal(out, np.asarray(generate(ConditionalsOnly(q), key, NUM_SAMPLES, 2, prompt=np.array(prompt))))
    joint = hmm_sequence_probs(*q_arrays, np.concatenate([np.broadcast_to(prompt, (V**2, 2)), all_sequences(V, 2)], axis=1))
    assert_frequencies_match(out[:, 2:], joint / joint.sum(), V)


@given(q_arrays=hmms(), seed=seeds, data=st.data())
def test_per_row_prompts_are_kept_and_condition_generation(q_arrays, seed, data):
    """A 2-D prompt gives each row its own prefix, kept verbatim, and each row continues from its own."""
    first, second = positive_prompt(data.draw, q_arrays, 2), positive_prompt(data.draw, q_arrays, 2)
    half = NUM_SAMPLES // 2
    prompts = np.array([first] * half + [second] * half)
    q = process(q_arrays)
    key = jax.random.PRNGKey(seed)
    out = np.asarray(generate(q, key, NUM_SAMPLES, 2, prompt=prompts))
    np.testing.assert_array_equal(out[:, :2], prompts)
    np.testing.assert_array_equal(out, np.asarray(generate(ConditionalsOnly(q), key, NUM_SAMPLES, 2, prompt=prompts)))
    for rows, prompt in ((slice(0, half), first), (slice(half, None), second)):
        joint = hmm_sequence_probs(*q_arrays, np.concatenate([np.broadcast_to(prompt, (V**2, 2)), all_sequences(V, 2)], axis=1))
        assert_frequencies_match(out[rows, 2:], joint / joint.sum(), V)


def test_zero_length_returns_the_prompt():
    """length=0 returns the prompt itself (or an empty [B, 0] array without one), on both paths."""
    q = process(random_hmm(np.random.default_rng(0), 3, 2, "dense"))
    prompts = np.array([[0, 1, 2], [2, 2, 0]])
    for predictor in (q, ConditionalsOnly(q)):
        np.testing.assert_array_equal(np.asarray(generate(predictor, jax.random.PRNGKey(0), 2, 0, prompt=prompts)), prompts)
        assert np.asarray(generate(predictor, jax.random.PRNGKey(0), 2, 0)).shape == (2, 0)


def test_no_recompilation_for_new_parameters_of_the_same_shapes():
    """A second HMM of the same shapes, another key or another temperature reuse the compiled sampler."""
    rng = np.random.default_rng(1)
    first, second = (process(random_hmm(rng, 3, 3, "dense")) for _ in range(2))
    for sampler, wrap in ((_generate_incremental, lambda x: x), (_generate_recompute, ConditionalsOnly)):
        generate(wrap(first), jax.random.PRNGKey(0), 16, LENGTH, temperature=1.0)
        size = sampler._cache_size()
        generate(wrap(second), jax.random.PRNGKey(1), 16, LENGTH, temperature=0.7)
        generate(wrap(first), jax.random.PRNGKey(2), 16, LENGTH, temperature=2.5)
        assert sampler._cache_size() == size


_Q = process(random_hmm(np.random.default_rng(2), 3, 2, "dense"))
_KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_sequences=0, length=2), "num_sequences"),
        (dict(num_sequences=-3, length=2), "num_sequences"),
        (dict(num_sequences=2.5, length=2), "num_sequences"),
        (dict(num_sequences=2, length=-1), "length"),
        (dict(num_sequences=2, length=1.5), "length"),
        (dict(num_sequences=2, length=2, temperature=-0.1), "temperature"),
        (dict(num_sequences=2, length=2, temperature=float("nan")), "temperature"),
        (dict(num_sequences=2, length=2, temperature=float("inf")), "temperature"),
        (dict(num_sequences=2, length=2, prompt=np.array([0, -1])), "negative"),
        (dict(num_sequences=2, length=2, prompt=np.array([[0, 1], [1, -2]])), "negative"),
        (dict(num_sequences=2, length=2, prompt=np.zeros((3, 2), int)), "rows"),
        (dict(num_sequences=2, length=2, prompt=np.zeros((2, 2, 1), int)), "shape"),
        (dict(num_sequences=2, length=2, prompt=np.array([0.5, 1.0])), "integer"),
    ],
)
def test_generate_arguments_are_validated(kwargs, match):
    """Bad sizes, negative temperature, negative prompt ids, wrong prompt shapes raise ValueError."""
    with pytest.raises(ValueError, match=match):
        generate(_Q, _KEY, **kwargs)


@pytest.mark.parametrize("length, prompt", [(5, None), (3, np.zeros(2, int)), (1, np.zeros((2, 4), int))])
def test_generate_refuses_to_exceed_max_length(length, prompt):
    """Prompt plus length beyond the predictor's max_length raises ValueError (both paths)."""
    with pytest.raises(ValueError, match="max_length|at most"):
        generate(ConditionalsOnly(_Q, max_length=4), _KEY, 2, length, prompt=prompt)
    generate(ConditionalsOnly(_Q, max_length=4), _KEY, 2, 4 - (0 if prompt is None else np.shape(prompt)[-1]), prompt=prompt)


def test_generate_rejects_a_non_predictor():
    """Something without vocab_size/log_conditionals is refused with ValueError."""
    with pytest.raises(ValueError, match="predictor"):
        generate(object(), _KEY, 2, 2)
