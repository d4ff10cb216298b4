"""HMMProcess against two independent, well-kept HMM libraries: dynamax (JAX) and hmmlearn (NumPy/C).

A standard state-emitting HMM (z_1 ~ pi, x_t ~ B[z_t, :], z_{t+1} ~ A[z_t, :]) is the edge-emitting HMM
T[v, i, j] = B[i, v] A[i, j] with initial distribution pi: the state "before the first token" is z_1, and
our belief after t tokens, P(state after t tokens | x_1..x_t), is P(z_{t+1} | x_1..x_t), which is
dynamax's predicted_probs[t] (p(z_{t+1} | y_1..y_t), 0-indexed) for t < L and filtered_probs[L-1] @ A
for t = L. Sequences are drawn by a plain NumPy sampler of the standard HMM, so every one is possible.

These libraries are slow to call, so the Hypothesis properties run a fifth of the profile's examples.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toymodels.processes.hmm import HMMProcess

# Importing dynamax sets JAX's global default matmul precision to float32; this module is imported
# when pytest collects, so without the reset every test of the session would run under it (and the
# precision tests, which check that our code asks for full precision itself, could not fail).
_precision_before = jax.config.jax_default_matmul_precision
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # tfp / dynamax import-time deprecation notices
    from dynamax.hidden_markov_model import hmm_filter
    from hmmlearn.hmm import CategoricalHMM
jax.config.update("jax_default_matmul_precision", _precision_before)

FEW = max(3, settings().max_examples // 5)
# (S, V) shapes: a single state, V = S, more tokens than states, more states than tokens.
SHAPES = ((1, 3), (2, 2), (3, 4), (4, 2))
NUM_SEQUENCES, LENGTH = 4, 50


def random_standard_hmm(rng: np.random.Generator, num_states: int, vocab_size: int):
    """(pi [S], A [S, S], B [S, V]) with dense moves and sparse emissions (zeros included)."""
    pi = rng.dirichlet(np.ones(num_states))
    moves = rng.dirichlet(np.full(num_states, 0.8), size=num_states)
    emit = rng.dirichlet(np.full(vocab_size, 0.8), size=num_states) * (rng.random((num_states, vocab_size)) < 0.7)
    emit[np.arange(num_states), rng.integers(vocab_size, size=num_states)] += 0.1
    return pi, moves, emit / emit.sum(axis=1, keepdims=True)


def sample_standard_hmm(rng, pi, moves, emit, num_sequences: int, length: int) -> np.ndarray:
    """[N, L] tokens by ancestral sampling of the standard HMM, written here in NumPy."""
    out = np.zeros((num_sequences, length), np.int64)
    for n in range(num_sequences):
        state = rng.choice(len(pi), p=pi)
        for t in range(length):
            out[n, t] = rng.choice(emit.shape[1], p=emit[state])
            state = rng.choice(len(pi), p=moves[state])
    return out


def edge_form(pi, moves, emit) -> HMMProcess:
    return HMMProcess(np.einsum("iv,ij->vij", emit, moves), pi)


def dynamax_filter(pi, moves, emit, tokens):
    """dynamax's filter on each row: (marginal_loglik [N], predicted_probs [N, L, S], filtered [N, L, S])."""
    log_likelihoods = np.log(np.where(emit > 0, emit, 1.0))[:, tokens].transpose(1, 2, 0)  # [N, L, S]
    log_likelihoods = np.where(emit[:, tokens].transpose(1, 2, 0) > 0, log_likelihoods, -np.inf)
    post = jax.vmap(hmm_filter, in_axes=(None, None, 0))(pi, moves, log_likelihoods)
    return np.asarray(post.marginal_loglik), np.asarray(post.predicted_probs), np.asarray(post.filtered_probs)


def hmmlearn_score(pi, moves, emit, tokens, implementation: str) -> np.ndarray:
    """hmmlearn's CategoricalHMM log-likelihood of each row, parameters set by hand (no fitting)."""
    model = CategoricalHMM(n_components=len(pi), implementation=implementation)
    model.startprob_, model.transmat_, model.emissionprob_ = pi, moves, emit
    model.n_features = emit.shape[1]
    return np.array([model.score(row.reshape(-1, 1)) for row in tokens])


