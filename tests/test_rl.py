"""KL-regularised REINFORCE (C9): the closed-form optimum pi* proportional to pi_base exp(r / beta), the
estimator, and training towards pi* (toymodels/rl.py).

Oracles: pi* and log Z written out with itertools and NumPy from a Markov-chain base; the identity
J(pi) = E_pi[r] - beta KL(pi || pi_base) = beta log Z - beta KL(pi || pi*); the exact gradient of J by
automatic differentiation of its enumerated form, against the mean of the surrogate's gradients.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory.divergence import generation_kl
from toymodels.optimizer import OptimizerConfig
from toymodels.predictors import sequence_log_prob
from toymodels.processes import markov_chain
from toymodels.rl import (
    CappedTokenCount,
    RLConfig,
    TokenCount,
    advantages,
    enumerate_sequences,
    log_partition,
    optimal_policy,
    reinforce,
    surrogate,
)
from toymodels.transformer import TransformerConfig, graphdef_for, init_params
from toymodels.transformer_predictor import TransformerPredictor
from script_loader import load_script

LENGTH = 3
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@st.composite
def chains(draw, vocab=None):
    vocab = vocab or draw(st.integers(2, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.dirichlet(np.full(vocab, 0.7), size=vocab), rng.dirichlet(np.full(vocab, 1.0))


def chain_probs(transition, initial, length):
    """P(x) of every sequence in lexicographic order, as a product of the chain's probabilities."""
    vocab = len(initial)
    return np.array([initial[x[0]] * np.prod([transition[a, b] for a, b in zip(x[:-1], x[1:])])
                     for x in itertools.product(range(vocab), repeat=length)])


def count_reward(token, scale, length, vocab):
    return np.array([scale * sum(t == token for t in x) / length for x in itertools.product(range(vocab), repeat=length)])


@given(chains(), st.floats(0.05, 5.0), st.floats(-2.0, 2.0))
def test_optimum_is_the_reweighted_base(chain, beta, scale):
    """optimal_policy's table is pi_base(x) exp(r(x) / beta) / Z, and log_partition is log Z, with pi_base
    a Markov chain multiplied out by hand."""
    transition, initial = chain
    vocab = len(initial)
    base = chain_probs(transition, initial, LENGTH)
    rewards = count_reward(0, scale, LENGTH, vocab)
    weights = base * np.exp(rewards / beta)
    table = optimal_policy(markov_chain(transition, initial), TokenCount(0, scale), beta, LENGTH)
    np.testing.assert_allclose(np.asarray(table.probs()), weights / weights.sum(), atol=1e-12)
    assert log_partition(np.log(base), rewards, beta) == pytest.approx(math.log(weights.sum()), abs=1e-12)


@given(chains(vocab=2), chains(vocab=2), st.floats(0.1, 3.0))
def test_objective_is_log_partition_minus_kl_to_the_optimum(base_chain, policy_chain, beta):
    """For any policy pi: E_pi[r] - beta KL(pi || pi_base) = beta log Z - beta KL(pi || pi*), so pi* is
    the maximiser. Left side in NumPy; the KL to pi* by theory.divergence over the TableProcess."""
    base, policy = chain_probs(*base_chain, LENGTH), chain_probs(*policy_chain, LENGTH)
    rewards = count_reward(1, 1.0, LENGTH, 2)
    objective = policy @ rewards - beta * np.sum(policy * np.log(policy / base))
    table = optimal_policy(markov_chain(*base_chain), TokenCount(1), beta, LENGTH)
    kl = generation_kl(table, markov_chain(*policy_chain), LENGTH).value
    log_z = math.log(np.sum(base * np.exp(rewards / beta)))
    assert objective == pytest.approx(beta * log_z - beta * kl, abs=1e-10)


def test_small_beta_concentrates_on_the_proxy_argmax_despite_tiny_base_weight():
    """C9: as beta -> 0, pi* moves onto the proxy's argmax (all zeros) although the base gives it
    probability 1e-4, and the hack rate (more zeros than the true reward's cap) tends to 1 while the
    true reward falls below the base's."""
    transition = np.array([[0.01, 0.99], [0.5, 0.5]])
    base = markov_chain(transition, initial=np.array([0.5, 0.5]))
    base_probs = chain_probs(transition, np.array([0.5, 0.5]), LENGTH)
    argmax = 0  # index of (0, 0, 0)
    assert base_probs[argmax] == pytest.approx(0.5e-4)
    true = CappedTokenCount(0, cap=1)
    seqs = list(itertools.product(range(2), repeat=LENGTH))
    hack = np.array([sum(t == 0 for t in x) > 1 for x in seqs], float)
    true_rewards = np.array([(min(n, 1) - max(n - 1, 0)) / LENGTH for n in (sum(t == 0 for t in x) for x in seqs)])
    masses = []
    for beta in (1.0, 0.1, 0.02):
        probs = np.asarray(optimal_policy(base, TokenCount(0), beta, LENGTH).probs())
        masses.append(probs[argmax])
    assert masses[0] < masses[1] < masses[2] and masses[2] > 0.99
    assert probs @ hack > 0.99 and probs @ true_rewards < base_probs @ true_rewards
    np.testing.assert_allclose(np.asarray(true(jnp.asarray(seqs))), true_rewards, atol=1e-12)
    np.testing.assert_allclose(np.asarray(true.over_cap(jnp.asarray(seqs))), hack)


