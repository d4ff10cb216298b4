"""C2: a small prediction cost can make every long generation impossible (exact computation).

Data process p: a fixed 3-state, 3-token hidden Markov model (written out below). Predictors: Q = p
(perfect) and an imperfect Q (p's emission and move matrices each mixed with uniform). Q' =
sticky_marker(Q, eps) adds a marker token g with probability eps until it appears and 1 after. Per eps:

  exact (enumeration), n in grid.enum_lengths, both Q:
    F_n(Q') - F_n(Q)        closed form  -n log(1 - eps)
    P(g appears within n)   closed form  1 - (1 - eps)^n; measured as Q'(P = 0) =
                            generation_kl(p, Q').off_support_fraction (every sequence is possible under p)
    G_n(Q')                 closed form  inf
    TV_n(P, Q')             closed form  >= 1 - (1 - eps)^n, with equality for Q = p
  Monte Carlo, n in grid.mc_lengths:
    P(g appears within n) for Q = p, as generation_kl's off-support fraction (the fraction of
      generations P cannot produce) with its standard error;
    TV_n(P, Q') for both Q, with the library's standard error (for Q = p: the fraction of generations
      that contain g).

Closed forms are stored beside the measurements, for the figure; they are oracles, never inputs.
Randomness: every Monte Carlo key is jax.random.fold_in of key(seed) by eps index, n and estimate. Runs in float64 (turns on JAX's x64 mode). Writes <out>/c2_sticky_marker/<profile>.json.

    python scripts/experiments/c2_sticky_marker.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
import tyro

from theory.divergence import forward_kl, generation_kl, total_variation
from toymodels.predictors import sticky_marker
from toymodels.processes import HMMProcess
from toymodels.results import run_metadata, write_json_atomic

NAME = "c2_sticky_marker"

# p: emit token v from state i with EMIT[i, v], then move from i to j with MOVE[i, j], so
# T[v, i, j] = EMIT[i, v] MOVE[i, j]. The zeros forbid some hidden paths, yet every token sequence stays
# possible (from every reachable set of states every token can be emitted), so for both predictors
# Q'(P = 0) is exactly the chance that g appears.
MOVE = np.array([[0.80, 0.20, 0.00], [0.00, 0.70, 0.30], [0.25, 0.00, 0.75]])
EMIT = np.array([[0.90, 0.10, 0.00], [0.00, 0.80, 0.20], [0.10, 0.00, 0.90]])
INITIAL = np.array([1.0, 1.0, 1.0]) / 3
IMPERFECT_MIX = 0.1  # the imperfect Q: EMIT and MOVE each mixed with uniform, weight 0.1
CLAIM_LENGTH = 1000  # C2 quotes P(g appears in 1000 tokens) = 0.99996 at eps = 0.01


@dataclasses.dataclass(frozen=True)
class Grid:
    eps: tuple[float, ...]  # marker probabilities of Q', each in (0, 1)
    enum_lengths: tuple[int, ...]  # lengths n computed exactly (enumerates 4^n generations of Q')
    mc_lengths: tuple[int, ...]  # lengths n estimated by Monte Carlo
    num_samples: int  # generations of Q' per Monte Carlo estimate

    def __post_init__(self):
        if not self.eps or not self.enum_lengths:
            raise ValueError("eps and enum_lengths must not be empty")
        if not all(0 < e < 1 for e in self.eps):
            raise ValueError(f"eps must lie in (0, 1), got {self.eps}")
        if min(self.enum_lengths + self.mc_lengths, default=1) < 1 or max(self.enum_lengths, default=1) > 11:
            raise ValueError("lengths must be >= 1, and enumerated lengths <= 11 (4^n sequences)")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {self.num_samples}")


PROFILES = {
    "quick": Grid(eps=(0.001, 0.01, 0.1), enum_lengths=tuple(range(1, 9)), mc_lengths=(10, 30, 100, 300),
                  num_samples=2000),
    "full": Grid(eps=(0.001, 0.01, 0.1), enum_lengths=tuple(range(1, 11)), mc_lengths=(10, 30, 100, 300, 1000),
                 num_samples=20000),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """C2 exact-computation experiment: see the module docstring."""

    profile: Literal["quick", "full"] = "quick"  # quick: under 2 minutes on 2 CPU cores; full: long n, more samples
    out: str = "results"  # results directory; the run is written to <out>/c2_sticky_marker/<profile>.json
    seed: int = 0  # root of every Monte Carlo key (the enumerated quantities use no randomness)


def processes() -> dict[str, HMMProcess]:
    """p itself (the perfect predictor) and the imperfect predictor. The imperfect one keeps p's
    emit-then-move structure, so both share every compiled function (the structure is static)."""
    uniform = np.full_like(MOVE, 1.0 / MOVE.shape[0])
    emit, move = ((1 - IMPERFECT_MIX) * x + IMPERFECT_MIX * uniform for x in (EMIT, MOVE))
    return {"perfect": HMMProcess(np.einsum("iv,ij->vij", EMIT, MOVE), INITIAL),
            "imperfect": HMMProcess(np.einsum("iv,ij->vij", emit, move), INITIAL)}


def closed_forms(eps: float, n: int) -> dict[str, float]:
    """C2's oracles: F_n(Q') - F_n(Q), P(g appears in n tokens of Q') (a lower bound on TV_n), G_n(Q')."""
    return {"cost_closed_form": -n * math.log1p(-eps), "p_marker_closed_form": -math.expm1(n * math.log1p(-eps)),
            "generation_kl_closed_form": math.inf}


def enumerate_exact(p, q, eps: float, lengths: tuple[int, ...]) -> list[dict]:
    """Exact rows for Q = q. F_n and TV_n for every n come from one enumeration at the longest n (F_n is
    the sum of the first n chain-rule terms, TV_n the TV of length-n prefixes); P(g appears) needs
    generation_kl's off-support fraction at each n."""
    marked, longest = sticky_marker(q, eps), max(lengths)
    base_terms = forward_kl(p, q, longest).per_position
    marked_terms = forward_kl(p, marked, longest).per_position
    tv = total_variation(p, marked, longest).per_position
    rows = []
    for n in lengths:
        generation = generation_kl(p, marked, n)
        rows.append({
            "eps": eps, "n": n, "forward_kl_base": base_terms[:n].sum(), "forward_kl_marked": marked_terms[:n].sum(),
            "cost": marked_terms[:n].sum() - base_terms[:n].sum(), "generation_kl": generation.value,
            "generation_off_support": generation.off_support_fraction, "tv": tv[n - 1], **closed_forms(eps, n)})
    return rows


