"""MixtureProcess (exact Bayes over a mixture of processes and predictors) and C7's generated-text
mixture, against oracles written in the test.

Oracles: every component's prefix probabilities come from its definition, never from the library:
HMMs by path enumeration (brute_force.py), a bigram predictor written here from its arrays, a tempered
HMM from the path-enumerated conditionals raised to 1/tau (brute_force_pq.py). Mixture quantities are
then the definitions: P(x) = sum_k w_k P_k(x), p(v | x_<t) = P(x_<t v) / P(x_<t), pi(k | x_<=t)
proportional to w_k P_k(x_<=t). C7's martingale and its two one-sided versions are checked as exact
identities over all sequences of V^4 (see toymodels/processes/generated.py for their derivation).

Shapes are fixed (V = 3, HMMs embedded in 5 states, two component layouts) so jit caches stay small.
"""

from __future__ import annotations

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brute_force_pq import hmm_conditional, tempered_definition
from hypothesis import given, settings
from hypothesis import strategies as st
from log_checks import assert_log_matches
from strategies import embed_hmm, random_hmm

from toymodels.predictors import PytreeNode, with_temperature
from toymodels.processes.generated import generated_text_mixture, human_and_model
from toymodels.processes.hmm import HMMProcess
from toymodels.processes.mixture import MixtureProcess
from toymodels.processes.registry import families, make_process
from toymodels.processes.standard import random_hmm as random_hmm_process

