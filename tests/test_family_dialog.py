"""The two-agent dialog (C11) against the brute-force oracle of brute_force_personas.py.

Checked: probabilities of every prefix and the joint type posterior against enumeration, for both the
factorised and the coupled variant; with each token depending only on its speaker's type, the joint
posterior over (type_a, type_b) is the product of its marginals at every prefix (to 1e-12, also over
10^4 tokens); a coupled dialog's is not (a constructed counterexample with margin 0.2, and a random
one with margin 0.1); deterministic corners; every bad argument.
"""

from __future__ import annotations

import brute_force as bf
import numpy as np
import pytest
from brute_force_personas import (
    ATOL,
    LENGTH,
    ROWS,
    dialog_oracle,
    enumerate_sequences,
    log_prefix,
    random_prior,
    random_rows,
)
from hypothesis import given
from hypothesis import strategies as st
from log_checks import assert_log_matches

from toymodels.processes.dialog import coupled_dialog, dialog, random_dialog
from toymodels.processes.registry import catalog, make_process


DIALOG_SHAPES = ((2, 2, 2, 1), (2, 3, 3, 1))  # (Ka, Kb, V, L): S = Ka Kb 2L V = 16 and 36


@st.composite
def dialogs(draw):
    """(constructor kwargs, policies_a and policies_b broadcast to [Ka, Kb, V, V], coupled)."""
    num_a, num_b, vocab, turn_length = draw(st.sampled_from(DIALOG_SHAPES))
    coupled = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sparse = draw(st.booleans())
    prior_a, prior_b = random_prior(rng, num_a, sparse), random_prior(rng, num_b, sparse)
    start = random_rows(rng, (), vocab, sparse) if draw(st.booleans()) else None
    kwargs = dict(prior_a=prior_a, prior_b=prior_b, turn_length=turn_length, start=start)
    shape = (num_a, num_b, vocab, vocab)
    if coupled:
        policies_a = random_rows(rng, (num_a, num_b, vocab), vocab, sparse)
        policies_b = random_rows(rng, (num_a, num_b, vocab), vocab, sparse)
        kwargs.update(policies_a=policies_a, policies_b=policies_b)
    else:
        types_a, types_b = (
            random_rows(rng, (num_a, vocab), vocab, sparse),
            random_rows(rng, (num_b, vocab), vocab, sparse),
        )
        kwargs.update(types_a=types_a, types_b=types_b)
        policies_a, policies_b = (
            np.broadcast_to(types_a[:, None], shape),
            np.broadcast_to(types_b[None], shape),
        )
    return kwargs, policies_a, policies_b, coupled


@given(dialogs())
def test_dialog_matches_enumeration_and_factorises(instance):
    """Both variants: log P(x_<=t) and the joint posterior over (a, b) equal the oracle at every prefix
    of every x in (V+1)^4, and "type_a", "type_b" are its marginals. Independent types, each token
    depending on its speaker's type only: the joint posterior equals the product of its marginals at
    every prefix, to 1e-12."""
    kwargs, policies_a, policies_b, coupled = instance
    process = (coupled_dialog if coupled else dialog)(**kwargs)
    num_a, num_b, vocab = policies_a.shape[:3]
    seqs, count = enumerate_sequences(vocab)
    start = np.full(vocab, 1 / vocab) if kwargs["start"] is None else kwargs["start"]
    prob, post = dialog_oracle(
        policies_a,
        policies_b,
        kwargs["prior_a"],
        kwargs["prior_b"],
        start,
        kwargs["turn_length"],
        seqs[:count],
    )
    assert_log_matches(log_prefix(process, seqs)[:count], prob)
    joint = np.asarray(process.posterior(seqs, "types"))[:count].reshape(
        count, LENGTH + 1, num_a, num_b
    )
    np.testing.assert_allclose(joint, post, rtol=0, atol=ATOL)
    post_a = np.asarray(process.posterior(seqs, "type_a"))[:count]
    post_b = np.asarray(process.posterior(seqs, "type_b"))[:count]
    np.testing.assert_allclose(post_a, joint.sum(axis=3), rtol=0, atol=ATOL)
    np.testing.assert_allclose(post_b, joint.sum(axis=2), rtol=0, atol=ATOL)
    assert process.info["coupled"] == coupled
    if not coupled:
        np.testing.assert_allclose(
            joint, post_a[..., :, None] * post_b[..., None, :], rtol=0, atol=ATOL
        )


