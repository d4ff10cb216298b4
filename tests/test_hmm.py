"""HMMProcess, the generic exact edge-emitting HMM, against independent NumPy oracles.

Every expected number comes from tests/brute_force.py (path enumeration over V^L for small L, a plain
NumPy forward pass for long sequences) or from a closed form written in the test; nothing expected is
obtained by running the library. Random instances come from tests/strategies.py in every style
(dense, sparse, near-deterministic, deterministic, emit_then_move, move_then_emit), so all three
filtering structures (general, emit_then_move, move_then_emit) are checked against the same oracle.

Shapes are bounded so that the jit caches stay small (a new shape or structure is a new compilation):
(V, S) comes from strategies.CORE_SHAPES (one token, one state, V < S, V > S), L <= 4 for enumeration,
and token batches are padded to a fixed number of rows. Sampling is tested in test_hmm_sampling.py,
long sequences and float32 in test_hmm_long.py.
"""

from __future__ import annotations

import itertools

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from log_checks import assert_log_matches
from log_prob_paths import PATHS, log_prob as log_prob_by
from strategies import hmms, hmms_of_shapes, non_unifilar_hmm, random_hmm

from toymodels.predictors import Process
from toymodels.processes import hmm as hmm_module
from toymodels.processes.hmm import HMMProcess

# Token batches for enumeration: every sequence of length L over {0..V-1} plus two impossible ids (V and
# V + 5), i.e. (V + 2)^L <= 5^4 = 625 rows, padded by repetition to 625 rows so one shape serves all V.
ROWS = 625
IMPOSSIBLE_OFFSETS = (0, 5)
LENGTHS = (0, 1, 4)
FULL = 4


def enumerate_with_impossible(vocab_size: int, length: int) -> np.ndarray:
    """[ROWS, length]: all of (V+2)^length (ids V and V+5 are impossible), rows repeated up to ROWS."""
    symbols = list(range(vocab_size)) + [vocab_size + k for k in IMPOSSIBLE_OFFSETS]
    seqs = np.array(list(itertools.product(symbols, repeat=length)), np.int64).reshape(len(symbols) ** length, length)
    return seqs[np.arange(ROWS) % len(seqs)]


def one_hot_map(of_state: np.ndarray, num_values: int) -> np.ndarray:
    return (np.asarray(of_state)[:, None] == np.arange(num_values)[None]).astype(np.float64)


# --------------------------------------------------------------------------------------------------
# Exact inference against path enumeration
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@given(hmms_of_shapes(), st.sampled_from(LENGTHS))
def test_log_prob_matches_enumeration(path, hmm, length):
    """log_prob(x) == log P(x) by path enumeration for every x in (V+2)^L; impossible ids and
    zero-probability sequences give exactly -inf; never NaN. (625 rows: the kernel's last group of
    sequences is partial.)"""
    transitions, initial = hmm
    process = HMMProcess(transitions, initial)
    note(f"structure={process.structure}")
    seqs = enumerate_with_impossible(transitions.shape[0], length)
    log_prob = np.asarray(log_prob_by(process, seqs, path))
    assert log_prob.shape == (ROWS,)
    assert_log_matches(log_prob, bf.hmm_sequence_probs(transitions, initial, seqs))


@given(hmms_of_shapes())
def test_log_conditionals_match_enumeration(hmm):
    """log_conditionals[t, v] == log P(x_{t+1} = v | x_<=t) by enumeration for possible prefixes, and -inf
    for every v after an impossible prefix (including ids >= V)."""
    transitions, initial = hmm
    process = HMMProcess(transitions, initial)
    note(f"structure={process.structure}")
    seqs = enumerate_with_impossible(transitions.shape[0], FULL)
    reference = bf.hmm_reference(transitions, initial, seqs)
    log_cond = np.asarray(process.log_conditionals(seqs))
    assert log_cond.shape == (ROWS, FULL, transitions.shape[0])
    assert_log_matches(log_cond, reference["conditionals"][:, :FULL])
    dead = reference["prefix"][:, :FULL] == 0
    assert np.all(np.isneginf(log_cond[dead]))


@given(hmms_of_shapes())
def test_empty_sequences(hmm):
    """Length 0: log_prob 0 (the empty sequence is certain), no conditionals ([B, 0, V]) and the
    initial distribution as the only belief ([B, 1, S])."""
    transitions, initial = hmm
    vocab, states, _ = transitions.shape
    process = HMMProcess(transitions, initial)
    tokens = np.zeros((3, 0), np.int64)
    np.testing.assert_array_equal(np.asarray(process.log_prob(tokens)), np.zeros(3))
    assert process.log_conditionals(tokens).shape == (3, 0, vocab)
    np.testing.assert_array_equal(np.asarray(process.belief_states(tokens)), np.broadcast_to(initial, (3, 1, states)))