def test_baselines():
    """Leave-one-out subtracts the mean of the other rewards; mean subtracts the batch mean."""
    shaped = np.array([1.0, 2.0, 4.0, 7.0])
    loo = [shaped[i] - np.mean(np.delete(shaped, i)) for i in range(4)]
    np.testing.assert_allclose(np.asarray(advantages(jnp.asarray(shaped), "leave_one_out")), loo, atol=1e-12)
    np.testing.assert_allclose(np.asarray(advantages(jnp.asarray(shaped), "mean")), shaped - shaped.mean(), atol=1e-12)
    np.testing.assert_allclose(np.asarray(advantages(jnp.asarray(shaped), "none")), shaped)


MODEL = TransformerConfig(vocab_size=2, context=LENGTH, num_layers=1, d_model=8, num_heads=2, mlp_width=16)


def along(gradient, direction):
    """The directional derivative d . grad f, from grad f and d (pytrees of one structure)."""
    return sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(gradient), jax.tree.leaves(direction)))


def test_surrogate_gradient_is_an_unbiased_estimate_of_the_objective_gradient():
    """Along a random direction d, the mean over 48 independent batches (B = 256, leave-one-out
    baseline) of d . grad(-surrogate) matches d . grad J, J computed exactly by enumeration and
    differentiated by JAX, within 5 standard errors of the batch mean."""
    beta, reward = 0.5, TokenCount(1)
    params, base_params = (init_params(MODEL, jax.random.key(k))[1] for k in (0, 1))
    direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape, x.dtype), params)
    listed = enumerate_sequences(2, LENGTH)  # NumPy: checked on the host even inside jit
    seqs = jnp.asarray(listed)
    rewards = reward(seqs)

    def objective(p):
        log_q = sequence_log_prob(TransformerPredictor(MODEL, p), listed)
        log_b = sequence_log_prob(TransformerPredictor(MODEL, base_params), listed)
        q = jnp.exp(log_q)
        return q @ rewards - beta * q @ (log_q - log_b)

    # Directional derivatives by reverse mode: on a CPU the transformer's attention is a kernel with a
    # custom VJP, which forward mode (jax.jvp) cannot differentiate.
    exact = float(jax.jit(lambda p, d: along(jax.grad(objective)(p), d))(params, direction))
    log_q = np.asarray(sequence_log_prob(TransformerPredictor(MODEL, params), seqs), np.float64)
    draws = jax.random.choice(jax.random.key(3), len(seqs), shape=(48, 256), p=jnp.asarray(np.exp(log_q) / np.exp(log_q).sum()))
    loss = lambda p, tokens: surrogate(p, base_params, tokens, beta, graphdef=graphdef_for(MODEL), reward=reward,  # noqa: E731
                                       baseline="leave_one_out")[0]
    slope = jax.jit(jax.vmap(lambda tokens: along(jax.grad(loss)(params, tokens), direction)))
    estimates = -np.asarray(slope(seqs[draws]), np.float64)
    stderr = estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) <= 5 * stderr


