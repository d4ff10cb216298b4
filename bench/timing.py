"""Timing shared by the benchmarks: best-of-rounds with the contenders alternated, and the matmul rate
that FLOP utilisation is measured against. Benchmarks run as scripts, so they import this as `timing`."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def best_times(contenders: dict, rounds: int, warmup: int = 1, pause: float = 0.0) -> dict[str, float]:
    """Minimum wall time of each contender over `rounds` rounds, alternating contenders within a round
    so that drifts in machine load (this VM varies by +-25%) hit every contender alike. Each contender
    first runs `warmup` untimed calls (compilation, PyTorch's first slow iterations); every call is
    followed by an untimed `pause`, since XLA's and PyTorch's worker threads spin for a while after
    their work ends, which on a 2-core machine would slow whichever framework runs next."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
        time.sleep(pause)
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            time.sleep(pause)
    return best


def best_time(fn, rounds: int) -> float:
    """Minimum wall time of one function over `rounds` calls after one warm-up call."""
    return best_times({"only": fn}, rounds)["only"]


def matmul_gflops(rounds: int, size: int = 2048) -> float:
    """Best float32 GFLOP/s of a jitted size x size matmul (the device's practical peak)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    dot = jax.jit(jnp.dot)
    return 2 * size**3 / best_time(lambda: dot(a, a).block_until_ready(), rounds) / 1e9