@given(hmms_of_shapes())
def test_belief_states_match_enumeration(hmm):
    """belief_states[t] == P(state after t tokens | x_<=t) by enumeration; entry 0 is the initial
    distribution; after an impossible token the belief stays at the last possible belief."""
    transitions, initial = hmm
    process = HMMProcess(transitions, initial)
    note(f"structure={process.structure}")
    seqs = enumerate_with_impossible(transitions.shape[0], FULL)
    reference = bf.hmm_reference(transitions, initial, seqs)
    beliefs = np.asarray(process.belief_states(seqs))
    assert beliefs.shape == (ROWS, FULL + 1, transitions.shape[1])
    assert not np.any(np.isnan(beliefs))
    np.testing.assert_array_equal(beliefs[:, 0], np.broadcast_to(initial, beliefs[:, 0].shape))
    np.testing.assert_allclose(beliefs, reference["beliefs"], rtol=0, atol=1e-12)
    # the frozen belief is the last possible one exactly, not a recomputation
    for t in range(1, FULL + 1):
        dead = reference["prefix"][:, t] == 0
        np.testing.assert_array_equal(beliefs[dead, t], beliefs[dead, t - 1])


@given(hmms_of_shapes(), st.integers(0, 2**32 - 1))
def test_posterior_with_latent_map_matches_enumeration(hmm, seed):
    """posterior(tokens, name) == P(latent | x_<=t) by enumeration for a random map states -> values;
    `latents` lists each name with its labels; latent=None is the first latent."""
    transitions, initial = hmm
    num_states = transitions.shape[1]
    rng = np.random.default_rng(seed)
    # fixed value counts per name keep the jit cache small (labels are static, maps are [S, K] leaves)
    spec = {}
    for name, num_values in (("colour", 3), ("parity", 2)):
        spec[name] = ([f"{name}{k}" for k in range(num_values)], rng.integers(num_values, size=num_states))
    process = HMMProcess(transitions, initial, latents=spec)
    assert process.latents == {name: tuple(labels) for name, (labels, _) in spec.items()}

    seqs = enumerate_with_impossible(transitions.shape[0], FULL)
    beliefs = bf.hmm_reference(transitions, initial, seqs)["beliefs"]
    for name, (labels, of_state) in spec.items():
        expected = beliefs @ one_hot_map(of_state, len(labels))  # P(value k) = sum of P(state j), map(j) = k
        posterior = np.asarray(process.posterior(seqs, name))
        assert posterior.shape == (ROWS, FULL + 1, len(labels))
        np.testing.assert_allclose(posterior, expected, rtol=0, atol=1e-12)
    first = next(iter(spec))
    np.testing.assert_allclose(
        np.asarray(process.posterior(seqs)), np.asarray(process.posterior(seqs, first)), rtol=0, atol=0
    )


@given(hmms_of_shapes())
def test_posterior_without_map_is_belief_states(hmm):
    """With no latents map the one latent is "state" (S labels) and posterior == belief_states."""
    transitions, initial = hmm
    process = HMMProcess(transitions, initial)
    assert list(process.latents) == ["state"]
    assert len(process.latents["state"]) == transitions.shape[1]
    assert len(set(process.latents["state"])) == transitions.shape[1]
    seqs = enumerate_with_impossible(transitions.shape[0], FULL)
    beliefs = np.asarray(process.belief_states(seqs))
    np.testing.assert_allclose(np.asarray(process.posterior(seqs)), beliefs, rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(process.posterior(seqs, "state")), beliefs, rtol=0, atol=1e-15)


def test_unknown_latent_raises():
    """posterior with a latent name the process does not have raises ValueError naming `latent`."""
    transitions, initial = random_hmm(np.random.default_rng(0), 2, 2, "dense")
    tokens = np.zeros((1, 2), np.int64)
    with pytest.raises(ValueError, match="latent"):
        HMMProcess(transitions, initial).posterior(tokens, "author")
    process = HMMProcess(transitions, initial, latents={"author": (["a", "b"], [0, 1])})
    with pytest.raises(ValueError, match="latent"):
        process.posterior(tokens, "state")


