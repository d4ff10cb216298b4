"""Tests of toymodels/predictors.py: the three transforms (with_temperature, sticky_marker,
override_off_support), their incremental interface, sequence_log_prob, and boundary errors.

Every expected number comes from the transform's mathematical definition written out in NumPy
(tests/brute_force_pq.py), applied to conditionals of the base HMMs obtained by path enumeration
(tests/brute_force.py), never from the library. HMMs are drawn at random (tests/strategies.py) and embedded into one fixed array shape
(`embed_hmm`: V = 3 with zero-probability padding tokens, unreachable padding states) so that Hypothesis
examples share one compilation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brute_force import all_sequences, hmm_sequence_probs, sequence_probs_from_conditionals
from brute_force_pq import (
    conditionals_table,
    hmm_conditional,
    override_definition,
    sticky_definition,
    tempered_log_definition,
)
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import embed_hmm, hmms
from wrappers import ConditionalsOnly

from toymodels.predictors import (
    PytreeNode,
    _sequence_log_prob,
    override_off_support,
    sequence_log_prob,
    sticky_marker,
    supports_step,
    with_temperature,
)
from toymodels.processes import HMMProcess

V = 3  # every embedded HMM has vocab_size 3; id 3 is impossible for it (and is the sticky marker g)
LENGTH = 4
TOKENS = all_sequences(V + 1, LENGTH)  # all 256 sequences over ids 0..3

# A hand-made HMM with zeros everywhere that matters: token 2 is never emitted, state 1 never emits 1.
ZERO_HEAVY = (
    np.array(
        [
            [[0.5, 0.0], [0.0, 1.0]],  # token 0
            [[0.0, 0.5], [0.0, 0.0]],  # token 1
            [[0.0, 0.0], [0.0, 0.0]],  # token 2
        ]
    ),
    np.array([1.0, 0.0]),
)

taus = st.one_of(st.sampled_from([1.0, 0.05, 20.0]), st.floats(0.05, 20.0))
epsilons = st.one_of(st.sampled_from([0.01, 0.5]), st.floats(1e-9, 1.0 - 1e-9))


def process(arrays, vocab_size: int = V) -> HMMProcess:
    return HMMProcess(*embed_hmm(*arrays, vocab_size=vocab_size))


def row_log_probability(log_cond, row) -> float:
    """log Q(x_1..x_L) = sum_t log q(x_t | x_<t) from a log-conditional function (ids beyond its width:
    -inf)."""
    total = 0.0
    for t, token in enumerate(row):
        log_probs = log_cond(tuple(int(v) for v in row[:t]))
        total += log_probs[token] if token < len(log_probs) else -np.inf
    return total


def assert_log_matches(log_actual, log_expected):
    """Same -inf pattern (no NaN anywhere), and equal probabilities where finite: to 1e-12 absolute and
    to a relative 1e-8 (compared as logs, so that tiny probabilities are checked too)."""
    log_actual, log_expected = np.asarray(log_actual, np.float64), np.asarray(log_expected, np.float64)
    assert not np.isnan(log_actual).any(), "NaN in log-probabilities"
    np.testing.assert_array_equal(np.isneginf(log_actual), np.isneginf(log_expected))
    finite = np.isfinite(log_expected)
    np.testing.assert_allclose(np.exp(log_actual[finite]), np.exp(log_expected[finite]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(log_actual[finite], log_expected[finite], rtol=0, atol=1e-8)


def log_of(probs):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, np.float64))


# --------------------------------------------------------------------------------------------------
# Small predictors of our own
# --------------------------------------------------------------------------------------------------


class PoisonedByUnknownIds(PytreeNode):
    """The base HMM, except that every output turns NaN as soon as any id >= vocab_size is passed in
    (anywhere in the batch): it detects whether a wrapper ever shows it a token it does not know."""

    _data_fields = ("base",)

    def __init__(self, base):
        self.base = base

    @property
    def vocab_size(self):
        return self.base.vocab_size

    max_length = None

    def _poison(self, tokens):
        return jnp.where(jnp.any(tokens >= self.vocab_size), jnp.nan, 0.0)

    def log_conditionals(self, tokens):
        return self.base.log_conditionals(tokens) + self._poison(tokens)

    def init_state(self, batch):
        return self.base.init_state(batch)

    def step(self, state, token):
        state, log_next = self.base.step(state, token)
        return state, log_next + self._poison(token)


@jax.jit
def run_steps(predictor, tokens):
    """[B, L, V]: the log_next before each token, through init_state/step only."""
    state, log_next = predictor.init_state(tokens.shape[0])

    def body(carry, token):
        state, log_next = carry
        new_state, new_next = predictor.step(state, token)
        return (new_state, new_next), log_next

    _, outs = jax.lax.scan(body, (state, log_next), tokens.T)
    return jnp.swapaxes(outs, 0, 1)


# --------------------------------------------------------------------------------------------------
# with_temperature
# --------------------------------------------------------------------------------------------------


@given(q_arrays=hmms(), tau=taus)
@example(q_arrays=ZERO_HEAVY, tau=0.05)
@example(q_arrays=ZERO_HEAVY, tau=20.0)
def test_temperature_conditionals_are_normalised_powers(q_arrays, tau):
    """with_temperature(q, tau) conditionals equal q^(1/tau) renormalised; zeros stay -inf, never NaN."""
    log_cond = with_temperature(process(q_arrays), tau).log_conditionals(TOKENS)
    expected = conditionals_table(tempered_log_definition(hmm_conditional(*q_arrays, V), tau), TOKENS)
    assert_log_matches(log_cond, expected)


# --------------------------------------------------------------------------------------------------
# sticky_marker
# --------------------------------------------------------------------------------------------------


@given(q_arrays=hmms(), eps=epsilons)
@example(q_arrays=ZERO_HEAVY, eps=0.25)
def test_sticky_marker_conditionals_follow_definition(q_arrays, eps):
    """sticky_marker(q, eps) has vocab V+1, marker V, q'(g)=eps and (1-eps)q before g, q'(g)=1 after."""
    sticky = sticky_marker(process(q_arrays), eps)
    assert sticky.vocab_size == V + 1 and sticky.marker == V
    expected = conditionals_table(sticky_definition(hmm_conditional(*q_arrays, V), eps, V), TOKENS)
    assert_log_matches(sticky.log_conditionals(TOKENS), log_of(expected))


@given(q_arrays=hmms(), eps=epsilons)
def test_sticky_marker_sequence_probabilities_follow_definition(q_arrays, eps):
    """sequence_log_prob of the sticky marker equals the chain rule over its definition, summing to 1."""
    sticky = sticky_marker(process(q_arrays), eps)
    expected = sequence_probs_from_conditionals(sticky_definition(hmm_conditional(*q_arrays, V), eps, V), V + 1, LENGTH)
    log_probs = np.asarray(sequence_log_prob(sticky, TOKENS))
    assert_log_matches(log_probs, log_of(expected))
    assert np.exp(log_probs).sum() == pytest.approx(1.0, abs=1e-12)


def test_sticky_marker_base_never_sees_marker():
    """The base predictor is never shown the marker id, neither by log_conditionals nor by step."""
    base = PoisonedByUnknownIds(process(ZERO_HEAVY))
    assert np.isnan(np.asarray(base.log_conditionals(TOKENS))).all()  # the poison works
    sticky = sticky_marker(base, 0.3)
    assert not np.isnan(np.asarray(sticky.log_conditionals(TOKENS))).any()
    assert not np.isnan(np.asarray(run_steps(sticky, jnp.asarray(TOKENS)))).any()


# --------------------------------------------------------------------------------------------------
# override_off_support
# --------------------------------------------------------------------------------------------------


@given(
    p_vocab=st.sampled_from([2, 3]),
    data=st.data(),
    q_arrays=hmms(),
    r_arrays=hmms(),
)
def test_override_follows_q_on_support_and_r_elsewhere(p_vocab, data, q_arrays, r_arrays):
    """override_off_support(q, p, r) gives q's conditionals where P(prefix) > 0 and r's elsewhere."""
    p_arrays = data.draw(hmms(max_vocab=p_vocab, styles=("sparse", "deterministic", "emit_then_move")), label="p")
    predictor = override_off_support(process(q_arrays), process(p_arrays, p_vocab), process(r_arrays))
    definition = override_definition(p_arrays, hmm_conditional(*q_arrays, V), hmm_conditional(*r_arrays, V))
    assert_log_matches(predictor.log_conditionals(TOKENS), log_of(conditionals_table(definition, TOKENS)))


# --------------------------------------------------------------------------------------------------
# The incremental interface and sequence_log_prob
# --------------------------------------------------------------------------------------------------


def build(kind: str, arrays, eps: float, tau: float):
    """One predictor of each kind from three HMMs (p is the first, and sparse enough to matter), with its
    log-conditionals by definition (log space, so that q^(1/tau) at small tau never underflows to 0)."""
    p, q, r = (process(a) for a in arrays)
    cond_p, cond_q, cond_r = (hmm_conditional(*a, V) for a in arrays)
    if kind == "hmm":
        return q, lambda prefix: log_of(cond_q(prefix))
    if kind == "tempered":
        return with_temperature(q, tau), tempered_log_definition(cond_q, tau)
    if kind == "sticky":
        sticky = sticky_definition(cond_q, eps, V)
        return sticky_marker(q, eps), lambda prefix: log_of(sticky(prefix))
    if kind == "override":
        override = override_definition(arrays[0], cond_q, cond_r)
        return override_off_support(q, p, r), lambda prefix: log_of(override(prefix))
    if kind == "tempered_sticky":
        sticky = sticky_definition(cond_q, eps, V)
        return with_temperature(sticky_marker(q, eps), tau), tempered_log_definition(sticky, tau)
    raise AssertionError(kind)


KINDS = ("hmm", "tempered", "sticky", "override", "tempered_sticky")
three_hmms = st.tuples(hmms(styles=("sparse", "deterministic", "emit_then_move")), hmms(), hmms())


@given(kind=st.sampled_from(KINDS), arrays=three_hmms, eps=epsilons, tau=taus)
def test_step_equals_log_conditionals(kind, arrays, eps, tau):
    """init_state/step give exactly the log_conditionals of every transform (same -inf, no NaN)."""
    predictor, _ = build(kind, arrays, eps, tau)
    assert supports_step(predictor)
    stepped = np.asarray(run_steps(predictor, jnp.asarray(TOKENS)))
    full = np.asarray(predictor.log_conditionals(TOKENS))
    assert not np.isnan(stepped).any()
    np.testing.assert_array_equal(np.isneginf(stepped), np.isneginf(full))
    finite = np.isfinite(full)
    np.testing.assert_allclose(stepped[finite], full[finite], rtol=0, atol=1e-12)


@given(kind=st.sampled_from(KINDS), arrays=three_hmms, eps=epsilons, tau=taus)
def test_sequence_log_prob_matches_brute_force(kind, arrays, eps, tau):
    """sequence_log_prob equals the product of the defining conditionals (-inf for impossible ids)."""
    predictor, log_cond = build(kind, arrays, eps, tau)
    expected = np.array([row_log_probability(log_cond, row) for row in TOKENS])
    assert_log_matches(sequence_log_prob(predictor, TOKENS), expected)


@given(q_arrays=hmms(), p_arrays=hmms())
def test_hmm_sequence_log_prob_matches_path_sums(q_arrays, p_arrays):
    """sequence_log_prob of a plain HMM equals path enumeration, including ids >= V (probability 0)."""
    expected = hmm_sequence_probs(*q_arrays, TOKENS)
    assert_log_matches(sequence_log_prob(process(q_arrays), TOKENS), log_of(expected))


def test_supports_step_false_without_incremental_interface():
    """supports_step is False for a bare Predictor and for every transform wrapping one, True otherwise."""
    hmm = process(ZERO_HEAVY)
    bare = ConditionalsOnly(hmm)
    assert supports_step(hmm) and not supports_step(bare)
    assert supports_step(with_temperature(hmm, 2.0)) and not supports_step(with_temperature(bare, 2.0))
    assert supports_step(sticky_marker(hmm, 0.1)) and not supports_step(sticky_marker(bare, 0.1))
    assert supports_step(override_off_support(hmm, hmm, hmm))
    for args in ((bare, hmm, hmm), (hmm, bare, hmm), (hmm, hmm, bare)):
        assert not supports_step(override_off_support(*args))
    # The wrappers still compute the same conditionals through log_conditionals.
    np.testing.assert_array_equal(
        np.asarray(with_temperature(bare, 2.0).log_conditionals(TOKENS)),
        np.asarray(with_temperature(hmm, 2.0).log_conditionals(TOKENS)),
    )


def test_transforms_do_not_recompile_for_new_parameters():
    """Transforms are pytrees: new tau, eps or HMM parameters of the same shapes reuse the compilation."""
    rng = np.random.default_rng(0)
    from strategies import random_hmm

    def arrays():
        return random_hmm(rng, 3, 3, "dense")

    makers = [
        lambda: with_temperature(process(arrays()), rng.uniform(0.1, 5)),
        lambda: sticky_marker(process(arrays()), rng.uniform(0.01, 0.99)),
        lambda: override_off_support(process(arrays()), process(arrays()), process(arrays())),
    ]
    for make in makers:
        sequence_log_prob(make(), TOKENS)
        size = _sequence_log_prob._cache_size()
        sequence_log_prob(make(), TOKENS)
        assert _sequence_log_prob._cache_size() == size


# --------------------------------------------------------------------------------------------------
# Errors at the boundary
# --------------------------------------------------------------------------------------------------

_Q3 = process(ZERO_HEAVY)  # vocab 3
_Q2 = HMMProcess(*embed_hmm(ZERO_HEAVY[0][:2], ZERO_HEAVY[1], vocab_size=2))  # the same, without token 2


class NotAPredictor:
    vocab_size = 3  # but no log_conditionals


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: with_temperature(_Q3, 0.0), "tau"),
        (lambda: with_temperature(_Q3, -1.0), "tau"),
        (lambda: with_temperature(_Q3, float("nan")), "tau"),
        (lambda: with_temperature(_Q3, float("inf")), "tau"),
        (lambda: sticky_marker(_Q3, 0.0), "eps"),
        (lambda: sticky_marker(_Q3, 1.0), "eps"),
        (lambda: sticky_marker(_Q3, -0.5), "eps"),
        (lambda: sticky_marker(_Q3, 1.5), "eps"),
        (lambda: sticky_marker(_Q3, float("nan")), "eps"),
        (lambda: override_off_support(_Q3, _Q3, _Q2), "share a vocabulary"),
        (lambda: override_off_support(_Q3, _Q3, sticky_marker(_Q3, 0.1)), "share a vocabulary"),
        (lambda: override_off_support(_Q2, _Q3, _Q2), "exceeds"),
        (lambda: with_temperature(NotAPredictor(), 1.0), "log_conditionals"),
        (lambda: sticky_marker("q", 0.1), "vocab_size"),
        (lambda: override_off_support(_Q3, object(), _Q3), "p must"),
        (lambda: override_off_support(_Q3, _Q3, 42), "r must"),
        (lambda: sequence_log_prob(_Q3, np.array([[0, -1]])), "negative"),
        (lambda: sequence_log_prob(_Q3, np.array([0, 1])), "shape"),
    ],
)
def test_transform_arguments_are_validated(make, match):
    """Bad tau (<= 0, NaN, inf), eps outside (0, 1), mismatched vocabularies and non-predictors raise."""
    with pytest.raises(ValueError, match=match):
        make()