def test_coupled_dialog_does_not_factorise():
    """The constructed counterexample (the registered coupled_dialog example): uniform independent
    types, A emits 0 with probability 0.9 when a == b and 0.1 otherwise, B is uniform. After A's first
    token 0 the joint posterior is [[0.45, 0.05], [0.05, 0.45]] while both marginals stay uniform, so
    it is 0.2 away from the product of its marginals (0.25 everywhere). A random coupled dialog also
    misses factorisation by a clear margin at some prefix of length <= 4 (measured 0.195; asserted
    > 0.1)."""
    process = catalog()["coupled_dialog"]
    seqs, count = enumerate_sequences(2, impossible=False)  # row 0 starts with token 0
    joint = np.asarray(process.posterior(seqs, "types"))[0, 1].reshape(2, 2)
    np.testing.assert_allclose(joint, [[0.45, 0.05], [0.05, 0.45]], rtol=0, atol=ATOL)
    product = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    assert np.max(np.abs(joint - product)) >= 0.2 - ATOL

    random = random_dialog(2, 2, 2, 1, seed=3, coupled=True)
    joint = np.asarray(random.posterior(seqs, "types"))[:count].reshape(count, LENGTH + 1, 2, 2)
    product = joint.sum(axis=3)[..., :, None] * joint.sum(axis=2)[..., None, :]
    assert np.max(np.abs(joint - product)) > 0.1


def test_dialog_corners():
    """Deterministic types: A of type a always says a, B of type b always says 1 - b. A's first token
    reveals a exactly, B's first token reveals b exactly; the posterior is one-hot from then on, a
    token against the revealed types is impossible (-inf, belief held), and an id >= V too."""
    says = np.array([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # says[k]: always token k
    process = dialog(says, says[::-1], [0.3, 0.7], [0.6, 0.4], turn_length=1)
    seqs = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 0], [1, 2, 1, 0]])
    padded = seqs[
        np.arange(ROWS) % 4
    ]  # the batch shape of the enumeration tests: no new compilation
    log_p = log_prefix(process, padded)[:4]
    np.testing.assert_allclose(np.exp(log_p[:2, -1]), [0.7 * 0.4, 0.3 * 0.6], rtol=1e-15)
    assert np.isneginf(log_p[2, 3]) and np.isfinite(log_p[2, 2]) and np.isneginf(log_p[3, 2])
    joint = np.asarray(process.posterior(padded, "types"))[:4].reshape(4, LENGTH + 1, 2, 2)
    np.testing.assert_allclose(joint[:, 0], [[[0.18, 0.12], [0.42, 0.28]]] * 4, rtol=1e-15)
    np.testing.assert_allclose(joint[0, 2:], [[[0, 0], [0, 1]]] * 3, rtol=0, atol=1e-15)
    np.testing.assert_allclose(joint[1, 2:], [[[1, 0], [0, 0]]] * 3, rtol=0, atol=1e-15)
    assert np.all(joint[2, 3:] == joint[2, 2]) and np.all(joint[3, 2:] == joint[3, 1])


def test_random_dialog():
    """Deterministic in the seed; the coupled flag and the latent labels are exposed."""
    a, b = random_dialog(2, 3, 3, 2, seed=5), random_dialog(2, 3, 3, 2, seed=5)
    assert np.array_equal(np.asarray(a.transitions), np.asarray(b.transitions))
    assert (
        a.info["coupled"] is False
        and random_dialog(2, 3, 3, 2, seed=5, coupled=True).info["coupled"] is True
    )
    assert a.latents["types"][:2] == ("a0,b0", "a0,b1") and a.latents["speaker"] == ("A", "B")