def test_reinforce_moves_towards_the_optimum():
    """From a random transformer, 12 steps for beta = 0.25 bring KL(pi_theta || pi*) below half its
    start; at step 0 (pi_theta = pi_base) it equals log Z - E_base[r] / beta, from the base's enumerated
    log-probabilities; the records are per slot of seeds x betas."""
    base = TransformerPredictor(MODEL, init_params(MODEL, jax.random.key(0))[1])
    config = RLConfig(steps=12, batch_size=32, sequence_length=LENGTH, betas=(0.25,), eval_every=12,
                      optimizer=OptimizerConfig(learning_rate=3e-2, schedule="constant", warmup_fraction=0.0,
                                                weight_decay=0.0))
    result = reinforce(base, TokenCount(1), config, log_every=4)
    seqs = enumerate_sequences(2, LENGTH)
    log_base = np.asarray(sequence_log_prob(base, seqs), np.float64)
    rewards = count_reward(1, 1.0, LENGTH, 2)
    start = math.log(np.exp(log_base) @ np.exp(rewards / 0.25)) - np.exp(log_base) @ rewards / 0.25
    first, last = result.exact[0]["kl_to_optimum"][0], result.exact[-1]["kl_to_optimum"][0]
    assert [r["step"] for r in result.exact] == [0, 12] and [r["step"] for r in result.history] == [4, 8, 12]
    assert first == pytest.approx(start, rel=1e-4)
    assert last < 0.5 * first
    print("KL(pi_theta || pi*) at steps 0, 12:", first, last)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: RLConfig(baseline="median"), "baseline"),
        (lambda: RLConfig(betas=()), "betas"),
        (lambda: RLConfig(betas=(0.0,)), "betas"),
        (lambda: RLConfig(batch_size=1), "batch_size"),
        (lambda: enumerate_sequences(10, 7), "max_sequences"),
        (lambda: log_partition(np.zeros(2), np.zeros(2), -1.0), "beta"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _script(name: str):
    return load_script(SCRIPTS / f"{name}.py", f"{name}_script")


@pytest.mark.slow
def test_reinforce_converges_to_the_optimum_for_three_betas(tmp_path):
    """scripts/train.py trains a base on a 3-token Markov chain with a rare transition; scripts/rl.py
    then runs REINFORCE for beta in {0.1, 0.3, 1.0} (one vmapped program) on sequences of length 4,
    proxy reward = share of token 0. Each slot ends with KL(pi_theta || pi*_beta) below 0.02 nats
    (under 0.5% of a sequence's 4 log 3 = 4.4 nats of entropy at most) and below a tenth of its start."""
    base_dir, out = tmp_path / "base", tmp_path / "rl"
    kwargs = '{"transition": [[0.05, 0.6, 0.35], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3]]}'
    _script("train").main(["--out", str(base_dir), "--process", "markov_chain", "--process-kwargs", kwargs,
                           "--model.num-layers", "1", "--model.d-model", "16", "--model.num-heads", "2",
                           "--train.steps", "200", "--train.sequence-length", "4", "--train.batch-size", "64",
                           "--train.optimizer.learning-rate", "1e-2", "--train.num-devices", "1", "--quiet"])
    record = _script("rl").main(["--out", str(out), "--base", str(base_dir), "--rl.betas", "0.1", "0.3", "1.0",
                                 "--rl.steps", "400", "--rl.batch-size", "128", "--rl.sequence-length", "4",
                                 "--rl.eval-every", "50", "--rl.optimizer.learning-rate", "3e-3",
                                 "--rl.optimizer.schedule", "cosine", "--rl.optimizer.final-fraction", "0.05"])
    curves = np.array([r["kl_to_optimum"] for r in record["exact"]])
    print("steps", [r["step"] for r in record["exact"]])
    print("KL(pi_theta || pi*) per step, columns beta = 0.1, 0.3, 1.0:\n", curves)
    print("KL(pi* || pi_theta):\n", np.array([r["kl_from_optimum"] for r in record["exact"]]))
    print("optimum:", record["optimum"])
    assert np.all(curves[-1] < 0.02) and np.all(curves[-1] < 0.1 * curves[0])


class _Kill(Exception):
    pass


def test_reinforce_resumes_after_a_kill_with_identical_state_and_records(tmp_path):
    """A run stopped after step 5 (checkpoints every 3 steps) and rerun with the same out_dir redoes steps
    4-8 only and ends with the uninterrupted run's parameters, optimizer state and records, bit for bit."""
    base = TransformerPredictor(MODEL, init_params(MODEL, jax.random.key(0))[1])
    config = RLConfig(steps=8, batch_size=8, sequence_length=LENGTH, betas=(0.25, 1.0), eval_every=4)
    run = dict(log_every=2, checkpoint_every=3)
    whole = reinforce(base, TokenCount(1), config, out_dir=tmp_path / "whole", **run)

    def kill_after_5(step, state):
        if step == 5:
            raise _Kill

    with pytest.raises(_Kill):
        reinforce(base, TokenCount(1), config, out_dir=tmp_path / "resumed", callback=kill_after_5, **run)
    steps_redone = []
    resumed = reinforce(base, TokenCount(1), config, out_dir=tmp_path / "resumed",
                        callback=lambda step, state: steps_redone.append(step), **run)
    assert steps_redone == [4, 5, 6, 7, 8]
    for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.history == whole.history and resumed.exact == whole.exact
    assert [r["step"] for r in resumed.exact] == [0, 4, 8]


def test_reinforce_refuses_to_resume_another_run(tmp_path):
    base = TransformerPredictor(MODEL, init_params(MODEL, jax.random.key(0))[1])
    config = RLConfig(steps=2, batch_size=8, sequence_length=LENGTH, betas=(1.0,), eval_every=0)
    reinforce(base, TokenCount(1), config, out_dir=tmp_path)
    with pytest.raises(ValueError, match="another RL run"):
        reinforce(base, TokenCount(1), dataclasses.replace(config, betas=(0.5,)), out_dir=tmp_path)
    other_base = TransformerPredictor(MODEL, init_params(MODEL, jax.random.key(1))[1])
    with pytest.raises(ValueError, match="another RL run"):
        reinforce(other_base, TokenCount(1), config, out_dir=tmp_path)
    with pytest.raises(ValueError, match="another RL run"):  # another reward: its records are not these
        reinforce(base, TokenCount(2), config, out_dir=tmp_path)
    reinforce(base, TokenCount(1), config, out_dir=tmp_path)  # the same run resumes (finished: nothing to do)
    with pytest.raises(ValueError, match="checkpoint_every"):
        reinforce(base, TokenCount(1), config, out_dir=tmp_path, checkpoint_every=-1)
