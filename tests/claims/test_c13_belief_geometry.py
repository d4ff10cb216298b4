"""C13: for Mess3 the probe targets are the exact Bayes beliefs, and the next-token law is linear in them.

The Mess3 reproduction (Shai et al. 2024, x = 0.05, alpha = 0.85) regresses a transformer's residual
stream onto exact belief states and compares its loss with the Bayes floor. These properties check
those ingredients against oracles written here from Mess3's definition (a NumPy Bayes filter over the
hidden state: stay with probability 1 - 2x, move to each other state with x, then emit the new state's
symbol with probability alpha) and against path enumeration: the beliefs, that they lie in the simplex,
that the next-token distribution is the belief times a fixed matrix, the position-averaged Bayes loss at
context 10 (the figure of about 0.833 nats quoted for the reproduction) and that the entropy rate
(about 0.79 nats) lies below it.
"""

from __future__ import annotations

from collections import defaultdict

import brute_force as bf
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import embed_hmm, hmms

from theory.claims.c13_belief_geometry import (
    SHAI_2024,
    bayes_loss_per_position,
    entropy_rate_bounds,
    next_token_map,
    optimal_loss,
)
from toymodels.processes import HMMProcess, mess3, rrxor

SEEDS = st.integers(0, 2**32 - 1)


