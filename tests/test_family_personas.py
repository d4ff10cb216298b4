"""Personas on a stage (C9) against the brute-force oracle of brute_force_personas.py.

Checked: probabilities of every prefix and the persona posterior against enumeration; the stage is the
prior-weighted mixture of its single-persona stages, with the posterior-weighted mixture as its
next-token conditional; fine-tuning data drawn from a persona subset in proportion to the prior is the
stage with the restricted prior (four constructions agree); the random generator; deterministic
corners; 10^4-token sequences; every bad argument.

Shapes are drawn from short lists (each (K, V, L) is one compilation) and every enumeration is one
padded batch of ROWS sequences of length 4.
"""

from __future__ import annotations

import brute_force as bf
import numpy as np
import pytest
from brute_force_personas import (
    ATOL,
    LENGTH,
    ROWS,
    enumerate_sequences,
    expected_speaker,
    log_prefix,
    random_prior,
    random_rows,
    speaker_probs,
    stage_oracle,
)
from hypothesis import given
from hypothesis import strategies as st
from log_checks import assert_log_matches

from toymodels.processes.personas import persona_stage, random_persona_stage, restrict_prior
from toymodels.processes.registry import catalog, make_process


# (K, V, L): S = K * 2L * V = 16 and 36. The dialog shapes below give the same (S, V) pairs, and the
# single-persona and subset stages S = 12 and 24, so the whole file compiles few filters.
STAGE_SHAPES = ((2, 2, 2), (3, 3, 2))


