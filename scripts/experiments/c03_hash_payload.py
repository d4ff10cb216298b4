"""C3: can a trained model check a hash that it cannot produce? (hash-then-payload, learned models)

Data: hash_then_payload (toymodels/processes/hashing.py): a hash h = H(y) in V^k, then its payload y,
uniform on V^m, then end-of-document tokens. Per hash setting (a structured "modular" hash, cheap to
check digit by digit but a system of equations to invert, and a "balanced" random table) transformers
are trained with several seeds at once. Per seed we measure, always against the exact process:

  (i)   generation: the fraction of the model's own generations of length k + m + 1 that the data can
        produce (P(x) > 0): 1 - generation_kl(...).off_support_fraction, Monte Carlo, with its s.e.
        Exact references: V^-k = sum_h p(h)^2 for the non-inverting predictor Q0 (it copies the hash
        marginal and never inverts H), 1 for exact Bayes, and the lower bound exp(-F) that any
        predictor with forward KL F obeys (Q(supp P) >= exp(-F)).
  (ii)  verification: held-out data sequences (consistent) against the same sequences with one hash or
        payload digit changed so that P(x) = 0 (checked with process.log_prob). Three scores, each an
        AUC and a held-out accuracy (threshold or probe fitted on one half, tested on the other):
          tail      log q(first end-of-document token | hash and payload): does the model's behaviour
                    after the payload react to an inconsistency? (training never shows one)
          head LLR  log q(head) - log Q0(head): the model's own likelihood as a verifier
          probe     a linear (ridge) probe on the residual stream at the tail position, per layer; the
                    headline layer is the one with the best AUC on the fit half
  (iii) forward KL F (Monte Carlo, chain rule, per position) against the exact floor H(h) of Q0.

The verifier-generator gap is (ii) against (i). Q0 itself is measured with the same code, as a check
of the estimators (its consistent fraction must be V^-k, its F must be H(h), its head LLR AUC 0.5).
Across seeds: mean and 95% Student-t interval (_common.mean_ci).

    python scripts/experiments/c03_hash_payload.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from _common import Args, Training, key, mean_ci, parse_args, run_dir, seeds_for, train_seeds, write_record
from theory.divergence import forward_kl, generation_kl
from toymodels.predictors import token_log_probs
from toymodels.probes import fit_probe
from toymodels.processes import hash_then_payload, non_inverting_predictor
from toymodels.runs import ModelSize

NAME = "c03_hash_payload"
RIDGE = 1e-2  # probe penalty, relative to the activations' scale (see ridge_probe)


@dataclasses.dataclass(frozen=True)
class HashSetting:
    hash: str  # "modular", "balanced" or "mix" (toymodels/processes/hash_functions.py)
    vocab_size: int  # V
    payload_length: int  # m
    hash_length: int  # k
    seed: int = 0  # draws the hash's table or coefficients

    @property
    def tag(self) -> str:
        return f"{self.hash}-V{self.vocab_size}-k{self.hash_length}-m{self.payload_length}-s{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.hash} V={self.vocab_size} k={self.hash_length} m={self.payload_length}"

    def process(self):
        return hash_then_payload(self.vocab_size, self.payload_length, self.hash_length, hash=self.hash, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class Grid:
    hashes: tuple[HashSetting, ...]
    training: Training  # its length must exceed k + m (the model also learns the tail)
    num_seeds: int
    num_generations: int  # Monte Carlo sequences per seed for (i) and (iii)
    num_verify: int  # data sequences for (ii) (each with one corrupted copy); half fit, half test

    def __post_init__(self):
        for setting in self.hashes:
            if self.training.length <= setting.hash_length + setting.payload_length:
                raise ValueError(f"training.length must exceed k + m = {setting.hash_length + setting.payload_length}")
        if self.num_seeds < 1 or self.num_generations < 2 or self.num_verify < 8:
            raise ValueError("num_seeds >= 1, num_generations >= 2 and num_verify >= 8 are needed")


PROFILES = {
    "quick": Grid(hashes=(HashSetting("modular", 3, 6, 2), HashSetting("balanced", 3, 6, 2)),
                  training=Training(ModelSize(num_layers=2, d_model=64, num_heads=4), steps=500, batch_size=128, length=9),
                  num_seeds=3, num_generations=2000, num_verify=1000),
    # The quick settings again, then harder ones: a cubic hash mod 5, a bigger table, and a mixer.
    "full": Grid(hashes=(HashSetting("modular", 3, 6, 2), HashSetting("balanced", 3, 6, 2), HashSetting("modular", 5, 8, 2),
                         HashSetting("balanced", 3, 8, 2), HashSetting("mix", 3, 10, 2)),
                 training=Training(ModelSize(num_layers=4, d_model=128, num_heads=4), steps=20000, batch_size=256,
                                   length=14, learning_rate=1e-3),
                 num_seeds=8, num_generations=50000, num_verify=20000),
}


# ---- exact references -------------------------------------------------------------------------------


def exact_references(process) -> dict:
    """H(h) (= F of Q0) and sum_h p(h)^2 (= Q0's consistent fraction), from the exact hash marginal."""
    p = np.asarray(process.hash_marginal(), np.float64)
    positive = p[p > 0]
    return {"hash_entropy": float(-(positive * np.log(positive)).sum()), "q0_consistent": float((p**2).sum()),
            "v_minus_k": float(process.alphabet ** -process.hash_length), "balanced": process.is_balanced}


# ---- (ii) verification data and scores ---------------------------------------------------------------


def corrupted_pairs(process, length: int, count: int, rng_key) -> dict:
    """`count` data sequences and, for each, a copy with one hash or payload digit changed (uniform
    position, uniform other value); pairs whose copy is still consistent are dropped (exact log_prob)."""
    k_data, k_pos, k_val = jax.random.split(rng_key, 3)
    clean = np.asarray(process.sample(k_data, count, length))
    head, alphabet = process.head_length, process.alphabet
    position = np.asarray(jax.random.randint(k_pos, (count,), 0, head))
    shift = np.asarray(jax.random.randint(k_val, (count,), 1, alphabet))
    dirty = clean.copy()
    rows = np.arange(count)
    dirty[rows, position] = (clean[rows, position] + shift) % alphabet
    inconsistent = np.isneginf(np.asarray(process.log_prob(jnp.asarray(dirty))))
    return {"clean": clean[inconsistent], "dirty": dirty[inconsistent], "position": position[inconsistent],
            "kept_fraction": float(inconsistent.mean())}


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a consistent sequence > score of an inconsistent one), ties counted 1/2 (Mann-Whitney)."""
    ranks = stats.rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_accuracy(fit_pos, fit_neg, test_pos, test_neg) -> float:
    """Held-out balanced accuracy of 'consistent iff score > c', with c the cut between distinct fit-half
    scores (or beyond them) of the best balanced accuracy on the fit half (the first such cut)."""
    values = np.unique(np.concatenate([fit_pos, fit_neg]))
    cuts = np.concatenate([[values[0] - 1], (values[:-1] + values[1:]) / 2, [values[-1] + 1]])
    above_pos = 1 - np.searchsorted(np.sort(fit_pos), cuts, side="right") / len(fit_pos)
    below_neg = np.searchsorted(np.sort(fit_neg), cuts, side="right") / len(fit_neg)
    cut = cuts[int(np.argmax(above_pos + below_neg))]
    return float(0.5 * (np.mean(test_pos > cut) + np.mean(test_neg <= cut)))


def ridge_probe(fit_pos, fit_neg, test_pos, test_neg) -> dict:
    """AUC and accuracy on the test half (and AUC on the fit half) of a ridge probe (toymodels.probes) from activations [N, D] to
    labels +1 (consistent) / -1; the penalty is RIDGE times the mean squared centred activation per
    feature times N, so it does not depend on the scale of the residual stream."""
    x = np.concatenate([fit_pos, fit_neg]).astype(np.float32)  # the probe's SVD fit is accurate in float32
    y = np.concatenate([np.ones(len(fit_pos)), -np.ones(len(fit_neg))]).astype(np.float32)[:, None]
    ridge = RIDGE * float(np.sum((x - x.mean(axis=0)) ** 2)) / x.shape[1]
    probe = fit_probe(x, y, ridge=ridge)
    def score(a):
        return np.asarray(probe.predict(np.asarray(a, np.float32)), np.float64)[:, 0]

    s_pos, s_neg = score(test_pos), score(test_neg)
    return {"auc": auc(s_pos, s_neg), "accuracy": float(0.5 * (np.mean(s_pos > 0) + np.mean(s_neg <= 0))),
            "fit_auc": auc(score(fit_pos), score(fit_neg))}


@partial(jax.jit, static_argnames=("head", "eod"))
def _model_scores(model, q0, tokens, head: int, eod: int):
    """Per sequence: the tail score, the head LLR against Q0, and the residuals at the tail position."""
    log_q, residuals = model.outputs(tokens)
    log_q0 = q0.log_conditionals(tokens)
    llr = (token_log_probs(log_q, tokens) - token_log_probs(log_q0, tokens).astype(jnp.float32))[:, :head].sum(axis=1)
    return log_q[:, head, eod], llr, jnp.moveaxis(residuals[:, :, head], 0, 1)  # [B, layers + 1, D]


def verification(process, predictor, pairs: dict) -> dict:
    """(ii) for one predictor: AUC and held-out accuracy of each score; probe per layer."""
    q0 = non_inverting_predictor(process)
    head, eod = process.head_length, process.info["eod_token"]
    scores = {}
    for side in ("clean", "dirty"):
        tail, llr, residual = _model_scores(predictor, q0, jnp.asarray(pairs[side]), head, eod)
        scores[side] = {"tail": np.asarray(tail, np.float64), "head_llr": np.asarray(llr, np.float64),
                        "residual": np.asarray(residual)}
    n = len(pairs["clean"])
    fit, test = np.arange(n) < n // 2, np.arange(n) >= n // 2
    out = {}
    for name in ("tail", "head_llr"):
        pos, neg = scores["clean"][name], scores["dirty"][name]
        out[name] = {"auc": auc(pos[test], neg[test]),
                     "accuracy": threshold_accuracy(pos[fit], neg[fit], pos[test], neg[test]),
                     "auc_hash_corrupted": auc(pos[test], neg[test & (pairs["position"] < process.hash_length)]),
                     "auc_payload_corrupted": auc(pos[test], neg[test & (pairs["position"] >= process.hash_length)])}
    layers = []
    for layer in range(scores["clean"]["residual"].shape[1]):
        pos, neg = scores["clean"]["residual"][:, layer], scores["dirty"]["residual"][:, layer]
        layers.append({"layer": layer, **ridge_probe(pos[fit], neg[fit], pos[test], neg[test])})
    out["probe_layers"] = layers
    out["probe"] = max(layers, key=lambda r: r["fit_auc"])  # chosen on the fit half: its test AUC is unbiased
    return out


# ---- (i) and (iii) ---------------------------------------------------------------------------------


def generation_and_loss(process, predictor, length: int, num: int, rng_key) -> dict:
    """(i) consistent fraction of generations and (iii) forward KL, both Monte Carlo with s.e."""
    generated = generation_kl(process, predictor, length, "monte_carlo", key=jax.random.fold_in(rng_key, 0), num_samples=num)
    forward = forward_kl(process, predictor, length, "monte_carlo", key=jax.random.fold_in(rng_key, 1), num_samples=num)
    return {"consistent": 1.0 - generated.off_support_fraction, "consistent_stderr": generated.off_support_stderr,
            "forward_kl": forward.value, "forward_kl_stderr": forward.stderr, "forward_kl_per_position": forward.per_position,
            "exp_minus_forward_kl": math.exp(-forward.value)}


def measure_setting(setting: HashSetting, grid: Grid, args: Args, index: int) -> dict:
    process = setting.process()
    length = setting.hash_length + setting.payload_length + 1
    seeds = seeds_for(args.seed, grid.num_seeds)
    info = {"process": {"name": "hash_then_payload", "kwargs": dataclasses.asdict(setting)}}
    trained = train_seeds(process, grid.training, seeds, run_dir(args, NAME, setting.tag), info)
    pairs = corrupted_pairs(process, length, grid.num_verify, key(args, index, 0))
    q0 = non_inverting_predictor(process)
    # Q0's verification scores need no measuring: its head LLR is 0 and its tail prediction ignores the
    # head, so both AUCs are exactly 1/2 (and it has no residual stream to probe).
    reference = generation_and_loss(process, q0, length, grid.num_generations, key(args, index, 1))
    models = []
    for s, predictor in enumerate(trained.predictors):
        row = generation_and_loss(process, predictor, length, grid.num_generations, key(args, index, 2 + s))
        row["verification"] = verification(process, predictor, pairs)
        models.append(row)
    summary = {name: mean_ci([r[name] for r in models]) for name in ("consistent", "forward_kl", "exp_minus_forward_kl")}
    for score in ("tail", "head_llr", "probe"):
        for stat in ("auc", "accuracy"):
            summary[f"{score}_{stat}"] = mean_ci([r["verification"][score][stat] for r in models])
    exact = exact_references(process)
    print(f"  {setting.label}: consistent {summary['consistent']['mean']:.3f} (Q0 {exact['q0_consistent']:.3f}),"
          f" F {summary['forward_kl']['mean']:.3f} (H(h) {exact['hash_entropy']:.3f}), AUC head LLR"
          f" {summary['head_llr_auc']['mean']:.3f}, tail {summary['tail_auc']['mean']:.3f},"
          f" probe {summary['probe_auc']['mean']:.3f}", flush=True)
    return {"setting": dataclasses.asdict(setting), "label": setting.label, "length": length, "exact": exact,
            "q0": reference, "models": models, "summary": summary, "seeds": seeds,
            "pairs": {"count": len(pairs["clean"]), "kept_fraction": pairs["kept_fraction"]},
            "training": {"evaluation": trained.evaluation, "wall_s": trained.wall_s}}


def measure(grid: Grid, args: Args) -> dict:
    return {"settings": [measure_setting(setting, grid, args, i) for i, setting in enumerate(grid.hashes)]}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    return write_record(NAME, "C3", args, {"grid": dataclasses.asdict(grid)}, measure(grid, args), began)


if __name__ == "__main__":
    main(parse_args(__doc__))