def mess3_matrices(x: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(A [3, 3] hidden moves, C [3, 3] emissions of the state moved to), from the definition."""
    moves = np.array([[1 - 2 * x if i == j else x for j in range(3)] for i in range(3)])
    emits = np.array([[alpha if j == v else (1 - alpha) / 2 for v in range(3)] for j in range(3)])
    return moves, emits


def mess3_filter(x: float, alpha: float, tokens: np.ndarray, start=None) -> tuple[np.ndarray, np.ndarray]:
    """(beliefs [N, L+1, 3], next-token probabilities [N, L, 3]) by the textbook forward filter,
    predict then update, over every row of tokens [N, L]; the start (the state before the first move)
    is uniform, Mess3's stationary law, unless given."""
    moves, emits = mess3_matrices(x, alpha)
    n, length = tokens.shape
    beliefs = np.zeros((n, length + 1, 3))
    beliefs[:, 0] = 1 / 3 if start is None else start
    predictions = np.zeros((n, length, 3))
    for t in range(length):
        state_next = beliefs[:, t] @ moves  # P(state after the move | x_<t)
        predictions[:, t] = state_next @ emits
        unnormalised = state_next * emits[:, tokens[:, t]].T
        beliefs[:, t + 1] = unnormalised / unnormalised.sum(axis=1, keepdims=True)
    return beliefs, predictions


@st.composite
def mess3_parameters(draw):
    """(x, alpha) with 0 < x < 1/2: the hidden state can stay or move to any state, so every token
    sequence is possible whatever alpha (x = 1/2 with alpha = 1 forbids repeats); x > 0 also keeps one
    filtering structure (one compilation)."""
    return draw(st.floats(0.001, 0.49)), draw(st.floats(0.0, 1.0))


def random_tokens(seed: int, length: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, (4, length))


@given(mess3_parameters(), SEEDS)
@example(tuple(SHAI_2024.values()), 0)
@example((0.001, 1e-6), 16)  # a tiny alpha: found by the thorough profile when mess3 rounded its diagonal
def test_belief_states_are_the_bayes_filter_and_lie_in_the_simplex(parameters, seed):
    """mess3's belief states (the probe targets) equal an independent NumPy Bayes filter written from
    Mess3's definition, on random token sequences (all possible when 0 < x < 1/2), and every belief is
    a point of the probability simplex."""
    x, alpha = parameters
    process = mess3(x, alpha)
    tokens = random_tokens(seed)
    beliefs = np.asarray(process.belief_states(tokens))
    reference, _ = mess3_filter(x, alpha, tokens)
    np.testing.assert_allclose(beliefs, reference, rtol=0, atol=1e-12)
    assert np.all(beliefs >= 0)
    np.testing.assert_allclose(beliefs.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


@given(mess3_parameters(), SEEDS)
@example(tuple(SHAI_2024.values()), 0)
def test_next_token_distribution_is_linear_in_the_belief(parameters, seed):
    """p(x_{t+1} | x_<=t) = b_t @ E with E = A C for Mess3, both from the library and from the oracle
    filter; E is invertible unless x = 1/3 or alpha = 1/3 (det E = (1 - 3x)^2 ((3 alpha - 1) / 2)^2), so
    for Mess3 the belief is also a linear function of the next-token distribution."""
    x, alpha = parameters
    process = mess3(x, alpha)
    tokens = random_tokens(seed)
    moves, emits = mess3_matrices(x, alpha)
    e = next_token_map(process)
    np.testing.assert_allclose(e, moves @ emits, rtol=0, atol=1e-12)
    conditionals = np.exp(np.asarray(process.log_conditionals(tokens)))
    beliefs = np.asarray(process.belief_states(tokens))[:, :-1]
    np.testing.assert_allclose(conditionals, beliefs @ e, rtol=0, atol=1e-12)
    _, predictions = mess3_filter(x, alpha, tokens)
    np.testing.assert_allclose(conditionals, predictions, rtol=0, atol=1e-12)
    closed_form = (1 - 3 * x) ** 2 * ((3 * alpha - 1) / 2) ** 2
    assert np.linalg.det(e) == pytest.approx(closed_form, abs=1e-12)


@given(hmms(max_vocab=3, max_states=3, min_vocab=2))
def test_next_token_linearity_and_bayes_loss_on_random_hmms(hmm):
    """For any edge-emitting HMM, after every possible prefix the next-token distribution is b_t @ E with
    E = `next_token_map` (beliefs and conditionals both from path enumeration), and the library's exact
    Bayes loss per position equals H(X_t | X_<t) computed from path-enumeration probabilities by
    summing -P(x_<=t) log p(x_t | x_<t) over prefixes held in a dictionary."""
    transitions, initial = embed_hmm(*hmm)  # one shape: one compilation for every example
    length, vocab = 4, transitions.shape[0]
    process = HMMProcess(transitions, initial)
    sequences = bf.all_sequences(vocab, length)
    probs = bf.hmm_sequence_probs(transitions, initial, sequences)
    e = next_token_map(process)
    for t in range(length):  # after every prefix of length t: p(x_t | x_<t) = b_t @ E
        table = probs.reshape((vocab**t, vocab, -1)).sum(axis=2)  # P(x_<t, x_t)
        joint = bf.hmm_path_joint(transitions, initial, bf.all_sequences(vocab, t)) if t else initial[None]
        possible = table.sum(axis=1) > 0
        beliefs = joint[possible] / joint[possible].sum(axis=1, keepdims=True)
        conditionals = table[possible] / table[possible].sum(axis=1, keepdims=True)
        np.testing.assert_allclose(beliefs @ e, conditionals, rtol=0, atol=1e-12)

    prefix = defaultdict(float)
    for x, p in zip(map(tuple, sequences.tolist()), probs):
        for t in range(length + 1):
            prefix[x[:t]] += p
    expected = np.zeros(length)
    for y, joint in prefix.items():
        if y and joint > 0:
            expected[len(y) - 1] -= joint * np.log(joint / prefix[y[:-1]])
    np.testing.assert_allclose(bayes_loss_per_position(process, length), expected, rtol=0, atol=1e-9)


def test_rrxor_next_token_distribution_does_not_determine_the_belief():
    """For RRXOR, E has rank 2 with 5 hidden states: the prefixes 001 and 010 have the same next-token
    distribution yet different beliefs, so there the two probe targets carry different information."""
    process = rrxor()
    assert np.linalg.matrix_rank(next_token_map(process)) == 2
    prefixes = np.array([[0, 0, 1], [0, 1, 0]])
    beliefs = np.asarray(process.belief_states(prefixes))[:, -1]
    conditionals = beliefs @ next_token_map(process)
    library = np.exp(np.asarray(process.log_conditionals(np.concatenate([prefixes, [[0], [0]]], axis=1))))
    np.testing.assert_allclose(library[:, -1], conditionals, atol=1e-12)
    np.testing.assert_allclose(conditionals[0], conditionals[1], atol=1e-12)
    assert np.abs(beliefs[0] - beliefs[1]).max() > 0.1


def test_optimal_loss_at_context_10_and_the_entropy_rate():
    """For Mess3(0.05, 0.85) the position-averaged exact Bayes loss over a context of 10 matches an
    independent NumPy filter run over all 3^10 sequences (and the quoted figure of about 0.833 nats);
    per-position losses fall with t; the entropy rate, bracketed by H(X_n | X_<n, S_0) <= h <=
    H(X_n | X_<n), is about 0.79 nats and strictly below the averaged loss."""
    process = mess3(**SHAI_2024)
    context = 10
    sequences = bf.all_sequences(3, context)
    _, predictions = mess3_filter(SHAI_2024["x"], SHAI_2024["alpha"], sequences)
    chosen = np.take_along_axis(predictions, sequences[..., None], axis=-1)[..., 0]  # p(x_t | x_<t)
    probs = chosen.prod(axis=1)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    per_position = -(probs[:, None] * np.log(chosen)).sum(axis=0)
    np.testing.assert_allclose(bayes_loss_per_position(process, context), per_position, rtol=0, atol=1e-10)
    loss = optimal_loss(process, context)
    assert loss == pytest.approx(per_position.mean(), abs=1e-10)
    assert round(loss, 3) == 0.833
    assert np.all(np.diff(per_position) < 0)

    lower, upper = entropy_rate_bounds(process, context)
    assert lower <= upper == pytest.approx(per_position[-1], abs=1e-10)
    # H(X_n | X_<n, S_0) = sum_s pi(s) H(X_n | X_<n, S_0 = s), each by the same NumPy filter started in s.
    expected_lower = 0.0
    for state in range(3):
        _, started = mess3_filter(SHAI_2024["x"], SHAI_2024["alpha"], sequences, start=np.eye(3)[state])
        chosen_s = np.take_along_axis(started, sequences[..., None], axis=-1)[..., 0]
        expected_lower += -(chosen_s.prod(axis=1) * np.log(chosen_s[:, -1])).sum() / 3
    assert lower == pytest.approx(expected_lower, abs=1e-10)
    assert 0.785 < lower and upper < 0.795 and upper < loss - 0.03
    shorter = entropy_rate_bounds(process, context - 2)
    assert shorter[0] <= lower and upper <= shorter[1]  # the bracket only tightens with n


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: optimal_loss(mess3(), 0), "context"),
        (lambda: next_token_map("mess3"), "process"),
        (lambda: entropy_rate_bounds(HMMProcess(np.array([[[0.5, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.5, 0.5]]]),
                                                np.array([1.0, 0.0])), 3), "stationary"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