def estimate(p, predictors, eps: float, n: int, grid: Grid, key) -> dict:
    """Monte Carlo row at length n: P(g appears) for Q = p and TV_n for both Q, with standard errors."""
    marked = {name: sticky_marker(q, eps) for name, q in predictors.items()}
    generation = generation_kl(p, marked["perfect"], n, "monte_carlo", key=jax.random.fold_in(key, 0),
                               num_samples=grid.num_samples)
    row = {"eps": eps, "n": n, "num_samples": grid.num_samples,
           "p_marker": generation.off_support_fraction, "p_marker_stderr": generation.off_support_stderr,
           "generation_kl": generation.value}
    for index, (name, q) in enumerate(marked.items()):
        tv = total_variation(p, q, n, "monte_carlo", key=jax.random.fold_in(key, 1 + index),
                             num_samples=grid.num_samples)
        row |= {f"tv_{name}": tv.value, f"tv_{name}_stderr": tv.stderr}
    return row | closed_forms(eps, n)


def closed_form_curves(grid: Grid) -> dict:
    """Dense closed-form curves and C2's quoted numbers, stored so the figure never computes them."""
    eps_grid = np.geomspace(min(grid.eps) / 2, min(2 * max(grid.eps), 0.5), 61)
    n_grid = np.unique(np.geomspace(1, max(grid.enum_lengths + grid.mc_lengths + (CLAIM_LENGTH,)), 200).round())
    return {
        "eps": eps_grid, "cost_per_token": -np.log1p(-eps_grid), "n": n_grid,
        "p_marker": [{"eps": eps, "value": -np.expm1(n_grid * np.log1p(-eps))} for eps in grid.eps],
        "summary": [{"eps": eps, "cost_per_token": -math.log1p(-eps), "cost_per_token_bits": -math.log1p(-eps) / math.log(2),
                     "n": CLAIM_LENGTH, "p_marker": -math.expm1(CLAIM_LENGTH * math.log1p(-eps)),
                     "p_no_marker": math.exp(CLAIM_LENGTH * math.log1p(-eps))} for eps in grid.eps],
    }