def check_against_dynamax(process, pi, moves, emit, tokens, atol_belief=1e-12):
    log_lik, predicted, filtered = dynamax_filter(pi, moves, emit, tokens)
    np.testing.assert_allclose(np.asarray(process.log_prob(tokens)), log_lik, rtol=1e-10, atol=1e-12)
    beliefs = np.asarray(process.belief_states(tokens))  # [N, L+1, S]
    np.testing.assert_allclose(beliefs[:, :-1], predicted, rtol=0, atol=atol_belief)
    np.testing.assert_allclose(beliefs[:, -1], filtered[:, -1] @ moves, rtol=0, atol=atol_belief)
    # p(x_t = v | x_<t) = sum_i p(z_t = i | x_<t) B[i, v], from dynamax's predicted probabilities
    expected = predicted @ emit
    log_cond = np.asarray(process.log_conditionals(tokens))
    np.testing.assert_array_equal(np.isneginf(log_cond), expected == 0)
    positive = expected > 0
    np.testing.assert_allclose(log_cond[positive], np.log(expected[positive]), rtol=0, atol=1e-10)


@settings(max_examples=FEW)
@given(st.sampled_from(SHAPES), st.integers(0, 2**32 - 1))
def test_matches_dynamax(shape, seed):
    """log_prob == dynamax's marginal_loglik, belief after t tokens == predicted_probs[t] (and
    filtered_probs[L-1] A at t = L), conditionals == predicted_probs B, on random standard HMMs."""
    rng = np.random.default_rng(seed)
    pi, moves, emit = random_standard_hmm(rng, *shape)
    process = edge_form(pi, moves, emit)
    assert process.structure == "emit_then_move"
    tokens = sample_standard_hmm(rng, pi, moves, emit, NUM_SEQUENCES, LENGTH)
    check_against_dynamax(process, pi, moves, emit, tokens)


@settings(max_examples=FEW)
@given(st.sampled_from(SHAPES), st.integers(0, 2**32 - 1), st.sampled_from(["log", "scaling"]))
def test_matches_hmmlearn(shape, seed, implementation):
    """log_prob == hmmlearn CategoricalHMM.score on each sequence (both implementations)."""
    rng = np.random.default_rng(seed)
    pi, moves, emit = random_standard_hmm(rng, *shape)
    tokens = sample_standard_hmm(rng, pi, moves, emit, NUM_SEQUENCES, LENGTH)
    expected = hmmlearn_score(pi, moves, emit, tokens, implementation)
    np.testing.assert_allclose(
        np.asarray(edge_form(pi, moves, emit).log_prob(tokens)), expected, rtol=1e-10, atol=1e-12
    )


def test_long_sequence_matches_both_libraries():
    """On one 2000-token sequence (float64), log_prob agrees with dynamax and with hmmlearn (log and
    scaling) to 1e-10 relative, and every belief state with dynamax to 1e-10."""
    rng = np.random.default_rng(2000)
    pi, moves, emit = random_standard_hmm(rng, 4, 3)
    tokens = sample_standard_hmm(rng, pi, moves, emit, 1, 2000)
    process = edge_form(pi, moves, emit)
    assert process.transitions.dtype == np.float64
    check_against_dynamax(process, pi, moves, emit, tokens, atol_belief=1e-10)
    log_prob = np.asarray(process.log_prob(tokens))
    assert log_prob[0] < np.log(np.finfo(np.float64).tiny)  # the unscaled probability underflows float64
    for implementation in ("log", "scaling"):
        np.testing.assert_allclose(
            log_prob, hmmlearn_score(pi, moves, emit, tokens, implementation), rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("implementation", ["log", "scaling"])
def test_hand_computed_standard_hmm(implementation):
    """A 2-state, 3-token standard HMM whose log-likelihood of 0 1 2 0 is written out by hand agrees
    with hmmlearn and with log_prob (a check that the conversion B[i,v] A[i,j] itself is right)."""
    pi = np.array([0.6, 0.4])
    moves = np.array([[0.7, 0.3], [0.2, 0.8]])
    emit = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    tokens = np.array([[0, 1, 2, 0]])
    # token 1 and 2 only from state 1, so the path is z = (?, 1, 1, ?):
    # sum_{z1, z4} pi[z1] B[z1,0] A[z1,1] B[1,1] A[1,1] B[1,2] A[1,z4] B[z4,0]
    first = pi[0] * emit[0, 0] * moves[0, 1] + pi[1] * emit[1, 0] * moves[1, 1]
    last = moves[1, 0] * emit[0, 0] + moves[1, 1] * emit[1, 0]
    expected = np.log(first * emit[1, 1] * moves[1, 1] * emit[1, 2] * last)
    np.testing.assert_allclose(hmmlearn_score(pi, moves, emit, tokens, implementation), [expected], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(edge_form(pi, moves, emit).log_prob(tokens)), [expected], rtol=1e-12)