def test_long_sequences():
    """10^4 tokens (random ids: every sequence is possible under Dirichlet policies): log P is finite
    and agrees with the independent NumPy forward pass of brute_force.py; posteriors have no NaN; the
    joint type posterior still factorises at every one of the 10^4 prefixes."""
    tokens = np.random.default_rng(0).integers(0, 3, size=(2, 10_000))
    process = random_dialog(2, 2, 3, 3, seed=1)
    log_p = np.asarray(process.log_prob(tokens))
    assert np.all(np.isfinite(log_p))
    reference, _ = bf.hmm_forward(
        np.asarray(process.transitions), np.asarray(process.initial), tokens[0]
    )
    np.testing.assert_allclose(log_p[0], reference[-1], rtol=1e-10)
    joint = np.asarray(process.posterior(tokens, "types")).reshape(2, 10_001, 2, 2)
    assert not np.any(np.isnan(joint)) and np.allclose(joint.sum(axis=(2, 3)), 1, atol=1e-12)
    product = joint.sum(axis=3)[..., :, None] * joint.sum(axis=2)[..., None, :]
    np.testing.assert_allclose(joint, product, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The boundary and the registry
# --------------------------------------------------------------------------------------------------

EYE2 = np.eye(2)
HALF = np.full((2, 2), 0.5)
DIALOG = dict(
    types_a=[EYE2, HALF], types_b=[HALF], prior_a=[0.5, 0.5], prior_b=[1.0], turn_length=1
)
COUPLED = dict(
    policies_a=[[EYE2]], policies_b=[[HALF]], prior_a=[1.0], prior_b=[1.0], turn_length=1
)
RANDOM = dict(num_types_a=2, num_types_b=2, vocab_size=2, turn_length=1)


@pytest.mark.parametrize(
    "constructor, kwargs, match",
    [
        (dialog, dict(DIALOG, types_a=[[[1.0, 0.0, 0.0]] * 3]), "types_a"),
        (dialog, dict(DIALOG, types_a=EYE2), "types_a"),
        (dialog, dict(DIALOG, types_b=[[[0.5, 0.4], [0.5, 0.5]]]), "types_b"),
        (dialog, dict(DIALOG, prior_a=[1.0]), "prior_a"),
        (dialog, dict(DIALOG, prior_b=[0.5, 0.5]), "prior_b"),
        (dialog, dict(DIALOG, prior_b=[0.9]), "prior_b"),
        (dialog, dict(DIALOG, turn_length=-1), "turn_length"),
        (dialog, dict(DIALOG, start=[1.0]), "start"),
        (dialog, dict(DIALOG, labels_a=["x"]), "labels_a"),
        (dialog, dict(DIALOG, labels_b=["x", "y"]), "labels_b"),
        (dialog, dict(DIALOG, token_labels=["x"]), "token_labels"),
        (coupled_dialog, dict(COUPLED, policies_b=[[EYE2, EYE2]]), "policies_a"),
        (coupled_dialog, dict(COUPLED, policies_a=[EYE2]), "policies_a"),
        (coupled_dialog, dict(COUPLED, policies_b=[[[[0.5, 0.6], [0.5, 0.5]]]]), "policies_b"),
        (coupled_dialog, dict(COUPLED, prior_b=[0.5, 0.5]), "prior_b"),
        (random_dialog, dict(RANDOM, num_types_a=0), "num_types_a"),
        (random_dialog, dict(RANDOM, num_types_b=1.5), "num_types_b"),
        (random_dialog, dict(RANDOM, vocab_size=0), "vocab_size"),
        (random_dialog, dict(RANDOM, turn_length=0), "turn_length"),
        (random_dialog, dict(RANDOM, coupled="yes"), "coupled"),
        (random_dialog, dict(RANDOM, num_types_a=None), "num_types_a"),
        (random_dialog, dict(RANDOM, vocab_size=float("nan")), "vocab_size"),
        (random_dialog, dict(RANDOM, seed=1.5), "seed"),
        (random_dialog, dict(RANDOM, seed=-1), "seed"),
    ],
)
def test_bad_arguments(constructor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        constructor(**kwargs)


def test_registry():
    """The three families are registered with small examples (S <= 32, V = 2) that build, and
    make_process passes keyword arguments through."""
    built = catalog()
    for name in ("dialog", "coupled_dialog", "random_dialog"):
        assert built[name].num_states <= 32 and built[name].vocab_size == 2
        assert set(built[name].latents) == {"types", "type_a", "type_b", "speaker"}
        assert built[name].info["family"] == name and built[name].info["first_speaker"] == "A"
    assert built["coupled_dialog"].info["coupled"] and not built["dialog"].info["coupled"]
    other = make_process(
        "random_dialog", num_types_a=3, num_types_b=2, vocab_size=2, turn_length=1, coupled=True
    )
    assert other.latents["type_a"] == ("a0", "a1", "a2") and other.info["coupled"] is True
