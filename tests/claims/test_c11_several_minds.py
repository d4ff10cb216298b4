"""C11: a predictor of a two-agent dialog tracks both minds at once, side by side.

With independent types and each token depending only on its speaker's type and the shared history,
the likelihood splits into one factor per speaker, so the joint posterior over the two types is the
product of two posteriors, each computed from that speaker's own turns; one speaker's tokens never
move the posterior over the other's type. When a token depends on both types the evidence couples
them: the smallest counterexample (A says only whether the types agree) has a closed-form joint
posterior that is not a product.

Oracles: tests/brute_force_personas.py's `dialog_oracle` (sums over the unobserved start token and every
pair of types, straight from the definition) and the closed forms of theory.claims.c11_several_minds;
the library's posteriors are checked against both.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from brute_force_personas import dialog_oracle, enumerate_sequences, random_prior, random_rows
from hypothesis import given
from hypothesis import strategies as st

from theory.claims import c11_several_minds as c11
from toymodels.processes.dialog import coupled_dialog, dialog, random_dialog

SHAPES = ((2, 2, 2, 1), (2, 3, 3, 2))  # (Ka, Kb, V, L): a few shapes, so the HMM filter compiles rarely
ATOL = 1e-12


@st.composite
def factorised_dialogs(draw):
    """(dialog kwargs, types_a [Ka, V, V], types_b [Kb, V, V]) with sometimes sparse policies."""
    num_a, num_b, vocab, turn_length = draw(st.sampled_from(SHAPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    sparse = draw(st.booleans())
    types_a = random_rows(rng, (num_a, vocab), vocab, sparse)
    types_b = random_rows(rng, (num_b, vocab), vocab, sparse)
    start = random_rows(rng, (), vocab, sparse) if draw(st.booleans()) else None
    kwargs = dict(types_a=types_a, types_b=types_b, prior_a=random_prior(rng, num_a, sparse),
                  prior_b=random_prior(rng, num_b, sparse), turn_length=turn_length, start=start)
    return kwargs


def closed_form(kwargs, tokens):
    """The claim's joint posterior [N, L+1, Ka, Kb]: the product of the per-speaker posteriors."""
    post_a, post_b = c11.speaker_posteriors(kwargs["types_a"], kwargs["types_b"], kwargs["prior_a"],
                                            kwargs["prior_b"], kwargs["turn_length"], tokens, kwargs["start"])
    return post_a[..., :, None] * post_b[..., None, :], post_a, post_b


def broadcast_policies(kwargs):
    """types_a, types_b as the [Ka, Kb, V, V] policies the brute-force oracle takes."""
    num_a, num_b, vocab = len(kwargs["types_a"]), len(kwargs["types_b"]), kwargs["types_a"].shape[1]
    shape = (num_a, num_b, vocab, vocab)
    return np.broadcast_to(kwargs["types_a"][:, None], shape), np.broadcast_to(kwargs["types_b"][None], shape)


@given(factorised_dialogs())
def test_joint_posterior_is_the_product_of_each_speakers_own_posterior(kwargs):
    """At every prefix of every sequence of (V+1)^4 (id V impossible), the brute-force joint posterior
    and the library's "types" posterior equal post_a x post_b, where post_a uses only A's tokens and
    post_b only B's; "type_a" and "type_b" are those two factors."""
    process = dialog(**kwargs)
    vocab = kwargs["types_a"].shape[1]
    seqs, count = enumerate_sequences(vocab)
    joint, post_a, post_b = closed_form(kwargs, seqs)
    start = np.full(vocab, 1 / vocab) if kwargs["start"] is None else kwargs["start"]
    _, oracle = dialog_oracle(*broadcast_policies(kwargs), kwargs["prior_a"], kwargs["prior_b"], start,
                              kwargs["turn_length"], seqs[:count])
    np.testing.assert_allclose(joint[:count], oracle, rtol=0, atol=ATOL)
    library = np.asarray(process.posterior(seqs, "types")).reshape(joint.shape)
    np.testing.assert_allclose(library, joint, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(process.posterior(seqs, "type_a")), post_a, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(process.posterior(seqs, "type_b")), post_b, rtol=0, atol=ATOL)
    assert np.all(c11.mutual_information(oracle) < 1e-12)


@given(factorised_dialogs(), st.integers(0, 2**32 - 1))
def test_a_speakers_tokens_never_move_the_other_posterior(kwargs, seed):
    """On sampled dialogs of 12 tokens (possible prefixes only) the posterior over a changes only at
    A's tokens and the posterior over b only at B's (brute force and library): B's words carry no
    evidence about A's type, and vice versa."""
    process = dialog(**kwargs)
    vocab, turn_length = kwargs["types_a"].shape[1], kwargs["turn_length"]
    seqs = np.asarray(process.sample(jax.random.key(seed), 8, 12))
    start = np.full(vocab, 1 / vocab) if kwargs["start"] is None else kwargs["start"]
    _, oracle = dialog_oracle(*broadcast_policies(kwargs), kwargs["prior_a"], kwargs["prior_b"], start,
                              turn_length, seqs)
    library = np.asarray(process.posterior(seqs, "types")).reshape(oracle.shape)
    np.testing.assert_allclose(library, oracle, rtol=0, atol=1e-10)
    speaker_is_a = (np.arange(12) // turn_length) % 2 == 0  # who spoke token t + 1
    post_a, post_b = oracle.sum(axis=3), oracle.sum(axis=2)
    step_a = np.abs(np.diff(post_a, axis=1)).max(axis=(0, 2))
    step_b = np.abs(np.diff(post_b, axis=1)).max(axis=(0, 2))
    assert np.all(step_a[~speaker_is_a] < 1e-12) and np.all(step_b[speaker_is_a] < 1e-12)
    assert np.all(c11.mutual_information(oracle) < 1e-10)


agree_differ = st.one_of(
    st.floats(0.01, 0.99).map(lambda x: (x, x)),  # the types do not matter: factorised
    st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99)),
)


