"""C9: fine-tuning reweights the personas a model already simulates; KL-regularised RL optimises.

Fine-tuning. Base transformers (one per seed) are trained on a stage of three personas with prior
(0.5, 0.3, 0.2); each is fine-tuned on data from personas {1, 2} only. The exact answer is the base
mixture with its prior restricted to the subset, (0, 0.6, 0.4). Measured per step and seed, by
enumeration: F(target || model), the forward KL from that restricted-prior mixture, and F(base || model),
the fine-tuned model's distance from the mixture it was trained on first.

RL. A base transformer is trained on a 3-token Markov chain in which token 0 rarely follows itself;
REINFORCE with a leave-one-out baseline and a KL penalty beta to the base optimises the proxy reward
"share of token 0", while the true reward peaks at `cap` occurrences (more is a hack). The exact answer
is pi*(x) proportional to pi_base(x) exp(r(x) / beta), a TableProcess over all V^L sequences. Measured per
step, beta and seed: KL(pi_theta || pi*) exactly; at the end, the policy's exact hack rate and true
reward against pi*'s, as beta falls.

Across seeds: mean and 95% Student-t interval.

    python scripts/experiments/c09_reweighting.py --profile quick --out results
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import numpy as np

from _common import Args, Training, mean_ci, parse_args, run_dir, seeds_for, train_seeds, write_record
from toymodels.evaluation import EvalConfig
from toymodels.finetune import exact_kls, finetune, kl_curves, restricted_process
from toymodels.optimizer import OptimizerConfig
from toymodels.processes import make_process
from toymodels.rl import CappedTokenCount, RLConfig, TokenCount, reinforce
from toymodels.runs import ModelSize
from toymodels.training import TrainConfig

NAME = "c09_reweighting"
STAGE = {"num_personas": 3, "vocab_size": 3, "turn_length": 2, "closeness": 0.0, "seed": 1, "prior": [0.5, 0.3, 0.2]}
SUBSET = (1, 2)
CHAIN = [[0.05, 0.6, 0.35], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3]]  # token 0 rarely follows itself


@dataclasses.dataclass(frozen=True)
class Grid:
    num_seeds: int
    stage_training: Training
    finetune_steps: int
    kl_length: int  # exact KLs over this many tokens (enumeration of 3^kl_length sequences)
    kl_every: int
    chain_training: Training
    rl_steps: int
    rl_batch: int
    rl_length: int
    betas: tuple[float, ...]
    cap: int


PROFILES = {
    "quick": Grid(num_seeds=3, finetune_steps=200, kl_length=6, kl_every=25, rl_steps=300, rl_batch=128, rl_length=4,
                  stage_training=Training(ModelSize(num_layers=2, d_model=32, num_heads=2), steps=300, batch_size=128,
                                          length=6, learning_rate=1e-2),
                  chain_training=Training(ModelSize(num_layers=1, d_model=16, num_heads=2), steps=200, batch_size=64,
                                          length=4, learning_rate=1e-2),
                  betas=(0.03, 0.1, 0.3, 1.0), cap=2),
    "full": Grid(num_seeds=8, finetune_steps=600, kl_length=8, kl_every=25, rl_steps=1500, rl_batch=512, rl_length=6,
                 stage_training=Training(ModelSize(num_layers=2, d_model=64, num_heads=4), steps=2000, batch_size=256,
                                         length=8, learning_rate=3e-3),
                 chain_training=Training(ModelSize(num_layers=2, d_model=32, num_heads=2), steps=1000, batch_size=256,
                                         length=6, learning_rate=3e-3),
                 betas=(0.01, 0.03, 0.1, 0.3, 1.0), cap=3),
}


def measure_finetuning(grid: Grid, args: Args) -> dict:
    process = make_process("random_persona_stage", **STAGE)
    target = restricted_process("random_persona_stage", STAGE, SUBSET)
    seeds = seeds_for(args.seed, grid.num_seeds)
    info = {"process": {"name": "random_persona_stage", "kwargs": STAGE}}
    base = train_seeds(process, grid.stage_training, seeds, run_dir(args, NAME, "stage-base"), info)
    config = TrainConfig(steps=grid.finetune_steps, batch_size=grid.stage_training.batch_size,
                         sequence_length=grid.stage_training.length, num_devices=1, evaluation=EvalConfig(final=False),
                         optimizer=OptimizerConfig(learning_rate=3e-3, warmup_fraction=0.0), log_every=grid.finetune_steps)
    curves = {"target": [], "base": []}
    for s, (seed, predictor) in enumerate(zip(seeds, base.predictors)):
        result = finetune(target, predictor, dataclasses.replace(config, seeds=(seed,)),
                          references={"target": target, "base": process}, kl_length=grid.kl_length, kl_every=grid.kl_every)
        for name in curves:
            steps, values = kl_curves(result.kl, name)
            curves[name].append(values[:, 0])
        print(f"  fine-tuning seed {seed}: F(target || model) {curves['target'][-1][0]:.4f} -> {curves['target'][-1][-1]:.4f}",
              flush=True)
    return {"steps": steps, "kl_to_target": np.stack(curves["target"]), "kl_to_base": np.stack(curves["base"]),
            "final": {"kl_to_target": mean_ci(np.stack(curves["target"])[:, -1]),
                      "kl_to_base": mean_ci(np.stack(curves["base"])[:, -1])},
            "bayes_gap": exact_kls({"target": target}, process, grid.kl_length)["target"],
            "subset": SUBSET, "stage": STAGE, "seeds": seeds}


def measure_rl(grid: Grid, args: Args) -> dict:
    process = make_process("markov_chain", transition=np.asarray(CHAIN))
    seeds = seeds_for(args.seed, grid.num_seeds)
    info = {"process": {"name": "markov_chain", "kwargs": {"transition": CHAIN}}}
    base = train_seeds(process, grid.chain_training, seeds[:1], run_dir(args, NAME, "chain-base"), info).predictors[0]
    proxy, true = TokenCount(0), CappedTokenCount(0, grid.cap)
    config = RLConfig(steps=grid.rl_steps, batch_size=grid.rl_batch, sequence_length=grid.rl_length, seeds=seeds,
                      betas=grid.betas, eval_every=max(1, grid.rl_steps // 6),
                      optimizer=OptimizerConfig(learning_rate=3e-3, schedule="cosine", warmup_fraction=0.0,
                                                final_fraction=0.05, weight_decay=0.0))
    # Checkpointed beside the base run, so a killed reproduce resumes REINFORCE too.
    result = reinforce(base, proxy, config, true_reward=true, hack=true.over_cap,
                       log_every=max(1, grid.rl_steps // 10), out_dir=run_dir(args, NAME, "rl"),
                       checkpoint_every=config.eval_every)
    slots = config.slots
    per_beta = []
    for b, beta in enumerate(grid.betas):
        index = [i for i, (_, slot_beta) in enumerate(slots) if slot_beta == beta]
        kl = np.array([[r["kl_to_optimum"][i] for i in index] for r in result.exact]).T  # [seeds, evaluations]
        final = result.exact[-1]
        per_beta.append({
            "beta": beta, "kl_to_optimum": kl, "final_kl": mean_ci(kl[:, -1]),
            "hack_rate": mean_ci([final["hack_rate"][i] for i in index]),
            "true_reward": mean_ci([final["true_reward"][i] for i in index]),
            "proxy_reward": mean_ci([final["proxy_reward"][i] for i in index]),
            "optimum": result.optimum[b],
        })
        print(f"  RL beta={beta:g}: KL to optimum {kl[:, 0].mean():.4f} -> {kl[:, -1].mean():.5f}; hack rate "
              f"{per_beta[-1]['hack_rate']['mean']:.3f} (optimum {result.optimum[b]['hack_rate']:.3f})", flush=True)
    base_summary = result.exact[0]
    return {"steps": [r["step"] for r in result.exact], "betas": per_beta, "chain": CHAIN, "cap": grid.cap,
            "base_hack_rate": base_summary["hack_rate"][0], "base_true_reward": base_summary["true_reward"][0]}


def main(args: Args, grid: Grid | None = None):
    began = time.perf_counter()
    grid = PROFILES[args.profile] if grid is None else grid
    print(f"{NAME}: profile {args.profile}, seed {args.seed}", flush=True)
    jax.config.update("jax_enable_x64", True)  # exact enumerations in float64
    measured = {"finetuning": measure_finetuning(grid, args), "rl": measure_rl(grid, args)}
    return write_record(NAME, "C9", args, {"grid": json.loads(json.dumps(dataclasses.asdict(grid)))}, measured, began)


if __name__ == "__main__":
    main(parse_args(__doc__))