@st.composite
def stages(draw, shapes=STAGE_SHAPES):
    num, vocab, turn_length = draw(st.sampled_from(shapes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sparse = draw(st.booleans())
    personas = random_rows(rng, (num, vocab), vocab, sparse)
    user = random_rows(rng, (vocab,), vocab, sparse)
    prior = random_prior(rng, num, sparse)
    start = random_rows(rng, (), vocab, sparse) if draw(st.booleans()) else None
    return dict(personas=personas, prior=prior, user=user, turn_length=turn_length, start=start)


def resolved_start(kwargs) -> np.ndarray:
    vocab = np.shape(kwargs["user"])[0]
    return np.full(vocab, 1 / vocab) if kwargs["start"] is None else kwargs["start"]


@given(stages())
def test_stage_matches_enumeration(kwargs):
    """log P(x_<=t) and P(persona | x_<=t) equal the oracle for every sequence of (V+1)^4 and every
    prefix; "speaker" is the one-hot speaker of the next token at every possible prefix; never NaN."""
    process = persona_stage(**kwargs)
    vocab, turn_length = process.vocab_size, kwargs["turn_length"]
    seqs, count = enumerate_sequences(vocab)
    prob, post = stage_oracle(
        kwargs["personas"],
        kwargs["prior"],
        kwargs["user"],
        resolved_start(kwargs),
        turn_length,
        seqs[:count],
    )
    assert_log_matches(log_prefix(process, seqs)[:count], prob)
    np.testing.assert_allclose(
        np.asarray(process.posterior(seqs, "persona"))[:count], post, rtol=0, atol=ATOL
    )
    speaker = np.asarray(process.posterior(seqs, "speaker"))[:count]
    expected = np.broadcast_to(np.eye(2)[expected_speaker(turn_length, LENGTH)], speaker.shape)
    possible = prob > 0  # after an impossible prefix the belief (and so the speaker) stays put
    assert np.all(speaker[possible][expected[possible] == 0] == 0.0)  # the other speaker: exactly 0
    np.testing.assert_allclose(speaker[possible], expected[possible], rtol=0, atol=1e-15)


@given(stages())
def test_stage_is_the_mixture_of_single_personas(kwargs):
    """P(x) = sum_k pi_k P_k(x) with P_k the stage holding persona k alone, for every x in V^4; and the
    next-token conditional is the posterior-weighted mixture of the personas' conditionals,
    p(v | x_<t) = sum_k P(k | x_<t) p_k(v | x_<t), at every possible prefix."""
    process = persona_stage(**kwargs)
    seqs, count = enumerate_sequences(process.vocab_size, impossible=False)
    prior = kwargs["prior"]
    singles = [
        persona_stage(**{**kwargs, "personas": kwargs["personas"][k : k + 1], "prior": [1.0]})
        for k in range(len(prior))
    ]
    log_full = log_prefix(process, seqs)[:count]
    mixture = sum(
        pi * np.exp(log_prefix(single, seqs)[:count]) for pi, single in zip(prior, singles)
    )
    np.testing.assert_allclose(np.exp(log_full), mixture, rtol=1e-12, atol=1e-15)

    cond = np.exp(np.asarray(process.log_conditionals(seqs)))
    post = np.asarray(process.posterior(seqs, "persona"))[:, :LENGTH]
    single_cond = np.stack(
        [np.exp(np.asarray(single.log_conditionals(seqs))) for single in singles], axis=2
    )
    possible = np.isfinite(log_full[:, :LENGTH])
    weighted = np.einsum("nlk,nlkv->nlv", post, np.nan_to_num(single_cond))
    np.testing.assert_allclose(
        cond[:count][possible], weighted[:count][possible], rtol=0, atol=1e-12
    )


@given(stages(shapes=((3, 3, 2),)), st.integers(1, 7))
def test_finetuning_on_a_persona_subset(kwargs, subset_code):
    """Fine-tuning data drawn from a persona subset in proportion to the prior is exactly the stage with
    the prior restricted and renormalised to the subset. Four constructions agree on every x in V^4:
    (i) the stage of the subset's personas alone with pi_k / pi(subset); (ii) all personas with
    restrict_prior(prior, subset); (iii) the full stage conditioned on the persona lying in the subset,
    P(x) P(subset | x) / pi(subset); (iv) the oracle's "draw a persona of the subset with probability
    pi_k / pi(subset), then run it"."""
    prior = kwargs["prior"]
    subset = [k for k in range(3) if subset_code >> k & 1]
    if prior[subset].sum() == 0:
        with pytest.raises(ValueError, match="subset"):
            restrict_prior(prior, subset)
        return
    restricted = restrict_prior(prior, subset)
    mass = prior[subset].sum()
    np.testing.assert_allclose(restricted[subset], prior[subset] / mass, rtol=1e-15)
    assert np.all(np.delete(restricted, subset) == 0) and abs(restricted.sum() - 1) <= 1e-15

    seqs, count = enumerate_sequences(3, impossible=False)
    only = persona_stage(
        **{**kwargs, "personas": kwargs["personas"][subset], "prior": prior[subset] / mass}
    )
    zeroed = persona_stage(**{**kwargs, "prior": restricted})
    full = persona_stage(**kwargs)
    p_only = np.exp(log_prefix(only, seqs)[:count, -1])
    p_zeroed = np.exp(log_prefix(zeroed, seqs)[:count, -1])
    p_conditioned = (
        np.exp(log_prefix(full, seqs)[:count, -1])
        * np.asarray(full.posterior(seqs, "persona"))[:count, -1][:, subset].sum(axis=1)
        / mass
    )
    start = resolved_start(kwargs)
    p_drawn = sum(
        prior[k]
        / mass
        * speaker_probs(kwargs["user"], kwargs["personas"][k], start, 2, seqs[:count])
        for k in subset
    )
    for other in (p_zeroed, p_conditioned, p_only):
        np.testing.assert_allclose(other, p_drawn, rtol=1e-12, atol=1e-15)
    assert np.all(
        np.asarray(zeroed.posterior(seqs, "persona"))[..., np.delete(np.arange(3), subset)] == 0
    )


def test_random_persona_stage():
    """Deterministic in the seed; closeness 1 makes every persona the same (the posterior never moves);
    split vocabularies put user tokens only in user turns and persona tokens only in assistant turns."""
    a, b = random_persona_stage(3, 3, 2, 0.5, seed=7), random_persona_stage(3, 3, 2, 0.5, seed=7)
    assert np.array_equal(np.asarray(a.transitions), np.asarray(b.transitions))
    assert not np.array_equal(
        np.asarray(a.transitions),
        np.asarray(random_persona_stage(3, 3, 2, 0.5, seed=8).transitions),
    )
    seqs, _ = enumerate_sequences(3)
    same = random_persona_stage(3, 3, 2, closeness=1.0, seed=7, prior=[0.5, 0.3, 0.2])
    np.testing.assert_allclose(
        np.asarray(same.posterior(seqs, "persona")),
        np.broadcast_to([0.5, 0.3, 0.2], (ROWS, LENGTH + 1, 3)),
        rtol=0,
        atol=1e-12,
    )

    split = random_persona_stage(3, 3, 2, 0.5, seed=7, user_vocab_size=1)
    assert split.info["user_tokens"] == (0,) and split.info["assistant_tokens"] == (1, 2)
    assert split.info["turn_length"] == 2 and split.info["token_labels"] == ("t0", "t1", "t2")
    cond = np.exp(np.asarray(split.log_conditionals(seqs)))
    user_turn = expected_speaker(2, LENGTH)[:LENGTH] == 0
    possible = np.isfinite(log_prefix(split, seqs)[:, :LENGTH])
    assert np.all(cond[:, user_turn][possible[:, user_turn]][:, 1:] == 0)
    assert np.all(cond[:, ~user_turn][possible[:, ~user_turn]][:, 0] == 0)


def test_stage_corners():
    """Deterministic personas (one-hot rows) and a deterministic user: each persona has one sequence,
    so the posterior is either the prior (before the personas differ) or one-hot; an impossible id keeps
    the last possible posterior and gives -inf."""
    cycle = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], float)  # u -> u + 1
    stay = np.eye(3)
    user = stay
    process = persona_stage([cycle, stay], [0.25, 0.75], user, turn_length=1, start=[1.0, 0.0, 0.0])
    seqs = np.array([[0, 1, 1, 2], [0, 0, 0, 0], [0, 1, 2, 2], [0, 3, 0, 0]])
    padded = seqs[np.arange(ROWS) % 4]  # the batch shape of the other tests: no new compilation
    log_p = log_prefix(process, padded)[:4, -1]
    np.testing.assert_allclose(np.exp(log_p[:2]), [0.25, 0.75], rtol=1e-15)
    assert np.all(np.isneginf(log_p[2:]))
    post = np.asarray(process.posterior(padded, "persona"))[:4]
    np.testing.assert_array_equal(post[0, 2:], [[1, 0]] * 3)
    np.testing.assert_array_equal(post[1, 2:], [[0, 1]] * 3)
    np.testing.assert_allclose(post[:, :2], np.broadcast_to([0.25, 0.75], (4, 2, 2)), rtol=1e-15)
    assert np.all(post[3, 2:] == post[3, 1])