@given(agree_differ, st.floats(0.05, 0.95), st.floats(0.05, 0.95), st.sampled_from([0, 1]))
def test_coupled_counterexample_does_not_factorise(pair, prior_a0, prior_b0, first):
    """agreement_dialog: after A's first token the joint posterior (library and brute force) is the
    closed form, proportional to prior_a(a) prior_b(b) times lam if a == b else mu; it is a product of
    its marginals iff lam == mu, with mutual information KL(joint || product) > 0 otherwise; with
    uniform priors that is log 2 - h(lam / (lam + mu))."""
    agree, differ = pair
    priors = (np.array([prior_a0, 1 - prior_a0]), np.array([prior_b0, 1 - prior_b0]))
    kwargs = c11.agreement_dialog(agree, differ, *priors)
    process = coupled_dialog(**kwargs)
    seqs = np.zeros((4, 1), np.int64) + first
    expected = c11.agreement_posterior(agree, differ, first, *priors)
    library = np.asarray(process.posterior(seqs, "types"))[0, 1].reshape(2, 2)
    np.testing.assert_allclose(library, expected, rtol=0, atol=ATOL)
    _, oracle = dialog_oracle(kwargs["policies_a"], kwargs["policies_b"], *priors, np.full(2, 0.5), 1, seqs[:1])
    np.testing.assert_allclose(oracle[0, 1], expected, rtol=0, atol=ATOL)
    lam, mu = (agree, differ) if first == 0 else (1 - agree, 1 - differ)
    product = np.outer(expected.sum(axis=1), expected.sum(axis=0))
    distance = np.abs(expected - product).max()
    if agree == differ:
        assert distance < ATOL and c11.mutual_information(expected) < ATOL
    else:
        assert distance > 0 and c11.mutual_information(expected) > 0
    uniform = c11.agreement_posterior(agree, differ, first)
    np.testing.assert_allclose(uniform.sum(axis=0), [0.5, 0.5], atol=ATOL)  # marginals stay uniform
    share = lam / (lam + mu)
    binary = -sum(x * math.log(x) for x in (share, 1 - share) if x > 0)
    assert c11.agreement_mutual_information(agree, differ, first) == pytest.approx(math.log(2) - binary, abs=ATOL)
    assert c11.mutual_information(uniform) == pytest.approx(math.log(2) - binary, abs=1e-12)


def test_registered_counterexample_numbers():
    """agree = 0.9, differ = 0.1, uniform priors: after token 0 the joint is [[0.45, 0.05], [0.05, 0.45]]
    (closed form), 0.2 away from the product of its uniform marginals."""
    joint = c11.agreement_posterior(0.9, 0.1, 0)
    np.testing.assert_allclose(joint, [[0.45, 0.05], [0.05, 0.45]], atol=ATOL)
    assert np.abs(joint - 0.25).max() == pytest.approx(0.2, abs=ATOL)


@given(st.integers(0, 2**16))
def test_generic_coupled_dialogs_do_not_factorise(seed):
    """A random coupled dialog (Dirichlet policies for every pair of types) has positive posterior
    mutual information at some prefix of length <= 4; the uncoupled random dialog of the same seed has
    none at any prefix (library posteriors, mutual information by the closed form)."""
    seqs, count = enumerate_sequences(2, impossible=False)
    coupled = np.asarray(random_dialog(2, 2, 2, 1, seed=seed, coupled=True).posterior(seqs, "types"))
    plain = np.asarray(random_dialog(2, 2, 2, 1, seed=seed).posterior(seqs, "types"))
    shape = (len(seqs), seqs.shape[1] + 1, 2, 2)
    assert c11.mutual_information(coupled.reshape(shape)[:count]).max() > 1e-6
    assert c11.mutual_information(plain.reshape(shape)[:count]).max() < 1e-12


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: c11.speaker_posteriors([[[0.5, 0.6]]], [[[1.0]]], [1.0], [1.0], 1, [[0]]), "types_a"),
        (lambda: c11.speaker_posteriors(np.ones((1, 2, 2)) / 2, np.ones((1, 2, 2)) / 2, [1.0], [1.0], 0, [[0]]), "turn_length"),
        (lambda: c11.speaker_posteriors(np.ones((1, 2, 2)) / 2, np.ones((1, 2, 2)) / 2, [1.0], [1.0], 1, [[-1]]), "tokens"),
        (lambda: c11.speaker_posteriors(np.ones((1, 2, 2)) / 2, np.ones((1, 2, 2)) / 2, [0.5, 0.5], [1.0], 1, [[0]]), "prior_a"),
        (lambda: c11.agreement_dialog(1.5, 0.5), "agree"),
        (lambda: c11.agreement_posterior(0.5, 0.5, 2), "first_token"),
        (lambda: c11.agreement_posterior(1.0, 1.0, 1), "impossible"),
    ],
)
def test_bad_arguments_raise(call, match):
    """Each bad argument raises a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        call()
