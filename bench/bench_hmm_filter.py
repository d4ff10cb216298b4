"""Exact HMM filtering throughput beside dynamax and hmmlearn, measured in the same run.

Workload: a standard HMM (32 states, 16 symbols; emit from the current state, then move) written in
the edge-emitting form T[v, i, j] = B[i, v] A[i, j]; batch 1024, length 256, float32. Every contender
computes log P(x_1..x_L) for every sequence. Useful work is counted as 2 S^2 flops per token (one
belief-times-transition product) and compared with a float32 matmul timed here too.

Targets (issue 2): at least 5x dynamax's filter and 20x hmmlearn's fastest implementation. On the CPU
toymodels' log_prob is a C++ kernel (toymodels/native/hmm_log_prob.cc) that shares the batch out over
XLA's CPU thread pool, one thread per core; dynamax's filter is XLA ops too small for XLA to split, so
it runs on one core, and hmmlearn runs on one. For the ratio per core, run this under `taskset -c 0`.

The run also times toymodels' log_conditionals on the same batch (all next-token distributions, what
theory.divergence reads; an XLA scan), for reference; it has no peer here, and two floor scans (see
floor_scans) that show how fast any filter built from XLA ops could be on this machine.
"""

from __future__ import annotations

import argparse
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from timing import best_time, matmul_gflops, paired_ratio, round_times

from toymodels.native import hmm_log_prob as native
from toymodels.precision import matmul
from toymodels.processes import HMMProcess


def random_standard_hmm(rng, num_states, vocab_size):
    initial = rng.dirichlet(np.ones(num_states))
    moves = rng.dirichlet(np.ones(num_states), size=num_states)
    emissions = rng.dirichlet(np.ones(vocab_size), size=num_states)
    return initial, moves, emissions