V = 3
LENGTH = 4
ATOL = 1e-12
FEW = max(5, settings().max_examples // 5)
seeds = st.integers(0, 2**32 - 1)

# The incremental interface, jitted once per mixture structure (the process is an argument, not a
# constant baked into the compiled code).
init_state = jax.jit(lambda process, batch: process.init_state(batch), static_argnums=1)
step = jax.jit(lambda process, state, token: process.step(state, token))


# --------------------------------------------------------------------------------------------------
# Components and their oracles
# --------------------------------------------------------------------------------------------------


class Bigram(PytreeNode):
    """A plain predictor (no init_state/step): q(x_1) = first, q(x_t | x_<t) = kernel[x_{t-1}]. After an
    impossible id it answers with an arbitrary finite row (the mixture must not care)."""

    _data_fields = ("log_first", "log_kernel")
    max_length = None

    def __init__(self, first, kernel):
        with np.errstate(divide="ignore"):
            self.log_first = jnp.asarray(np.log(first))
            self.log_kernel = jnp.asarray(np.log(kernel))

    @property
    def vocab_size(self):
        return self.log_first.shape[0]

    def log_conditionals(self, tokens):
        previous = jnp.clip(tokens[:, :-1], 0, self.vocab_size - 1)
        rest = self.log_kernel[previous]
        first = jnp.broadcast_to(self.log_first, (tokens.shape[0], 1, self.vocab_size))
        return jnp.concatenate([first, rest], axis=1)[:, : tokens.shape[1]]


def prefix_probs_from_conditional(conditional, seqs) -> np.ndarray:
    """[N, L+1]: Q(x_<=t) by the chain rule over conditional(prefix); ids >= V have probability 0."""
    seqs = np.asarray(seqs, np.int64)
    out = np.ones((len(seqs), seqs.shape[1] + 1))
    for row, x in enumerate(seqs):
        for t, token in enumerate(x):
            step = conditional(tuple(x[:t]))[token] if token < V else 0.0
            out[row, t + 1] = out[row, t] * step
            if out[row, t + 1] == 0:  # the definition is never asked about an impossible prefix
                out[row, t + 1 :] = 0.0
                break
    return out


def hmm_prefix_probs(transitions, initial, seqs) -> np.ndarray:
    return np.stack(
        [bf.hmm_sequence_probs(transitions, initial, seqs[:, :t]) for t in range(seqs.shape[1] + 1)], axis=1
    )


def make_component(kind: str, rng: np.random.Generator):
    """(component, oracle for prefix probabilities seqs -> [N, L+1])."""
    if kind == "hmm" or kind == "tempered":
        arrays = embed_hmm(
            *random_hmm(rng, V, int(rng.integers(2, 4)), "dense" if rng.random() < 0.5 else "sparse"), vocab_size=V
        )
        process = HMMProcess(*arrays)
        if kind == "hmm":
            return process, lambda seqs: hmm_prefix_probs(*arrays, seqs)
        tau = float(rng.choice([0.5, 2.0]))
        cond = tempered_definition(hmm_conditional(*arrays), tau)
        return with_temperature(process, tau), lambda seqs: prefix_probs_from_conditional(cond, seqs)
    first = rng.dirichlet(np.ones(V))
    kernel = rng.dirichlet(np.full(V, 0.5), size=V)
    kernel[0, 1] = 0.0  # a structural zero: "0 1" is impossible for the bigram
    kernel /= kernel.sum(axis=1, keepdims=True)
    return Bigram(first, kernel), lambda seqs: prefix_probs_from_conditional(
        lambda prefix: first if not prefix else kernel[prefix[-1]], seqs
    )


# One layout with every kind of component (a process, a plain predictor without init_state/step, a
# transformed process): each layout is a new compilation of the mixture, several seconds each.
LAYOUTS = (("hmm", "bigram", "tempered"),)


@st.composite
def mixtures(draw, layouts=LAYOUTS):
    """(MixtureProcess, weights, component prefix-probability oracles)."""
    kinds = draw(st.sampled_from(layouts))
    rng = np.random.default_rng(draw(seeds))
    built = [make_component(kind, rng) for kind in kinds]
    weights = rng.dirichlet(np.ones(len(kinds)))
    if draw(st.booleans()):  # a component of weight exactly zero
        weights[int(rng.integers(len(kinds)))] = 0.0
        weights /= weights.sum()
    process = MixtureProcess([c for c, _ in built], weights, names=[f"{k}{i}" for i, k in enumerate(kinds)])
    return process, weights, [oracle for _, oracle in built]


def enumerate_with_impossible(length: int) -> np.ndarray:
    return bf.all_sequences(V + 1, length)  # id V is impossible for every component


def mixture_reference(weights, oracles, seqs):
    """(P_mix(x_<=t) [N, L+1], pi(k | x_<=t) [N, L+1, K] frozen after an impossible prefix,
    p(v | x_<t) [N, L, V] (0 after an impossible prefix)), all from the definitions."""
    component = np.stack([oracle(seqs) for oracle in oracles], axis=-1)  # [N, L+1, K]
    joint = component * weights
    total = joint.sum(axis=-1)
    post = np.zeros_like(joint)
    for t in range(seqs.shape[1] + 1):
        alive = total[:, t] > 0
        post[alive, t] = joint[alive, t] / total[alive, t, None]
        if t:
            post[~alive, t] = post[~alive, t - 1]
        else:
            post[~alive, t] = weights
    # P(x_<t v) is the length-(t+1) prefix probability of the enumerated row that starts with x_<t v
    # (seqs must be the lexicographic enumeration of {0..V}^L)
    width, length = V + 1, seqs.shape[1]
    codes = seqs @ (width ** np.arange(length - 1, -1, -1))
    cond = np.zeros(seqs.shape + (V,))
    for t in range(length):
        block = width ** (length - t)
        start = (codes // block) * block  # the row x_<t 0 0 ... 0
        ext = total[start[:, None] + np.arange(V)[None] * (block // width), t + 1]
        here = total[:, t, None]
        cond[:, t] = np.divide(ext, here, out=np.zeros_like(ext), where=here > 0)
    return total, post, cond


# --------------------------------------------------------------------------------------------------
# MixtureProcess: exact inference
# --------------------------------------------------------------------------------------------------


@given(mixtures())
def test_mixture_matches_definition(mixture):
    """Over every sequence of {0..V}^4 (id V impossible): log_prob = log sum_k w_k P_k(x);
    log_conditionals = log of P(x_<t v) / P(x_<t), -inf after an impossible prefix; posterior =
    pi(k | x_<=t), entry 0 = w, frozen after an impossible prefix; never NaN."""
    process, weights, oracles = mixture
    seqs = enumerate_with_impossible(LENGTH)
    total, post, cond = mixture_reference(weights, oracles, seqs)
    assert_log_matches(process.log_prob(seqs), total[:, -1])
    assert_log_matches(process.log_conditionals(seqs), cond)
    posterior = np.asarray(process.posterior(seqs))
    assert not np.any(np.isnan(posterior))
    np.testing.assert_allclose(posterior, post, rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(process.posterior(seqs, "component")), posterior, rtol=0, atol=0)


@given(mixtures(layouts=(("hmm", "tempered"),)))
def test_step_matches_conditionals(mixture):
    """With steppable components, init_state/step reproduce the definition's conditionals at every
    position, including -inf rows after impossible ids."""
    process, weights, oracles = mixture
    assert process.supports_step
    seqs = enumerate_with_impossible(LENGTH)
    _, _, cond = mixture_reference(weights, oracles, seqs)
    state, log_next = init_state(process, len(seqs))
    outputs = [np.asarray(log_next)]
    for t in range(LENGTH - 1):
        state, log_next = step(process, state, jnp.asarray(seqs[:, t], jnp.int32))
        outputs.append(np.asarray(log_next))
    stepped = np.stack(outputs, axis=1)
    assert_log_matches(stepped, cond)


def test_plain_predictor_component_has_no_step():
    """A mixture with a plain predictor (no init_state/step) says so and refuses init_state."""
    rng = np.random.default_rng(0)
    process = MixtureProcess([make_component("hmm", rng)[0], make_component("bigram", rng)[0]], [0.5, 0.5])
    assert not process.supports_step
    with pytest.raises(ValueError, match="init_state"):
        process.init_state(2)


# Calibrated sampling: cells are (component k, x) for x in V^3: 2 * 27 = 54 cells. The thorough profile
# runs at most 100 examples (FEW): Bonferroni over 5,400 exact binomial tests at a family-wise
# false-failure rate of 1e-3 gives a per-test level of 1.85e-7 (z about 5.2); with n = 20,000 a cell of
# probability 0.02 (sd 20 counts) is caught when off by about 26% relative.
SAMPLE_N, SAMPLE_L = 20_000, 3
SAMPLE_ALPHA = 1e-3 / (100 * 54)


@settings(max_examples=FEW)
@given(mixtures(layouts=(("hmm", "bigram"),)), seeds)
def test_sample_frequencies(mixture, seed):
    """sample_with_component draws (k, x) with probability w_k P_k(x) (exact binomial tests); sample
    gives the same sequences for the same key; no sequence of probability zero appears."""
    process, weights, oracles = mixture
    key = jax.random.key(seed)
    tokens, which = process.sample_with_component(key, SAMPLE_N, SAMPLE_L)
    tokens, which = np.asarray(tokens), np.asarray(which)
    assert tokens.shape == (SAMPLE_N, SAMPLE_L) and which.shape == (SAMPLE_N,)
    np.testing.assert_array_equal(np.asarray(process.sample(key, SAMPLE_N, SAMPLE_L)), tokens)
    seqs = bf.all_sequences(V, SAMPLE_L)
    probs = np.concatenate([w * oracle(seqs)[:, -1] for w, oracle in zip(weights, oracles)])
    index = which * V**SAMPLE_L + tokens @ (V ** np.arange(SAMPLE_L - 1, -1, -1))
    counts = np.bincount(index, minlength=len(probs))
    assert np.all(counts[probs == 0] == 0)
    assert bf.binomial_pvalues(counts, probs).min() >= SAMPLE_ALPHA, (counts, SAMPLE_N * probs)


def test_sample_length_zero():
    rng = np.random.default_rng(1)
    process = MixtureProcess([make_component("hmm", rng)[0], make_component("bigram", rng)[0]], [0.5, 0.5])
    assert np.asarray(process.sample(jax.random.key(0), 3, 0)).shape == (3, 0)


def test_long_sequences_match_float64_forward():
    """10^4 tokens from each component of a mixture of two HMMs (drawn by the NumPy oracle sampler):
    log_prob = logsumexp_k(log w_k + log P_k(x)) and the posterior = softmax_k(log w_k + log P_k(x_<=t))
    with log P_k from a plain NumPy forward pass; no NaN, conditionals normalised."""
    rng = np.random.default_rng(5)
    arrays = [random_hmm(rng, V, 3, "dense") for _ in range(2)]
    weights = np.array([0.4, 0.6])
    process = MixtureProcess([HMMProcess(*a) for a in arrays], weights)
    x = np.concatenate([bf.hmm_sample(*a, 1, 10_000, rng) for a in arrays])
    forward = np.stack([np.stack([bf.hmm_forward(*a, row)[0] for row in x]) for a in arrays], axis=-1)  # [B, L+1, K]
    joint = np.log(weights) + forward
    top = joint.max(axis=-1, keepdims=True)
    log_total = top[..., 0] + np.log(np.exp(joint - top).sum(axis=-1))
    np.testing.assert_allclose(np.asarray(process.log_prob(x)), log_total[:, -1], rtol=1e-12)
    posterior = np.asarray(process.posterior(x))
    assert not np.any(np.isnan(posterior))
    np.testing.assert_allclose(posterior, np.exp(joint - log_total[..., None]), rtol=0, atol=1e-9)
    log_cond = np.asarray(process.log_conditionals(x))
    assert not np.any(np.isnan(log_cond))
    np.testing.assert_allclose(np.exp(log_cond).sum(axis=-1), 1.0, rtol=0, atol=1e-9)


def test_zero_weight_component_never_appears():
    """A component of weight 0 has posterior exactly 0 at every length and is never sampled. (Shapes
    and names as in the property tests above, so nothing new compiles.)"""
    rng = np.random.default_rng(2)
    components = [make_component("hmm", rng)[0], make_component("bigram", rng)[0]]
    process = MixtureProcess(components, [1.0, 0.0], names=["hmm0", "bigram1"])
    tokens, which = process.sample_with_component(jax.random.key(0), SAMPLE_N, SAMPLE_L)
    assert np.all(np.asarray(which) == 0)
    posterior = np.asarray(process.posterior(tokens))
    assert np.all(posterior[..., 1] == 0.0) and np.all(posterior[..., 0] == 1.0)


def test_sampling_a_mixture_passed_into_jit_matches_eager_sampling():
    """A mixture is a pytree argument of jitted code (the training engine draws batches that way): its
    sampler then cannot inspect the weights on the host, and must still draw the same sequences."""
    rng = np.random.default_rng(3)
    components = [make_component("hmm", rng)[0], make_component("bigram", rng)[0]]
    for weights in ([0.3, 0.7], [1.0, 0.0]):
        process = MixtureProcess(components, weights, names=["hmm0", "bigram1"])
        key = jax.random.key(5)
        eager = np.asarray(process.sample(key, SAMPLE_N, SAMPLE_L))
        traced = np.asarray(jax.jit(lambda p, k: p.sample(k, SAMPLE_N, SAMPLE_L))(process, key))
        np.testing.assert_array_equal(traced, eager)


# --------------------------------------------------------------------------------------------------
# C7: the generated-text mixture
# --------------------------------------------------------------------------------------------------

betas = st.one_of(st.sampled_from([0.5, 0.1]), st.floats(0.01, 0.99))
taus = st.one_of(st.sampled_from([0.5, 2.0]), st.floats(0.3, 3.0))


@given(seeds, betas, taus)
def test_model_posterior_martingale_and_drift(seed, beta, tau):
    """H a random HMM, M = H at temperature tau, D = (1 - beta) H + beta M; pi_t = P(M | x_<=t). By
    enumeration of V^4, for t = 0..4: the library's pi_t equals Bayes on the oracle probabilities;
    E_D[pi_t] = beta (martingale); E_H[pi_t] = beta - Var_D(pi_t) / (1 - beta) and
    E_M[pi_t] = beta + Var_D(pi_t) / beta, so E_H[pi_t] <= beta <= E_M[pi_t], E_H[pi_t] never rises
    and E_M[pi_t] never falls with t, strictly wherever H and M differ at length t."""
    rng = np.random.default_rng(seed)
    arrays = embed_hmm(*random_hmm(rng, V, 3, "dense"), vocab_size=V)
    human = HMMProcess(*arrays)
    process = generated_text_mixture(human, with_temperature(human, tau), beta)
    assert process.latents == {"generated": ("human", "model")}
    seqs = bf.all_sequences(V, LENGTH)
    p_h = hmm_prefix_probs(*arrays, seqs)
    p_m = prefix_probs_from_conditional(tempered_definition(hmm_conditional(*arrays), tau), seqs)
    p_d = (1 - beta) * p_h + beta * p_m
    pi = np.asarray(process.posterior(seqs, "generated"))[..., 1]  # [N, L+1]
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(p_d > 0, beta * p_m / p_d, np.nan)
    possible = p_d > 0
    np.testing.assert_allclose(pi[possible], expected[possible], rtol=0, atol=ATOL)
    np.testing.assert_allclose(
        np.exp(np.asarray(process.log_prob(seqs)))[possible[:, -1]], p_d[possible[:, -1], -1], rtol=1e-9
    )

    # expectations over length-t prefixes, as sums over full sequences (the suffix marginalises out)
    final = {"D": p_d[:, -1], "H": p_h[:, -1], "M": p_m[:, -1]}
    mean = {name: (w[:, None] * np.where(possible, pi, 0.0)).sum(axis=0) for name, w in final.items()}
    var = (final["D"][:, None] * np.where(possible, pi - beta, 0.0) ** 2).sum(axis=0)
    np.testing.assert_allclose(mean["D"], beta, rtol=0, atol=ATOL)
    np.testing.assert_allclose(mean["H"], beta - var / (1 - beta), rtol=0, atol=ATOL)
    np.testing.assert_allclose(mean["M"], beta + var / beta, rtol=0, atol=ATOL)
    assert np.all(mean["H"] <= beta + ATOL) and np.all(mean["M"] >= beta - ATOL)
    assert np.all(np.diff(mean["H"]) <= ATOL) and np.all(np.diff(mean["M"]) >= -ATOL)
    # strict where the length-t distributions of H and M differ
    tv = np.array(
        [0.0]
        + [0.5 * np.abs(bf.prefix_marginals(final["H"] - final["M"], V, LENGTH, t)).sum() for t in range(1, LENGTH + 1)]
    )
    differ = tv > 1e-3
    assert np.all(var[differ] > 0)
    assert np.all(mean["H"][differ] < beta) and np.all(mean["M"][differ] > beta)


def test_generated_corners():
    """beta = 0: the data is H (posterior on M 0 forever); beta = 1: the data is M (posterior 1);
    tau = 1: M = H, so the posterior stays at beta on every sequence."""
    rng = np.random.default_rng(11)
    arrays = embed_hmm(*random_hmm(rng, V, 3, "sparse"), vocab_size=V)
    human = HMMProcess(*arrays)
    seqs = bf.all_sequences(V, LENGTH)
    p_h = bf.hmm_sequence_probs(*arrays, seqs)
    model = with_temperature(human, 2.0)
    p_m = prefix_probs_from_conditional(tempered_definition(hmm_conditional(*arrays), 2.0), seqs)[:, -1]

    none = generated_text_mixture(human, model, 0.0)
    assert_log_matches(none.log_prob(seqs), p_h)
    assert np.all(np.asarray(none.posterior(seqs, "generated"))[..., 1] == 0.0)
    every = generated_text_mixture(human, model, 1.0)
    assert_log_matches(every.log_prob(seqs), p_m)
    np.testing.assert_allclose(np.asarray(every.posterior(seqs, "generated"))[..., 1], 1.0, rtol=0, atol=0)
    same = generated_text_mixture(human, with_temperature(human, 1.0), 0.3)
    np.testing.assert_allclose(np.asarray(same.posterior(seqs, "generated"))[..., 1], 0.3, rtol=0, atol=1e-12)


def test_human_and_model_is_registered_and_matches_its_definition():
    """make_process("human_and_model", ...) is (1 - beta) random_hmm(V, S, seed) + beta of it at
    temperature tau; its example is small."""
    assert "human_and_model" in families()
    process = make_process("human_and_model", vocab_size=3, num_states=3, beta=0.3, model_temperature=1.5, seed=0)
    assert process.vocab_size == 3 and process.latents == {"generated": ("human", "model")}
    np.testing.assert_allclose(np.asarray(process.weights), [0.7, 0.3], rtol=0, atol=1e-15)
    human, model = process.components
    expected = random_hmm_process(3, 3, seed=0)
    np.testing.assert_array_equal(np.asarray(human.transitions), np.asarray(expected.transitions))
    assert float(model.temperature) == 1.5
    assert human_and_model(3, 3, 0.3, 1.5, 0).names == ("human", "model")


# --------------------------------------------------------------------------------------------------
# Boundary checks
# --------------------------------------------------------------------------------------------------


def _hmm(seed=0, vocab=V):
    return HMMProcess(*random_hmm(np.random.default_rng(seed), vocab, 2, "dense"))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: MixtureProcess([], []), "components"),
        (lambda: MixtureProcess([_hmm(), object()], [0.5, 0.5]), "components"),
        (lambda: MixtureProcess([_hmm(), _hmm(vocab=2)], [0.5, 0.5]), "components"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [0.5, 0.6]), "weights"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [1.5, -0.5]), "weights"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [1.0]), "weights"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [[0.5, 0.5]]), "weights"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [0.5, 0.5], names=["a"]), "names"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [0.5, 0.5], names=["a", "a"]), "names"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [0.5, 0.5], latent=""), "latent"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [0.5, 0.5]).posterior(np.zeros((1, 2), int), "author"), "latent"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [0.5, 0.5]).log_prob(np.zeros(3, int)), "tokens"),
        (lambda: MixtureProcess([_hmm(), _hmm()], [0.5, 0.5]).sample(jax.random.key(0), 0, 3), "num_sequences"),
        (lambda: generated_text_mixture(_hmm(), _hmm(), 1.5), "beta"),
        (lambda: generated_text_mixture(_hmm(), _hmm(), -0.1), "beta"),
        (lambda: generated_text_mixture(_hmm(), _hmm(), "x"), "beta"),
        (lambda: generated_text_mixture(with_temperature(_hmm(), 2.0), _hmm(), 0.5), "human"),
        (lambda: generated_text_mixture(_hmm(), _hmm(vocab=2), 0.5), "model"),
        (lambda: generated_text_mixture(_hmm(), None, 0.5), "model"),
        (lambda: human_and_model(3, 3, 0.5, 0.0, 0), "model_temperature"),
        (lambda: human_and_model(3, 3, 0.5, float("inf"), 0), "model_temperature"),
        (lambda: human_and_model(3, 3, 0.5, 1.5, -1), "seed"),
        (lambda: human_and_model(0, 3, 0.5, 1.5, 0), "vocab_size"),
        (lambda: human_and_model(3, 0, 0.5, 1.5, 0), "num_states"),
        (lambda: human_and_model(3, 3, 2.0, 1.5, 0), "beta"),
    ],
)
def test_bad_arguments_raise(build, name):
    with pytest.raises(ValueError, match=name):
        build()