def measure(grid: Grid, seed: int) -> dict:
    """Every measurement of the module docstring, as rows of plain numbers. Turns on x64 mode."""
    jax.config.update("jax_enable_x64", True)  # the exact checks compare to closed forms at 1e-9
    start, root = time.perf_counter(), jax.random.key(seed)
    predictors = processes()
    p = predictors["perfect"]
    enumeration, monte_carlo = [], []
    for e_index, eps in enumerate(grid.eps):
        for name, q in predictors.items():
            enumeration += [{"predictor": name, **row} for row in enumerate_exact(p, q, eps, grid.enum_lengths)]
        print(f"  eps={eps:g}: enumerated n in {grid.enum_lengths} ({time.perf_counter() - start:.0f} s)", flush=True)
        for n in grid.mc_lengths:
            key = jax.random.fold_in(jax.random.fold_in(root, e_index), n)
            monte_carlo.append(estimate(p, predictors, eps, n, grid, key))
            print(f"  eps={eps:g}: Monte Carlo n={n} ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"enumeration": enumeration, "monte_carlo": monte_carlo, "wall_time_s": time.perf_counter() - start}


def main(profile: str = "quick", out: str | Path = "results", seed: int = 0, grid: Grid | None = None) -> Path:
    """Run C2 on `grid` (default: the profile's) and write the result file; returns its path."""
    grid = PROFILES[profile] if grid is None else grid
    print(f"{NAME}: profile {profile}, seed {seed}, eps {grid.eps}", flush=True)
    measured = measure(grid, seed)
    record = {
        "experiment": NAME, "claim": "C2",
        "config": {"profile": profile, "seed": seed, "grid": dataclasses.asdict(grid)},
        "process": {"move": MOVE, "emit": EMIT, "initial": INITIAL, "imperfect_mix": IMPERFECT_MIX,
                    "vocab_size": EMIT.shape[1], "marker_token": EMIT.shape[1]},
        "metadata": {**run_metadata(), "wall_time_s": measured.pop("wall_time_s")},
        **measured,
        "closed_form_curves": closed_form_curves(grid),
    }
    path = write_json_atomic(Path(out) / NAME / f"{profile}.json", record)
    for eps in grid.eps:
        costs = [r["cost"] / r["n"] for r in measured["enumeration"] if r["eps"] == eps]
        last = [r for r in measured["monte_carlo"] if r["eps"] == eps][-1:]
        mc = (f"; P(g in {last[0]['n']}) = {last[0]['p_marker']:.5f} +- {last[0]['p_marker_stderr']:.5f}"
              f" (closed form {last[0]['p_marker_closed_form']:.5f})") if last else ""
        print(f"  eps={eps:g}: cost/token {np.mean(costs):.8f} nats (closed form {-math.log1p(-eps):.8f}){mc}")
    print(f"{NAME}: wrote {path.name} in {record['metadata']['wall_time_s']:.0f} s", flush=True)
    return path


if __name__ == "__main__":
    config = tyro.cli(Config)
    main(config.profile, config.out, config.seed)
