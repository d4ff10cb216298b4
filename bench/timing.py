"""Timing shared by the benchmarks: best-of-rounds with the contenders alternated, and the matmul rate
that FLOP utilisation is measured against. Benchmarks run as scripts, so they import this as `timing`."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def round_times(contenders: dict, rounds: int, warmup: int = 1, pause: float = 0.0) -> dict[str, list[float]]:
    """Wall time of each contender in each of `rounds` rounds, alternating contenders within a round
    so that drifts in machine load (this VM varies by +-25%) hit every contender alike. Each contender
    first runs `warmup` untimed calls (compilation, PyTorch's first slow iterations); every call is
    followed by an untimed `pause`, since XLA's and PyTorch's worker threads spin for a while after
    their work ends, which on a 2-core machine would slow whichever framework runs next."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
        time.sleep(pause)
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
            time.sleep(pause)
    return times


def best_times(contenders: dict, rounds: int, warmup: int = 1, pause: float = 0.0) -> dict[str, float]:
    """Minimum wall time of each contender over `round_times`' rounds."""
    return {name: min(times) for name, times in round_times(contenders, rounds, warmup, pause).items()}


def paired_ratio(times: dict[str, list[float]], ours: str, peer: str) -> str:
    """"median [quartiles]" over rounds of the speed ratio ours / peer within the round (both calls do
    the same work). A round's two calls ran seconds apart, so this ratio shrugs off most of the load
    drifts that move best-of-rounds figures by 15% between runs."""
    ratios = np.asarray(times[peer]) / np.asarray(times[ours])
    low, median, high = np.percentile(ratios, [25, 50, 75])
    return f"{median:.2f}x [{low:.2f}, {high:.2f}]"


def best_time(fn, rounds: int) -> float:
    """Minimum wall time of one function over `rounds` calls after one warm-up call."""
    return best_times({"only": fn}, rounds)["only"]


def matmul_gflops(rounds: int, size: int = 2048) -> float:
    """Best float32 GFLOP/s of a jitted size x size matmul (the device's practical peak)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    dot = jax.jit(jnp.dot)
    return 2 * size**3 / best_time(lambda: dot(a, a).block_until_ready(), rounds) / 1e9