def floor_scans(moves, emission_row, length: int, block: int = 8):
    """Two scans that do less than any exact filter, to show what XLA:CPU's per-token ops cost here.

    "products only": u <- u A for every token, normalised once per `block` tokens, as toymodels'
    log_prob does; "products + fixed multiply": the same with u <- (u * c) A for a fixed vector c, that is
    a filter whose every token has the same emission row, so no per-sequence gather. A filter of a
    standard HMM needs at least the second: its rate bounds what toymodels' log_prob can reach with
    XLA ops (it also has to gather each sequence's emission row). Each takes the start belief [B, S] as
    an argument, so that XLA cannot fold the whole scan into a constant."""

    def scan(scale_each_token: bool):
        def body(u, _):
            for _ in range(block):
                u = matmul(u * emission_row if scale_each_token else u, moves)
            mass = u.sum(axis=-1, keepdims=True)
            return u / mass, jnp.log(mass[:, 0])

        return jax.jit(lambda start: jax.lax.scan(body, start, None, length=length // block)[1].sum(axis=0))

    return scan(False), scan(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15, help="alternating timing rounds")
    parser.add_argument("--hmmlearn-batch", type=int, default=128, help="hmmlearn is slow: time a subset")
    args = parser.parse_args()
    num_states, vocab, batch, length = args.states, args.vocab, args.batch, args.length

    rng = np.random.default_rng(0)
    initial, moves, emissions = random_standard_hmm(rng, num_states, vocab)
    edge_form = np.einsum("iv,ij->vij", emissions, moves).astype(np.float32)
    process = HMMProcess(edge_form, initial.astype(np.float32))
    tokens = process.sample(jax.random.key(0), batch, length)
    tokens_np = np.asarray(tokens)
    results = {}

    # The same process without the structure specialisation: the generic edge-emitting step.
    generic = HMMProcess(edge_form, initial.astype(np.float32))
    object.__setattr__(generic.recursion, "structure", "general")

    # dynamax's import sets JAX's default matmul precision to float32 (full) for the whole process, as
    # its users get it; toymodels' exact side asks for full precision itself, so both compute alike.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from dynamax.hidden_markov_model import hmm_filter

    initial_j, moves_j = jnp.asarray(initial, jnp.float32), jnp.asarray(moves, jnp.float32)
    log_emissions = jnp.asarray(np.log(emissions), jnp.float32)

    @jax.jit
    def dynamax_log_prob(tokens):
        def one(x):
            return hmm_filter(initial_j, moves_j, log_emissions[:, x].T).marginal_loglik

        return jax.vmap(one)(tokens)

    products_only, products_and_multiply = floor_scans(moves_j, jnp.asarray(emissions[:, 0], jnp.float32), length)
    uniform = jnp.full((batch, num_states), 1.0 / num_states, jnp.float32)

    per_round = round_times(
        {
            "toymodels": lambda: process.log_prob(tokens).block_until_ready(),
            "toymodels (generic step)": lambda: generic.log_prob(tokens).block_until_ready(),
            "dynamax hmm_filter": lambda: dynamax_log_prob(tokens).block_until_ready(),
            # Not a contender: every next-token distribution, [B, L, V], as theory.divergence reads them.
            "toymodels log_conditionals": lambda: process.log_conditionals(tokens).block_until_ready(),
            # Not contenders: lower bounds on the cost of any filter built from XLA ops (floor_scans).
            "floor: products only": lambda: products_only(uniform).block_until_ready(),
            "floor: products + multiply": lambda: products_and_multiply(uniform).block_until_ready(),
        },
        args.repeats,
    )
    results = {name: min(times) for name, times in per_round.items()}
    ours = np.asarray(process.log_prob(tokens), np.float64)
    theirs = np.asarray(dynamax_log_prob(tokens), np.float64)

    from hmmlearn.hmm import CategoricalHMM

    subset = tokens_np[: args.hmmlearn_batch]
    for implementation in ("log", "scaling"):
        model = CategoricalHMM(n_components=num_states, implementation=implementation, n_features=vocab)
        model.startprob_, model.transmat_, model.emissionprob_ = initial, moves, emissions
        stacked, lengths = subset.reshape(-1, 1), [length] * len(subset)
        seconds = best_time(lambda: model.score(stacked, lengths), max(1, args.repeats // 2))
        results[f"hmmlearn ({implementation})"] = seconds * batch / len(subset)  # scaled to the full batch

    matmul = matmul_gflops(args.repeats)
    useful_flops = batch * length * 2 * num_states**2
    relative_gap = np.max(np.abs(ours - theirs) / np.abs(theirs))

    print(f"exact filtering: {num_states} states, {vocab} symbols, batch {batch}, length {length}, float32")
    kernel = "C++ kernel" if native.available(np.float32) else "XLA scan (no kernel: see the warning above)"
    print(f"device: {jax.devices()[0].device_kind}, {len(os.sched_getaffinity(0))} cores usable; "
          f"toymodels structure: {process.structure}, log_prob by {kernel}")
    print(f"{'contender':28s} {'sequences/s':>12s} {'GFLOP/s':>9s}")
    for name, seconds in results.items():
        print(f"{name:28s} {batch / seconds:12.0f} {useful_flops / seconds / 1e9:9.2f}")
    print(f"float32 2048x2048 matmul: {matmul:.1f} GFLOP/s")
    ours_rate = batch / results["toymodels"]
    hmmlearn_best = max(batch / results["hmmlearn (log)"], batch / results["hmmlearn (scaling)"])
    print(f"ratio vs dynamax: {ours_rate / (batch / results['dynamax hmm_filter']):.2f}x best of rounds, "
          f"{paired_ratio(per_round, 'toymodels', 'dynamax hmm_filter')} median [quartiles] within rounds (target >= 5)")
    ceiling = results["dynamax hmm_filter"] / results["floor: products + multiply"]
    print(f"ceiling vs dynamax of an XLA-op filter with no per-sequence gather: {ceiling:.2f}x (floor: products + multiply)")
    print(f"ratio vs hmmlearn fastest: {ours_rate / hmmlearn_best:.1f}x (target >= 20)")
    print(f"fraction of matmul peak: {useful_flops / results['toymodels'] / 1e9 / matmul:.3f}")
    print(f"max relative log-prob gap to dynamax: {relative_gap:.2e}")


if __name__ == "__main__":
    main()