def test_long_sequences():
    """10^4 tokens (random ids: every sequence is possible under Dirichlet policies): log P is finite
    and agrees with the independent NumPy forward pass of brute_force.py; posteriors have no NaN."""
    tokens = np.random.default_rng(0).integers(0, 3, size=(2, 10_000))
    process = random_persona_stage(4, 3, 3, 0.5, seed=1)
    log_p = np.asarray(process.log_prob(tokens))
    assert np.all(np.isfinite(log_p))
    reference, _ = bf.hmm_forward(
        np.asarray(process.transitions), np.asarray(process.initial), tokens[0]
    )
    np.testing.assert_allclose(log_p[0], reference[-1], rtol=1e-10)
    post = np.asarray(process.posterior(tokens, "persona"))
    assert not np.any(np.isnan(post)) and np.allclose(post.sum(-1), 1, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The boundary and the registry
# --------------------------------------------------------------------------------------------------

EYE2 = np.eye(2)
HALF = np.full((2, 2), 0.5)
STAGE = dict(personas=[EYE2, HALF], prior=[0.5, 0.5], user=HALF, turn_length=1)
RANDOM = dict(num_personas=2, vocab_size=3, turn_length=1)


@pytest.mark.parametrize(
    "constructor, kwargs, match",
    [
        (persona_stage, dict(STAGE, personas=[EYE2, [[0.5, 0.6], [0.5, 0.5]]]), "personas"),
        (persona_stage, dict(STAGE, personas=[[[1.0, 0.0]], [[1.0, 0.0]]]), "personas"),
        (persona_stage, dict(STAGE, personas=EYE2), "personas"),
        (persona_stage, dict(STAGE, prior=[0.5, 0.6]), "prior"),
        (persona_stage, dict(STAGE, prior=[1.0]), "prior"),
        (persona_stage, dict(STAGE, prior=[1.5, -0.5]), "prior"),
        (persona_stage, dict(STAGE, prior=[]), "prior"),
        (persona_stage, dict(STAGE, user=np.eye(3)), "user"),
        (persona_stage, dict(STAGE, user=[[np.nan, 1.0], [0.5, 0.5]]), "user"),
        (persona_stage, dict(STAGE, turn_length=0), "turn_length"),
        (persona_stage, dict(STAGE, turn_length=1.5), "turn_length"),
        (persona_stage, dict(STAGE, start=[0.5, 0.5, 0.0]), "start"),
        (persona_stage, dict(STAGE, start=[0.5, 0.6]), "start"),
        (persona_stage, dict(STAGE, persona_labels=["x"]), "persona_labels"),
        (persona_stage, dict(STAGE, persona_labels=["x", "x"]), "persona_labels"),
        (persona_stage, dict(STAGE, token_labels=["a", "b", "c"]), "token_labels"),
        (random_persona_stage, dict(RANDOM, num_personas=0), "num_personas"),
        (random_persona_stage, dict(RANDOM, vocab_size=0), "vocab_size"),
        (random_persona_stage, dict(RANDOM, turn_length=0), "turn_length"),
        (random_persona_stage, dict(RANDOM, closeness=1.5), "closeness"),
        (random_persona_stage, dict(RANDOM, user_vocab_size=3), "user_vocab_size"),
        (random_persona_stage, dict(RANDOM, user_vocab_size=-1), "user_vocab_size"),
        (random_persona_stage, dict(RANDOM, prior=[1.0]), "prior"),
        (restrict_prior, dict(prior=[0.5, 0.5], subset=[]), "subset"),
        (restrict_prior, dict(prior=[0.5, 0.5], subset=[2]), "subset"),
        (restrict_prior, dict(prior=[0.5, 0.5], subset=[0, 0]), "subset"),
        (restrict_prior, dict(prior=[1.0, 0.0], subset=[1]), "subset"),
        (restrict_prior, dict(prior=[0.5, 0.6], subset=[1]), "prior"),
    ],
)
def test_bad_arguments(constructor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        constructor(**kwargs)


def test_registry():
    """Both families are registered with small examples (S = 24, V = 3) that build; make_process
    passes keyword arguments through; labels reach the latents and info."""
    built = catalog()
    for name in ("persona_stage", "random_persona_stage"):
        assert built[name].num_states == 24 and built[name].vocab_size == 3
        assert built[name].latents == {
            "persona": ("persona0", "persona1"),
            "speaker": ("user", "assistant"),
        }
        assert built[name].info["family"] == name and built[name].info["first_speaker"] == "user"
    stage = make_process(
        "random_persona_stage", num_personas=4, vocab_size=3, turn_length=1, closeness=0.2, seed=1
    )
    assert stage.latents["persona"] == ("persona0", "persona1", "persona2", "persona3")
    labelled = persona_stage(
        **STAGE, persona_labels=["helpful", "sycophant"], token_labels=["yes", "no"]
    )
    assert labelled.latents["persona"] == ("helpful", "sycophant")
    assert labelled.info["token_labels"] == ("yes", "no")
