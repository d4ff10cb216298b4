"""C1: a trained transformer predicts like the posterior mixture over latent authors.

Data: a mixture of K authors with a uniform prior (toymodels.processes.authors.latent_authors), each
writing i.i.d. tokens from its own distribution (order 0, `unigram_authors` below) or a first-order
Markov chain (order 1, markov_authors); the authors share a fraction `closeness` of their distributions.
Transformers (several seeds, trained together) learn it. Both profiles use order 0: within the quick
budget a small transformer learns to pool order-0 evidence over its whole context, but not yet order-1
(bigram) evidence (its KL then grows with position). On one held-out batch x ~ P (fresh data, the same
for every predictor), with the exact Bayes conditionals p(.|x<t) of the mixture:

  kl[t] = mean over x of KL(p(.|x<t) || q(.|x<t)), per position t, for
    q = each trained transformer             (mean and 95% Student-t interval across seeds),
    q = each single author p_a               (commits to author a for the whole document),
    q = the MAP-author predictor             (follows the currently most probable author),
  the last two exact given x (standard error over the held-out sequences). "Best single author" is the
  author with the least total KL. The claim's prediction: the transformer's KL is far below the best
  single author's at every position, and below the MAP author's while the posterior is still uncertain.

  probe R^2 per layer: a linear probe (toymodels.probes, ridge; fitted on a random half of the held-out
  sequences, R^2 on the other half) from each layer's residual stream at position t to the exact author
  posterior pi(a | x<t) (process.posterior, entry t), with the control probe fitted to targets shuffled
  across positions; mean and 95% Student-t interval across seeds.

(d) Hierarchy, exact: for a hierarchical mixture (hierarchical_markov_authors) of distinct sources with
  close authors, E H(source | x_<=t) and E H(author | source, x_<=t) in nats against length t: exact by
  enumeration of V^n for short t (theory.claims.c01_posterior_mixture), and by Monte Carlo over sampled
  documents (mean +- standard error) up to long t. No training is involved.

Randomness: held-out data key(seed, 1), probe splits and shuffles key(seed, 2, s), hierarchy samples key(seed, 3).
Exact quantities in float64 (turns on x64 mode); models train in float32.

    python scripts/experiments/c01_posterior_mixture.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from _common import (
    Args,
    Training,
    key,
    mean_ci,
    model_outputs,
    parse_args,
    probe_scores,
    run_dir,
    seeds_for,
    train_seeds,
    write_record,
)
from theory.claims.c01_posterior_mixture import expected_posterior_entropies
from toymodels.evaluation import compare_conditionals
from toymodels.processes.authors import (
    hierarchical_markov_authors,
    latent_authors,
    map_author_predictor,
    markov_authors,
    single_author_predictor,
)
from toymodels.processes.standard import markov_chain
from toymodels.runs import ModelSize

NAME = "c01_posterior_mixture"


@dataclasses.dataclass(frozen=True)
class Mixture:
    """The trained-on process: K authors of Markov order 0 (i.i.d. tokens) or 1, uniform prior."""

    num_authors: int
    vocab_size: int
    closeness: float  # fraction of the token distribution (order 0) or kernel (order 1) the authors share
    process_seed: int
    order: int = 0  # 0: unigram_authors (below); 1: toymodels' markov_authors

    def __post_init__(self):
        if self.order not in (0, 1):
            raise ValueError(f"order must be 0 (i.i.d. authors) or 1 (first-order Markov authors), got {self.order!r}")


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """(d): hierarchical_markov_authors with distinct sources and close authors, and how it is measured."""

    num_sources: int
    authors_per_source: int
    vocab_size: int
    source_closeness: float  # 0: the sources' kernels are independent draws
    author_closeness: float  # near 1: the authors of one source differ only slightly
    process_seed: int
    enum_length: int  # exact curves for t <= enum_length (enumerates V^enum_length documents)
    mc_length: int  # Monte Carlo curves for t <= mc_length
    num_samples: int  # Monte Carlo documents


@dataclasses.dataclass(frozen=True)
class Grid:
    mixture: Mixture
    training: Training
    num_seeds: int
    heldout: int  # held-out sequences for the KL curves (a random half fits the probes, the rest scores them)
    ridge: float  # probe ridge penalty (toymodels.probes)
    hierarchy: Hierarchy

    def __post_init__(self):
        if self.num_seeds < 1 or self.heldout < 4:
            raise ValueError(f"num_seeds must be >= 1 and heldout >= 4, got {self.num_seeds}, {self.heldout}")


PROFILES = {
    "quick": Grid(mixture=Mixture(num_authors=4, vocab_size=4, closeness=0.3, process_seed=0),
                  training=Training(ModelSize(num_layers=2, d_model=32, num_heads=2), steps=400, batch_size=32, length=32,
                                    learning_rate=1e-2),
                  num_seeds=3, heldout=1000, ridge=1e-3,
                  hierarchy=Hierarchy(num_sources=3, authors_per_source=3, vocab_size=4, source_closeness=0.0,
                                      author_closeness=0.9, process_seed=0, enum_length=7, mc_length=256, num_samples=1000)),
    "full": Grid(mixture=Mixture(num_authors=4, vocab_size=4, closeness=0.3, process_seed=0),
                 training=Training(ModelSize(num_layers=4, d_model=64, num_heads=4), steps=5000, batch_size=256, length=64),
                 num_seeds=8, heldout=8000, ridge=1e-3,
                 hierarchy=Hierarchy(num_sources=3, authors_per_source=3, vocab_size=4, source_closeness=0.0,
                                     author_closeness=0.9, process_seed=0, enum_length=8, mc_length=2048, num_samples=8000)),
}


def unigram_authors(num_authors: int, vocab_size: int, closeness: float, seed: int):
    """K authors who each write i.i.d. tokens from their own distribution (one-state sources), the order-0
    counterpart of markov_authors: with rng = numpy.random.default_rng(seed), draw `shared` ~ Dirichlet(1)
    over V, then own_0, own_1, ...; author a writes from closeness * shared + (1 - closeness) * own_a."""
    rng = np.random.default_rng(seed)
    shared = rng.dirichlet(np.ones(vocab_size))
    rows = [closeness * shared + (1 - closeness) * rng.dirichlet(np.ones(vocab_size)) for _ in range(num_authors)]
    return latent_authors([markov_chain(np.tile(row, (vocab_size, 1)), initial=row) for row in rows],
                          np.full(num_authors, 1 / num_authors))


def mixture_process(m: Mixture):
    build = unigram_authors if m.order == 0 else markov_authors
    return build(m.num_authors, m.vocab_size, m.closeness, m.process_seed)


def hierarchy_process(h: Hierarchy):
    return hierarchical_markov_authors(h.num_sources, h.authors_per_source, h.vocab_size, h.source_closeness,
                                       h.author_closeness, h.process_seed)


# --------------------------------------------------------------------------------------------------
# Per-position KL from Bayes to each predictor
# --------------------------------------------------------------------------------------------------


def kl_to(log_p, tokens, log_q) -> np.ndarray:
    """[N, L]: KL(p(.|x<t) || q(.|x<t)) for every held-out sequence and position."""
    return np.asarray(compare_conditionals(log_p, jnp.asarray(log_q), tokens)["kl"], np.float64)


def curve(kl_NxL: np.ndarray) -> dict:
    """Mean over held-out sequences per position, its standard error, and the per-token mean."""
    return {"kl": kl_NxL.mean(0), "stderr": kl_NxL.std(0, ddof=1) / np.sqrt(kl_NxL.shape[0]),
            "per_token": float(kl_NxL.mean()), "per_token_stderr": float(kl_NxL.mean(1).std(ddof=1) / np.sqrt(kl_NxL.shape[0]))}


def analytic_curves(process, tokens, log_p) -> dict:
    """KL curves of every single author and of the MAP-author predictor; names the best single author."""
    labels = process.latents["author"]
    singles = {label: curve(kl_to(log_p, tokens, single_author_predictor(process, a).log_conditionals(tokens)))
               for a, label in enumerate(labels)}
    best = min(singles, key=lambda label: singles[label]["per_token"])
    return {"single": singles, "best_single": best,
            "map_author": curve(kl_to(log_p, tokens, map_author_predictor(process).log_conditionals(tokens)))}


# --------------------------------------------------------------------------------------------------
# Probes and the hierarchy
# --------------------------------------------------------------------------------------------------


def _entropy(probs: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0), axis=-1)


def hierarchy_curves(h: Hierarchy, sample_key, chunk: int = 1000) -> dict:
    """(d): E H(source | x_<=t) and E H(author | source, x_<=t) (nats) vs t, exact and Monte Carlo (the
    documents are sampled and filtered `chunk` at a time, chunk c with fold_in(sample_key, c))."""
    process = hierarchy_process(h)
    exact = expected_posterior_entropies(process, h.enum_length, ("source", "author"))
    sums = {name: np.zeros((2, h.mc_length + 1)) for name in ("source", "within")}  # sum and sum of squares
    for c, start in enumerate(range(0, h.num_samples, chunk)):
        tokens = process.sample(jax.random.fold_in(sample_key, c), min(chunk, h.num_samples - start), h.mc_length)
        source = _entropy(np.asarray(process.posterior(tokens, "source"), np.float64))  # [M, n + 1]
        within = _entropy(np.asarray(process.posterior(tokens, "author"), np.float64)) - source
        for name, values in (("source", source), ("within", within)):
            sums[name] += [values.sum(0), (values**2).sum(0)]
    m = h.num_samples
    mean = {name: total / m for name, (total, _) in sums.items()}
    stderr = {name: np.sqrt(np.maximum(squares - m * mean[name] ** 2, 0) / (m - 1) / m) for name, (_, squares) in sums.items()}
    return {
        "exact": {"t": np.arange(h.enum_length + 1), "source": exact["source"], "within": exact["author"] - exact["source"],
                  "max_increase_source": float(np.max(np.diff(exact["source"]))),
                  "max_increase_within": float(np.max(np.diff(exact["author"] - exact["source"])))},
        "monte_carlo": {"t": np.arange(h.mc_length + 1), "source": mean["source"], "source_stderr": stderr["source"],
                        "within": mean["within"], "within_stderr": stderr["within"]},
        "prior_entropy": {"source": float(np.log(h.num_sources)), "within": float(np.log(h.authors_per_source))},
        # The "sure of the source, unsure of the author" window: first t at which each curve falls below
        # a fraction of its prior value (None: not within mc_length).
        "first_below": [{"fraction": f, "source": _first_below(mean["source"], f * np.log(h.num_sources)),
                         "within": _first_below(mean["within"], f * np.log(h.authors_per_source))} for f in (0.5, 0.1)],
    }


def _first_below(values: np.ndarray, level: float) -> int | None:
    below = np.flatnonzero(values < level)
    return int(below[0]) if below.size else None


# --------------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------------


def measure(grid: Grid, args: Args) -> dict:
    began = time.perf_counter()
    process = mixture_process(grid.mixture)
    seeds = seeds_for(args.seed, grid.num_seeds)
    info = {"process": {"name": "unigram_authors" if grid.mixture.order == 0 else "markov_authors",
                        "kwargs": dataclasses.asdict(grid.mixture)}}
    trained = train_seeds(process, grid.training, seeds, run_dir(args, NAME, "models"), info)
    print(f"  trained {len(seeds)} seeds in {trained.wall_s:.0f} s", flush=True)

    length = grid.training.length
    tokens = process.sample(key(args, 1), grid.heldout, length)
    log_p = process.log_conditionals(tokens)
    posterior = np.asarray(process.posterior(tokens, "author"), np.float64)[:, :length]  # entry t: given x<t
    analytic = analytic_curves(process, tokens, log_p)

    model_kl, probes = [], []
    for index, predictor in enumerate(trained.predictors):
        log_q, residuals = model_outputs(predictor, tokens)
        model_kl.append(kl_to(log_p, tokens, log_q))
        probes.append(probe_scores(residuals, posterior, key=key(args, 2, index), ridge=grid.ridge)[0])
    per_seed = np.stack([k.mean(0) for k in model_kl])  # [S, L]
    intervals = [mean_ci(per_seed[:, t]) for t in range(length)]
    transformer = {"kl_per_seed": per_seed, "kl": [c["mean"] for c in intervals], "kl_low": [c["low"] for c in intervals],
                   "kl_high": [c["high"] for c in intervals], "per_token": mean_ci(per_seed.mean(1)),
                   "per_token_per_seed": per_seed.mean(1)}
    layers = len(probes[0]["r2"])
    probe_summary = [{"layer": layer, **{name: mean_ci([p[name][layer] for p in probes])
                                         for name in ("r2", "r2_shuffled", "mse", "mse_shuffled", "r2_train")}} for layer in range(layers)]
    print(f"  per-token KL: transformer {transformer['per_token']['mean']:.4f} +- {transformer['per_token']['half_width']:.4f}, "
          f"MAP author {analytic['map_author']['per_token']:.4f}, best single author ({analytic['best_single']}) "
          f"{analytic['single'][analytic['best_single']]['per_token']:.4f} ({time.perf_counter() - began:.0f} s)", flush=True)
    print("  probe R^2 per layer: " + ", ".join(f"{r['r2']['mean']:.3f} (shuffled {r['r2_shuffled']['mean']:.3f})"
                                                 for r in probe_summary), flush=True)

    hierarchy = hierarchy_curves(grid.hierarchy, key(args, 3))
    print(f"  hierarchy: E H(source), E H(author | source) at t = {grid.hierarchy.mc_length}: "
          f"{hierarchy['monte_carlo']['source'][-1]:.4f}, {hierarchy['monte_carlo']['within'][-1]:.4f} "
          f"({time.perf_counter() - began:.0f} s)", flush=True)
    return {"positions": np.arange(length), "transformer": transformer, **analytic,
            "probes": {"per_layer": probe_summary, "per_seed": probes, "target": "author posterior pi(a | x<t)"},
            "hierarchy": hierarchy,
            "training": {"seeds": seeds, "evaluation": trained.evaluation, "wall_s": trained.wall_s}}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact conditionals and posteriors in float64
    return write_record(NAME, "C1", args, {"grid": dataclasses.asdict(grid)}, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