@given(hmms_of_shapes())
def test_step_reproduces_conditionals(hmm):
    """init_state(B) then step(token) gives log P(x_{t+1} = v | x_<=t) (enumeration) at every t, the
    same numbers as log_conditionals, and -inf rows after impossible tokens."""
    transitions, initial = hmm
    process = HMMProcess(transitions, initial)
    seqs = enumerate_with_impossible(transitions.shape[0], FULL)
    reference = bf.hmm_reference(transitions, initial, seqs)["conditionals"]  # [N, L+1, V]
    state, log_next = process.init_state(ROWS)
    outputs = [np.asarray(log_next)]
    for t in range(FULL):
        state, log_next = process.step(state, jnp.asarray(seqs[:, t], jnp.int32))
        outputs.append(np.asarray(log_next))
    stepped = np.stack(outputs, axis=1)
    assert stepped.shape == reference.shape
    assert_log_matches(stepped, reference)
    np.testing.assert_allclose(stepped[:, :FULL], np.asarray(process.log_conditionals(seqs)), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Structure detection
# --------------------------------------------------------------------------------------------------


def _is_emit_then_move(t: np.ndarray, atol: float) -> bool:
    """Whether T[v, i, j] = B[i, v] A[i, j] with B, A the marginals of T (the only possible factors)."""
    emit, move = t.sum(axis=2).T, t.sum(axis=0)
    return bool(np.allclose(t, emit.T[:, :, None] * move[None], rtol=0, atol=atol))


def _is_move_then_emit(t: np.ndarray, atol: float) -> bool:
    """Whether T[v, i, j] = A[i, j] C[j, v]: every T[v, :, j] is proportional to A[:, j]."""
    move = t.sum(axis=0)
    arrive = move.sum(axis=0)
    emit = np.divide(t.sum(axis=1).T, arrive[:, None], out=np.zeros(t.shape[::2][::-1]), where=arrive[:, None] > 0)
    return bool(np.allclose(t, move[None] * emit.T[:, None, :], rtol=0, atol=atol))


@given(hmms(styles=("emit_then_move", "move_then_emit", "dense", "sparse", "deterministic")))
def test_structure_detection(hmm):
    """`structure` is emit_then_move when T = B[i,v] A[i,j], else move_then_emit when T = A[i,j] C[j,v],
    and general when T is clearly neither."""
    transitions, initial = hmm
    structure = HMMProcess(transitions, initial).structure
    if _is_emit_then_move(transitions, 1e-12):
        assert structure == "emit_then_move"
    elif _is_move_then_emit(transitions, 1e-12):
        assert structure == "move_then_emit"
    elif not _is_emit_then_move(transitions, 1e-6) and not _is_move_then_emit(transitions, 1e-6):
        assert structure == "general"


def test_structure_of_known_factorisations():
    """A standard HMM B[i,v] A[i,j] is emit_then_move; a Mess3-like A[i,j] C[j,v] is move_then_emit; a
    token that decides the next state is general."""
    rng = np.random.default_rng(7)
    move = rng.dirichlet(np.ones(3), size=3)
    emit = rng.dirichlet(np.ones(2), size=3)
    initial = np.full(3, 1 / 3)
    assert HMMProcess(np.einsum("iv,ij->vij", emit, move), initial).structure == "emit_then_move"
    assert HMMProcess(np.einsum("ij,jv->vij", move, emit), initial).structure == "move_then_emit"
    arrival = np.zeros((2, 2, 2))
    arrival[0, :, 0] = arrival[1, :, 1] = 0.5  # token v sends the chain to state v: A = 1/2, C = I
    assert HMMProcess(arrival, np.array([0.5, 0.5])).structure == "move_then_emit"
    general = arrival.copy()
    general[:, 1] = [[0.2, 0.3], [0.4, 0.1]]  # from state 1, token and move are dependent otherwise
    assert HMMProcess(general, np.array([0.5, 0.5])).structure == "general"


@pytest.mark.parametrize("dtype, delta", [(np.float64, 1e-16), (np.float32, 1e-7)])
def test_structural_zeros_survive_structure_detection(dtype, delta):
    """From state 0, token 1 (probability delta) always leads to state 1, which never emits 1: so
    "1 1" has probability exactly 0 and log_prob -inf, however small delta is."""
    transitions = np.zeros((2, 2, 2), dtype)
    transitions[0, 0, 0] = 1 - delta  # state 0: emit 0, stay
    transitions[1, 0, 1] = delta  # state 0: emit 1, go to state 1
    transitions[0, 1, 1] = 1.0  # state 1: emit 0 forever
    initial = np.array([1.0, 0.0], dtype)
    assert bf.hmm_sequence_probs(transitions, initial, [[1, 1]])[0] == 0.0
    process = HMMProcess(transitions, initial)
    log_prob = np.asarray(process.log_prob(np.array([[1, 1], [1, 0]])))
    assert log_prob[0] == -np.inf
    assert np.isfinite(log_prob[1])


# --------------------------------------------------------------------------------------------------
# Pytree behaviour: jit caches by shape, not by instance
# --------------------------------------------------------------------------------------------------


def test_new_instance_same_shapes_does_not_recompile():
    """Two different HMMProcess instances with the same shapes and structure share every compiled
    function: the second instance adds nothing to the jit caches."""
    rng = np.random.default_rng(11)
    first = HMMProcess(*random_hmm(rng, 3, 2, "dense"))
    second = HMMProcess(*random_hmm(rng, 3, 2, "dense"))
    assert first.structure == second.structure == "general"
    tokens = enumerate_with_impossible(3, FULL)  # shapes the enumeration tests may have compiled already
    key = jax.random.key(0)

    def use(process):
        process.log_prob(tokens)
        process.log_conditionals(tokens)
        process.belief_states(tokens)
        process.posterior(tokens)
        process.sample(key, 20_000, 4)  # the shape test_hmm_sampling compiles

    compiled = (hmm_module._filter, hmm_module._log_likelihood, hmm_module._sample)
    use(first)
    sizes = [fn._cache_size() for fn in compiled]
    use(second)
    assert [fn._cache_size() for fn in compiled] == sizes
    assert not np.allclose(np.asarray(first.log_prob(tokens)), np.asarray(second.log_prob(tokens)))


def test_works_under_user_jit_and_is_a_process():
    """An HMMProcess is a Process and a pytree: log_prob under a user's jit equals the eager value."""
    transitions, initial = non_unifilar_hmm()
    process = HMMProcess(transitions, initial)
    assert isinstance(process, Process)
    tokens = np.array([[0, 1, 0, 0], [1, 1, 1, 1]])
    jitted = jax.jit(lambda p, x: p.log_prob(x))(process, jnp.asarray(tokens))
    np.testing.assert_allclose(
        np.asarray(jitted), np.log(bf.hmm_sequence_probs(transitions, initial, tokens)), atol=1e-12
    )
    leaves = jax.tree_util.tree_leaves(process)
    assert any(leaf.shape == (2, 2, 2) for leaf in leaves)


def test_token_array_closed_over_by_a_users_jit_is_checked_eagerly():
    """A concrete device array captured by a jitted function reaches check_tokens while jit traces:
    it is still validated (negative ids raise the boundary's ValueError) and scored like eager input."""
    transitions, initial = non_unifilar_hmm()
    process = HMMProcess(transitions, initial)
    tokens = jnp.asarray([[0, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(np.asarray(jax.jit(lambda: process.log_prob(tokens))()),
                               np.log(bf.hmm_sequence_probs(transitions, initial, np.asarray(tokens))), atol=1e-12)
    negative = jnp.asarray([[0, -1, 0, 0]])
    with pytest.raises(ValueError, match="negative token ids"):
        jax.jit(lambda: process.log_prob(negative))()


# --------------------------------------------------------------------------------------------------
# Errors at the boundary
# --------------------------------------------------------------------------------------------------


def _good():
    return random_hmm(np.random.default_rng(5), 2, 3, "dense")


def _with(array, index, value):
    out = np.array(array, np.float64)
    out[index] = value
    return out


@pytest.mark.parametrize(
    "make_transitions",
    [
        pytest.param(lambda t: t[0], id="ndim-2"),
        pytest.param(lambda t: t[None], id="ndim-4"),
        pytest.param(lambda t: t[:, :, :2] / t[:, :, :2].sum(axis=(0, 2), keepdims=True), id="non-square"),
        pytest.param(lambda t: _with(t, (0, 0, 0), np.nan), id="nan"),
        pytest.param(lambda t: _with(t, (0, 0, 0), np.inf), id="inf"),
        pytest.param(
            lambda t: _with(_with(t, (0, 0, 0), -0.1), (1, 0, 0), t[1, 0, 0] + t[0, 0, 0] + 0.1), id="negative"
        ),
        pytest.param(lambda t: 1.1 * t, id="rows-sum-above-1"),
        pytest.param(lambda t: _with(t, (1, 2, 0), 0.0), id="one-row-below-1"),
        pytest.param(lambda t: np.zeros((2, 0, 0)), id="empty"),
        pytest.param(lambda t: t.astype(str), id="strings"),
    ],
)
def test_bad_transitions_raise(make_transitions):
    """Malformed transitions raise ValueError naming `transitions`."""
    transitions, initial = _good()
    with pytest.raises(ValueError, match="transitions"):
        HMMProcess(make_transitions(transitions), initial)


@pytest.mark.parametrize(
    "make_initial",
    [
        pytest.param(lambda p: np.full(2, 0.5), id="too-short"),
        pytest.param(lambda p: np.full(4, 0.25), id="too-long"),
        pytest.param(lambda p: p[None], id="ndim-2"),
        pytest.param(lambda p: 0.5 * p, id="sums-below-1"),
        pytest.param(lambda p: np.array([1.5, -0.25, -0.25]), id="negative"),
        pytest.param(lambda p: _with(p, 0, np.nan), id="nan"),
    ],
)
def test_bad_initial_raises(make_initial):
    """A malformed initial distribution raises ValueError naming `initial`."""
    transitions, initial = _good()
    with pytest.raises(ValueError, match="initial"):
        HMMProcess(transitions, make_initial(initial))


@pytest.mark.parametrize(
    "latents",
    [
        pytest.param({"author": (["a", "b"], [0, 1])}, id="map-too-short"),
        pytest.param({"author": (["a", "b"], [0, 1, 2])}, id="value-beyond-labels"),
        pytest.param({"author": (["a", "b"], [0, -1, 1])}, id="negative-value"),
        pytest.param({"author": (["a", "b"], [0.0, 1.0, 1.0])}, id="float-map"),
    ],
)
def test_bad_latent_maps_raise(latents):
    """A latents map that does not send each state to one of its labels raises ValueError naming it."""
    with pytest.raises(ValueError, match="latents"):
        HMMProcess(*_good(), latents=latents)


@pytest.mark.parametrize(
    "tokens",
    [
        pytest.param(np.array([[0, -1, 1]]), id="negative-id"),
        pytest.param(np.array([0, 1, 1]), id="1-D"),
        pytest.param(np.zeros((1, 2, 3), np.int64), id="3-D"),
        pytest.param(np.array([[0.0, 1.0]]), id="float"),
        pytest.param(np.array([[True, False]]), id="bool"),
    ],
)
@pytest.mark.parametrize("method", ["log_prob", "log_conditionals", "belief_states", "posterior"])
def test_bad_tokens_raise(tokens, method):
    """Negative ids, non-2-D batches and non-integer tokens raise ValueError naming `tokens`."""
    process = HMMProcess(*_good())
    with pytest.raises(ValueError, match="tokens"):
        getattr(process, method)(tokens)


def test_negative_ids_in_traced_code_are_impossible_not_wrapped():
    """The boundary refuses negative ids, but traced code (a caller's jit, or `step` inside a rollout)
    cannot raise: there a negative id is an impossible token (log-prob -inf, the sequence dead), never
    read as id V - 1 by wrap-around indexing."""
    process = HMMProcess(*_good())
    tokens = jnp.array([[0, -1, 1], [0, 1, 1]])
    log_prob = jax.jit(lambda p, x: p.log_prob(x))(process, tokens)
    assert log_prob[0] == -np.inf and np.isfinite(log_prob[1])
    conditionals = jax.jit(lambda p, x: p.log_conditionals(x))(process, tokens)
    assert np.all(np.isneginf(np.asarray(conditionals)[0, 2]))
    state, _ = process.init_state(1)
    state, log_next = jax.jit(process.step)(state, jnp.array([-1]))
    assert not bool(state[1][0]) and np.all(np.isneginf(np.asarray(log_next)))


@pytest.mark.parametrize(
    "num_sequences, length, argument",
    [
        (0, 3, "num_sequences"),
        (-2, 3, "num_sequences"),
        (2.5, 3, "num_sequences"),
        (2, -1, "length"),
        (2, 1.5, "length"),
    ],
)
def test_bad_sample_sizes_raise(num_sequences, length, argument):
    """sample with a non-positive or fractional num_sequences, or a negative or fractional length,
    raises ValueError naming that argument."""
    with pytest.raises(ValueError, match=argument):
        HMMProcess(*_good()).sample(jax.random.key(0), num_sequences, length)


@pytest.mark.parametrize("token", [2**31, 2**32, 2**32 + 1])
def test_huge_token_ids_are_impossible_or_rejected(token):
    """An id far beyond V (not representable in int32) is either impossible (-inf) or a ValueError,
    never silently read as another token."""
    process = HMMProcess(np.full((2, 1, 1), 0.5), np.ones(1))  # a fair coin
    tokens = np.array([[token, 0]], np.int64)
    try:
        log_prob = np.asarray(process.log_prob(tokens))
    except ValueError:
        return
    assert log_prob[0] == -np.inf
