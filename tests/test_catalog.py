"""Conformance of every registered process family (`catalog()`): the Process protocol's promises.

For each family's small instance: the probabilities of all sequences of a short length sum to one;
`log_conditionals` are normalised and chain to `log_prob`; sampled frequencies match `log_prob`; the
incremental interface agrees with the full-prefix one; posteriors are distributions, start at the prior
and, for finite-state families, agree with Bayes computed by an independent NumPy forward pass.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from brute_force import all_sequences, binomial_pvalues, hmm_forward
from toymodels.predictors import supports_step, token_log_probs
from toymodels.processes import HMMProcess, catalog, families, make_process
from toymodels.processes.registry import _EXAMPLES

CATALOG = catalog()
NAMES = sorted(CATALOG)
MAX_SEQUENCES = 5000  # enumerate V^L sequences with L the longest length that stays below this
SAMPLES = 20_000
# One fixed sample per family: a per-sequence binomial test at this level, Bonferroni over at most
# MAX_SEQUENCES cells and ~20 families, fails a correct sampler with probability below 1e-4.
ALPHA = 1e-4 / (MAX_SEQUENCES * 20)


def enumeration_length(process) -> int:
    length = 1
    while process.vocab_size ** (length + 1) <= MAX_SEQUENCES and length < 5:
        length += 1
    return length


def test_catalog_is_not_empty_and_names_every_family():
    """catalog() holds one instance per registered family, and make_process rebuilds each by name."""
    assert NAMES and tuple(NAMES) == families()
    for name in NAMES:
        rebuilt = make_process(name, **_EXAMPLES[name])
        assert type(rebuilt) is type(CATALOG[name]) and rebuilt.vocab_size == CATALOG[name].vocab_size


def test_make_process_rejects_unknown_names_and_arguments():
    """An unknown family or keyword, or a missing required argument, raises ValueError naming it."""
    with pytest.raises(ValueError, match="unknown process family"):
        make_process("no_such_family")
    with pytest.raises(ValueError, match="no_such_argument"):
        make_process(NAMES[0], no_such_argument=1)
    with pytest.raises(ValueError, match="reveal_prob"):
        make_process("waluigi", prior_w=0.3)


@pytest.mark.parametrize("name", NAMES)
def test_probabilities_sum_to_one_and_conditionals_chain(name):
    """All sequences of length L have probabilities summing to 1; every conditional row on a possible
    prefix sums to 1; the chain of conditionals equals log_prob; nothing is NaN."""
    process = CATALOG[name]
    tokens = all_sequences(process.vocab_size, enumeration_length(process))
    log_prob = np.asarray(process.log_prob(tokens))
    log_cond = np.asarray(process.log_conditionals(tokens))
    assert not np.any(np.isnan(log_prob)) and not np.any(np.isnan(log_cond))
    assert np.exp(log_prob).sum() == pytest.approx(1.0, abs=1e-9)
    steps = np.asarray(token_log_probs(log_cond, tokens))
    prefix = np.concatenate([np.zeros((len(tokens), 1)), np.cumsum(steps, axis=1)], axis=1)
    np.testing.assert_allclose(prefix[:, -1], log_prob, atol=1e-9)
    possible = np.isfinite(prefix[:, :-1])
    row_sums = np.exp(log_cond).sum(axis=-1)
    np.testing.assert_allclose(row_sums[possible], 1.0, atol=1e-9)
    assert np.all(row_sums[~possible] == 0)  # after an impossible prefix every token is -inf


@pytest.mark.parametrize("name", NAMES)
def test_sample_frequencies_match_log_prob(name):
    """Sampled sequence frequencies agree with exp(log_prob) by an exact binomial test per sequence."""
    process = CATALOG[name]
    length = enumeration_length(process)
    samples = np.asarray(process.sample(jax.random.key(7), SAMPLES, length))
    tokens = all_sequences(process.vocab_size, length)
    index = samples @ (process.vocab_size ** np.arange(length - 1, -1, -1))
    counts = np.bincount(index, minlength=len(tokens))
    probs = np.exp(np.asarray(process.log_prob(tokens)))
    assert binomial_pvalues(counts, probs).min() > ALPHA


@pytest.mark.parametrize("name", NAMES)
def test_incremental_interface_matches_log_conditionals(name):
    """init_state/step give the same next-token log-conditionals as the full-prefix computation."""
    process = CATALOG[name]
    if not supports_step(process):
        pytest.skip(f"{name} has no incremental interface")
    tokens = process.sample(jax.random.key(3), 16, 6)
    state, log_next = process.init_state(16)
    rows = [log_next]
    for t in range(5):
        state, log_next = process.step(state, tokens[:, t])
        rows.append(log_next)
    np.testing.assert_allclose(np.stack(rows, axis=1), np.asarray(process.log_conditionals(tokens)), atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_posteriors_are_distributions_and_match_bayes(name):
    """Every named latent's posterior is a distribution over its labels at every prefix, starts at the
    prior, and for finite-state families equals the belief of an independent NumPy forward pass pushed
    through the latent's map (Bayes over the hidden states)."""
    process = CATALOG[name]
    tokens = process.sample(jax.random.key(5), 8, 6)
    for latent, labels in process.latents.items():
        posterior = np.asarray(process.posterior(tokens, latent))
        assert posterior.shape == (8, 7, len(labels))
        np.testing.assert_allclose(posterior.sum(axis=-1), 1.0, atol=1e-9)
        assert np.all(posterior >= -1e-12)
        np.testing.assert_allclose(posterior[:, 0], np.broadcast_to(posterior[0, 0], (8, len(labels))), atol=1e-12)
        if isinstance(process, HMMProcess):
            latent_map = np.asarray(process.latent_maps[process.latent_names.index(latent)])
            for row in range(8):
                _, beliefs = hmm_forward(np.asarray(process.transitions), np.asarray(process.initial), np.asarray(tokens[row]))
                np.testing.assert_allclose(posterior[row], beliefs @ latent_map, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_long_sequences_have_no_nan(name):
    """A 10^4-token sample has a finite log-probability and NaN-free conditionals and posteriors."""
    process = CATALOG[name]
    tokens = process.sample(jax.random.key(11), 2, 10_000)
    assert np.all(np.isfinite(np.asarray(process.log_prob(tokens))))
    assert not np.any(np.isnan(np.asarray(process.log_conditionals(tokens))))
    for latent in process.latents:
        assert not np.any(np.isnan(np.asarray(process.posterior(tokens, latent))))
