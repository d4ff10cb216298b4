"""HMMProcess on long sequences (10^4 tokens) and in float32: no NaN, exact known values, agreement
with a plain NumPy forward pass (tests/brute_force.py) and with float64 within a derived tolerance.
"""

from __future__ import annotations

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from log_prob_paths import PATHS, log_prob as log_prob_by
from strategies import hmms_of_shapes

from toymodels.processes import MixtureProcess, mess3
from toymodels.processes.hmm import HMMProcess

# Few examples: every example compiles a long scan (10^4 steps); the profile's count divided by 5
# (ci: 5, thorough: 100).
FEW = max(5, settings().max_examples // 5)


# --------------------------------------------------------------------------------------------------
# Long sequences (10^4 tokens): no NaN, exact known values
# --------------------------------------------------------------------------------------------------

LONG = 10_000


def assert_no_nan_and_normalised(process: HMMProcess, tokens: np.ndarray, path: str = "cpu_kernel"):
    """No NaN in log_prob (by `path`), log_conditionals, belief_states; conditionals sum to 1 or are all
    -inf; beliefs sum to 1. Returns the three arrays."""
    log_prob = np.asarray(log_prob_by(process, tokens, path))
    log_cond = np.asarray(process.log_conditionals(tokens))
    beliefs = np.asarray(process.belief_states(tokens))
    for array in (log_prob, log_cond, beliefs):
        assert not np.any(np.isnan(array))
    dead = np.all(np.isneginf(log_cond), axis=-1)
    totals = np.exp(log_cond[~dead]).sum(axis=-1)
    np.testing.assert_allclose(totals, 1.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(beliefs.sum(axis=-1), 1.0, rtol=0, atol=1e-9)
    return log_prob, log_cond, beliefs


def cycle(num_states: int) -> np.ndarray:
    """State i emits token i and moves to i + 1 (mod S), deterministically."""
    transitions = np.zeros((num_states, num_states, num_states))
    for i in range(num_states):
        transitions[i, i, (i + 1) % num_states] = 1.0
    return transitions


@pytest.mark.parametrize("path", PATHS)
def test_deterministic_cycle_long_sequence(path):
    """A deterministic 3-cycle started in state 0: the cycle 0 1 2 0 1 2 ... (10^4 tokens) has log_prob
    exactly 0, conditionals 0 / -inf, one-hot beliefs; one wrong token at 5000 makes it -inf, with every
    later conditional -inf and the belief frozen. Started uniformly, each rotation has log_prob log(1/3)."""
    good = np.arange(LONG) % 3
    bad = good.copy()
    bad[5000] = (bad[5000] + 1) % 3
    rotations = (np.arange(LONG)[None] + np.arange(3)[:, None]) % 3
    tokens = np.concatenate([good[None], bad[None], rotations])

    process = HMMProcess(cycle(3), np.array([1.0, 0.0, 0.0]))
    log_prob, log_cond, beliefs = assert_no_nan_and_normalised(process, tokens, path)
    assert log_prob[0] == 0.0 and log_prob[1] == -np.inf
    expected = np.where(np.arange(3)[None] == good[:, None], 0.0, -np.inf)
    np.testing.assert_array_equal(log_cond[0], expected)
    np.testing.assert_array_equal(log_cond[1, :5001], expected[:5001])
    assert np.all(np.isneginf(log_cond[1, 5001:]))
    np.testing.assert_array_equal(beliefs[0], np.eye(3)[np.arange(LONG + 1) % 3])
    np.testing.assert_array_equal(beliefs[1, 5001:], np.broadcast_to(np.eye(3)[5000 % 3], (LONG - 5000, 3)))

    uniform = HMMProcess(cycle(3), np.full(3, 1 / 3))
    log_prob, _, _ = assert_no_nan_and_normalised(uniform, tokens, path)
    np.testing.assert_allclose(log_prob[2:], np.log(1 / 3), rtol=1e-15)
    assert log_prob[1] == -np.inf


def fair_coins():
    """Two HMMs (emit_then_move, general) in which every token has probability 1/2 given any past."""
    one_state = np.full((2, 1, 1), 0.5)
    general = np.zeros((2, 2, 2))
    general[0] = 0.5 * np.array([[1.0, 0.0], [0.2, 0.8]])  # token 0 and token 1 move differently
    general[1] = 0.5 * np.array([[0.0, 1.0], [0.6, 0.4]])
    return [(one_state, np.ones(1)), (general, np.array([0.1, 0.9]))]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("index", range(2))
def test_fair_coin_long_sequence(index, path):
    """A fair-coin process (one state, or two states that the tokens steer) gives every sequence of 10^4 tokens log_prob
    L log(1/2) and every conditional log(1/2)."""
    transitions, initial = fair_coins()[index]
    process = HMMProcess(transitions, initial)
    tokens = np.random.default_rng(index).integers(2, size=(3, LONG))
    log_prob = np.asarray(log_prob_by(process, tokens, path))
    np.testing.assert_allclose(log_prob, LONG * np.log(0.5), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(process.log_conditionals(tokens)), np.log(0.5), rtol=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_absorbing_state_long_sequence(path):
    """State 0 emits 0 or 1 (staying) or 2 (falling into absorbing state 1, which emits only 2): k free
    tokens then 2s have log_prob k log((1 - q)/2) + log q; a 0 or 1 after a 2 is impossible."""
    q = 0.05
    transitions = np.zeros((3, 2, 2))
    transitions[0, 0, 0] = transitions[1, 0, 0] = (1 - q) / 2
    transitions[2, 0, 1] = q
    transitions[2, 1, 1] = 1.0
    process = HMMProcess(transitions, np.array([1.0, 0.0]))
    rng = np.random.default_rng(0)
    tokens = np.full((3, LONG), 2)
    free = [0, 37, 400]
    for row, k in enumerate(free):
        tokens[row, :k] = rng.integers(2, size=k)
    late_escape = tokens.copy()[1:2]
    late_escape[0, 9000] = 1
    log_prob, log_cond, beliefs = assert_no_nan_and_normalised(process, np.concatenate([tokens, late_escape]), path)
    expected = np.array([k * np.log((1 - q) / 2) + np.log(q) for k in free])
    np.testing.assert_allclose(log_prob[:3], expected, rtol=1e-12)
    assert log_prob[3] == -np.inf
    for row, k in enumerate(free):
        np.testing.assert_allclose(
            beliefs[row, k + 1 :], np.broadcast_to([0.0, 1.0], (LONG - k, 2)), rtol=0, atol=1e-15
        )
        np.testing.assert_allclose(
            log_cond[row, k + 1 :], np.broadcast_to([-np.inf, -np.inf, 0.0], (LONG - k - 1, 3)), rtol=0, atol=1e-15
        )
    assert np.all(np.isneginf(log_cond[3, 9001:]))


@settings(max_examples=FEW)
@given(
    hmms_of_shapes(shapes=((3, 2),), styles=("deterministic", "near_deterministic", "sparse")),
    st.integers(0, 2**32 - 1),
)
def test_long_sequences_match_numpy_forward(hmm, seed):
    """On 10^4 tokens (one sampled, one uniformly random and usually impossible) log_prob, belief_states
    and log_conditionals match a NumPy float64 forward pass, with no NaN anywhere."""
    transitions, initial = hmm
    process = HMMProcess(transitions, initial)
    vocab = transitions.shape[0]
    rng = np.random.default_rng(seed)
    sampled = bf.hmm_sample(transitions, initial, 1, LONG, rng)[0]
    uniform = rng.integers(vocab, size=LONG)
    tokens = np.stack([sampled, uniform])
    log_prob, log_cond, beliefs = assert_no_nan_and_normalised(process, tokens)
    assert np.isfinite(log_prob[0])
    emit = transitions.sum(axis=2).T  # P(token v | state i) before moving
    for row in range(2):
        log_prefix, expected_beliefs = bf.hmm_forward(transitions, initial, tokens[row])
        if np.isfinite(log_prefix[-1]):
            np.testing.assert_allclose(log_prob[row], log_prefix[-1], rtol=1e-10, atol=1e-8)
        else:
            assert log_prob[row] == -np.inf
        np.testing.assert_allclose(beliefs[row], expected_beliefs, rtol=0, atol=1e-9)
        expected_cond = expected_beliefs[:-1] @ emit  # P(x_{t+1} = v | x_<=t) = sum_i b_t(i) P(v | i)
        positive = np.isfinite(log_prefix[:-1])[:, None] & (expected_cond > 0)
        np.testing.assert_allclose(np.exp(log_cond[row][positive]), expected_cond[positive], rtol=1e-9, atol=1e-12)
        assert np.all(np.isneginf(log_cond[row][~positive]))


# --------------------------------------------------------------------------------------------------
# float32
# --------------------------------------------------------------------------------------------------

# Relative-error argument for the normalised recursion: every quantity is a sum of non-negative terms,
# so each step adds at most c (S + V) eps32 of relative error to a belief entry (c a small constant),
# and a conditional after t tokens is off by at most C t eps32 relatively, i.e. |Delta log q| <= C t eps32.
# The parameters themselves are rounded to float32 (another eps32 per factor). We allow
# C = 4 (S + V) + 8 <= 32, i.e. a per-entry tolerance of 32 (t + 1) eps32 on log-conditionals, and the
# sum of those over t for log_prob.
F32_LENGTH = 64
EPS32 = float(np.finfo(np.float32).eps)


@settings(max_examples=FEW)
@given(
    hmms_of_shapes(shapes=((3, 2),), styles=("dense", "sparse", "deterministic", "emit_then_move", "move_then_emit")),
    st.integers(0, 2**32 - 1),
)
def test_float32_agrees_with_float64(hmm, seed):
    """A process built from float32 arrays computes in float32 and agrees with the exact float64 values
    (NumPy forward pass) within 32 (t + 1) eps32 per log-conditional and the sum of that per log_prob,
    on sampled 64-token sequences."""
    transitions, initial = hmm
    process = HMMProcess(transitions.astype(np.float32), initial.astype(np.float32))
    assert process.transitions.dtype == jnp.float32
    tokens = bf.hmm_sample(transitions, initial, 8, F32_LENGTH, np.random.default_rng(seed))
    log_cond, log_prob = process.log_conditionals(tokens), process.log_prob(tokens)
    assert log_cond.dtype == log_prob.dtype == jnp.float32
    log_cond, log_prob = np.asarray(log_cond, np.float64), np.asarray(log_prob, np.float64)
    emit = transitions.sum(axis=2).T
    tolerance = 32 * EPS32 * (np.arange(F32_LENGTH) + 1)
    for row in range(len(tokens)):
        log_prefix, beliefs = bf.hmm_forward(transitions, initial, tokens[row])
        assert np.isfinite(log_prefix[-1])
        expected = beliefs[:-1] @ emit
        np.testing.assert_array_equal(np.isneginf(log_cond[row]), expected == 0)
        error = np.where(expected > 0, np.abs(log_cond[row] - np.log(np.where(expected > 0, expected, 1.0))), 0.0)
        assert np.all(error <= tolerance[:, None]), f"worst error {error.max()}"
        assert abs(log_prob[row] - log_prefix[-1]) <= tolerance.sum()


@pytest.mark.parametrize("path", PATHS)
def test_float32_near_deterministic_rare_tokens(path):
    """In float32, a near-deterministic general HMM still gives a rare token (probability 1e-7) its
    probability within 1% (a factor, not an absolute 1e-6)."""
    delta = 1e-7
    transitions = np.zeros((2, 2, 2), np.float32)
    transitions[0, 0, 0] = 1 - 2 * delta  # state 0: emit 0 and stay
    transitions[1, 0, 1] = delta  # rare: emit 1 and go to state 1
    transitions[0, 0, 1] = delta  # rare: emit 0 and go to state 1
    transitions[1, 1, 1] = 1.0  # state 1 emits 1 forever
    initial = np.array([1.0, 0.0], np.float32)
    tokens = np.array([[1, 1], [0, 1]])
    expected = np.log(bf.hmm_sequence_probs(transitions, initial, tokens))
    got = np.asarray(log_prob_by(HMMProcess(transitions, initial), tokens, path), np.float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=0.01)


# --------------------------------------------------------------------------------------------------
# log_prob's blocks: it normalises once per block of tokens and falls back to stepwise normalisation
# where a block's mass would underflow; block edges, remainders and the fallback against closed forms.
# --------------------------------------------------------------------------------------------------

BLOCKED_LENGTH = 29  # three blocks of 8 and a remainder of 5


def rare_token_process(rare: float, dtype):
    """State 0 emits 0 with probability 1 - rare and 1 with probability `rare`, staying; token 2 is
    impossible from it (only the unreachable state 1 emits it). A general-structure HMM."""
    transitions = np.zeros((3, 2, 2))
    transitions[0, 0, 0], transitions[1, 0, 0] = 1 - rare, rare
    transitions[2, 1, 1] = 1.0
    return HMMProcess(transitions.astype(dtype), np.array([1.0, 0.0], dtype))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype, rare", [(np.float32, 1e-5), (np.float64, 1e-40), (np.float32, 1e-40), (np.float64, 1e-310)])
def test_log_prob_of_blocks_whose_mass_underflows(dtype, rare, path):
    """Eight rare tokens have probability rare^8 (1e-40 in float32, 1e-320 in float64), below the
    smallest normal number: an unnormalised block would lose them. With rare itself subnormal (1e-40 in
    float32, 1e-310 in float64) every rare token's mass is subnormal, the case in which the CPU kernel
    cannot scale by 2^-e in one step. log_prob still equals the closed
    form n0 log(1 - rare) + n1 log(rare) on every row of a batch that mixes rare runs at and across
    block edges, common rows, and an impossible token or id early, mid-block or in the remainder (-inf,
    and the rows beside them unaffected)."""
    rows = [np.ones(BLOCKED_LENGTH, int), np.zeros(BLOCKED_LENGTH, int)]
    across_edge = np.zeros(BLOCKED_LENGTH, int)
    across_edge[5:21] = 1  # 16 rare tokens starting mid-block
    in_remainder = np.zeros(BLOCKED_LENGTH, int)
    in_remainder[20:] = 1
    rows += [across_edge, in_remainder]
    impossible = []
    for position, token in ((3, 2), (10, 2), (27, 2), (12, 3)):
        row = np.ones(BLOCKED_LENGTH, int)
        row[position] = token
        impossible.append(row)
    tokens = np.stack(rows + impossible)

    if path == "xla_scan" and rare < np.finfo(dtype).smallest_normal:
        pytest.skip("XLA's CPU code flushes subnormal numbers to zero (HMMProcess's docstring says so)")
    process = rare_token_process(rare, dtype)
    log_prob = np.asarray(log_prob_by(process, tokens, path), np.float64)

    rare_in_dtype = float(dtype(rare))  # the parameter as the process holds it
    common_in_dtype = float(dtype(1 - rare))
    count_rare = (tokens[: len(rows)] == 1).sum(axis=1)
    expected = count_rare * np.log(rare_in_dtype) + (BLOCKED_LENGTH - count_rare) * np.log(common_in_dtype)
    # Each step's mass has a relative error of a few eps, i.e. an absolute error of a few eps in its log.
    tolerance = 4 * BLOCKED_LENGTH * np.finfo(dtype).eps
    np.testing.assert_allclose(log_prob[: len(rows)], expected, rtol=tolerance, atol=tolerance)
    assert np.all(log_prob[len(rows) :] == -np.inf)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype, small", [(np.float32, 1e-12), (np.float64, 1e-300)])
def test_log_prob_keeps_a_state_of_small_belief_through_a_block(dtype, small, path):
    """State 1 starts with belief `small`; both states emit token 1 with probability 1e-4, so after seven
    1s the block's mass is about 1e-28 (normal) while state 1's unnormalised entry, small * 1e-28, is
    below the smallest normal number. Token 2, which only state 1 emits, then follows. The sequence is
    possible: log_prob must be finite and equal a NumPy float64 forward pass (it was -inf when blocks
    ran unscaled: state 1 vanished in the block)."""
    rare = 1e-4
    transitions = np.zeros((3, 2, 2))
    transitions[0, 0, 0], transitions[1, 0, 0] = 1 - rare, rare
    transitions[0, 1, 1], transitions[1, 1, 1], transitions[2, 1, 1] = (1 - rare) / 2, rare, (1 - rare) / 2
    initial = np.array([1 - small, small])
    process = HMMProcess(transitions.astype(dtype), initial.astype(dtype))
    tokens = np.array([[1] * 7 + [0] + [2], [1] * 7 + [2] + [0]])
    log_prob = np.asarray(log_prob_by(process, tokens, path), np.float64)
    as_held = transitions.astype(dtype).astype(np.float64), initial.astype(dtype).astype(np.float64)
    expected = [bf.hmm_forward(*as_held, row)[0][-1] for row in tokens]
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(log_prob, expected, rtol=16 * np.finfo(dtype).eps * tokens.shape[1])


@pytest.mark.parametrize("path", PATHS)
@given(hmms_of_shapes(), st.sampled_from((5, 8, 19)), st.integers(0, 2**32 - 1))
def test_log_prob_at_block_edges_matches_numpy_forward(path, hmm, length, seed):
    """Shorter than a block, exactly one block, blocks and a remainder: log_prob equals the NumPy
    forward pass on sampled sequences, uniformly random ones (often impossible) and sequences with an
    out-of-vocabulary id."""
    transitions, initial = hmm
    vocab = transitions.shape[0]
    rng = np.random.default_rng(seed)
    tokens = np.concatenate([
        bf.hmm_sample(transitions, initial, 4, length, rng),
        rng.integers(vocab, size=(3, length)),
        rng.integers(vocab + 1, size=(1, length)),
    ])
    log_prob = np.asarray(log_prob_by(HMMProcess(transitions, initial), tokens, path))
    expected = np.array([bf.hmm_forward(transitions, initial, row)[0][-1] for row in tokens])
    np.testing.assert_array_equal(np.isneginf(log_prob), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(log_prob[finite], expected[finite], rtol=1e-10, atol=1e-10)


def test_float32_mixture_stays_accurate_over_long_sequences():
    """A float32 mixture of two close Mess3 processes over 10^4 tokens: its next-token conditionals and
    component posterior agree with a NumPy float64 forward pass of each component combined by Bayes'
    rule, within 10 eps sqrt(L) (the random walk of per-step rounding in a recursion renormalised every
    token). Built from cumulative sums of log-probabilities, which reach -10^4, they were off by 3e-4."""
    from scipy.special import logsumexp

    arrays = [(np.asarray(c.transitions, np.float64), np.asarray(c.initial, np.float64))
              for c in (mess3(0.05, 0.85), mess3(0.06, 0.84))]
    mixture = MixtureProcess([HMMProcess(t.astype(np.float32), i.astype(np.float32)) for t, i in arrays],
                             np.array([0.5, 0.5], np.float32))
    length = 10_000
    tokens = np.asarray(mixture.sample(jax.random.key(3), 1, length))
    log_joint, conditionals = [], []
    for t, i in arrays:  # the oracle: each component's float64 forward pass, as the float32 mixture holds it
        t, i = t.astype(np.float32).astype(np.float64), i.astype(np.float32).astype(np.float64)
        log_prefix, beliefs = bf.hmm_forward(t, i, tokens[0])
        log_joint.append(np.log(0.5) + log_prefix)
        conditionals.append(np.log(np.einsum("ls,vsj->lv", beliefs[:-1], t)))
    log_post = np.array(log_joint) - logsumexp(np.array(log_joint), axis=0)  # [K, L+1]
    expected = logsumexp(log_post[:, :-1, None] + np.array(conditionals), axis=0)
    tolerance = 10 * np.finfo(np.float32).eps * np.sqrt(length)
    np.testing.assert_allclose(np.asarray(mixture.log_conditionals(tokens))[0], expected, rtol=0, atol=tolerance)
    np.testing.assert_allclose(np.asarray(mixture.posterior(tokens))[0], np.exp(log_post.T), rtol=0, atol=tolerance)
