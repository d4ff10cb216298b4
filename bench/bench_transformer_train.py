"""Transformer training throughput beside PyTorch on the CPU (and seed scaling on an accelerator).

Workloads (`--workload`): "issue" (default), the size the training-engine targets are stated for:
vocabulary 16 (+ BOS; data from a random 16-symbol HMM), context 64, d_model 64, 2 layers, 4 heads of
width 16, MLP width 256, batch 64, 16 seeds; "mess3", the C13 model: vocabulary 3, context 10, 4
layers, one head of width 8, batch 64, 8 seeds. Each is a pre-norm decoder-only transformer with
learned positions trained with AdamW (lr 1e-3 constant, betas 0.9/0.999, eps 1e-8, weight decay
0.01 on matrices only) after global-norm clipping at 1, mean next-token cross-entropy. The PyTorch model below is the
same architecture op for op (fused QKV, tanh GELU, LayerNorm eps 1e-5, scaled_dot_product_attention
with a causal mask); it is loaded with our initial parameters, and the run first checks that both
give the same logits and the same losses over a few AdamW steps on one batch.

Contenders, alternated within each timing round (this VM's load drifts):
  toymodels engine        training.compiled_step as scripts/train.py runs it: one JAX CPU device per
                          core (toymodels/host.py), the batch split over them, each step drawing
                          its own batch on device
  toymodels train_step    the pure jitted step on a given batch (what PyTorch is given), one device
  PyTorch eager           one model and its torch.optim.AdamW (fused when the build has it) on a given batch,
                          with PyTorch's default threads and with 1 thread (on a small, shared CPU its
                          multi-threaded eager mode can be several times slower); ratios use the faster
  toymodels engine, N     N seeds trained by one program (the engine's way to run seeds), split over
                          the CPU devices
  PyTorch, N sequential   N separate PyTorch models stepped one after another (both thread settings)

Utilisation: model FLOPs per step (3x the forward pass: every matmul of the blocks and the unembedding,
plus the attention score and value products over all L x L pairs, as both sides compute them) divided
by the step time, as a fraction of a float32 matmul (2048 x 2048 on a CPU) timed in the same run.

On an accelerator (or with --mode scaling) the run instead measures the sweep target there: one program
of --sweep-seeds seeds (default 64) against one model, tokens/s and FLOP utilisation of each (by default
with bfloat16 activations, and on an NVIDIA GPU the fused attention kernel, attention="pallas").

PyTorch is a benchmark-only dependency (`pip install -e '.[bench]'`); without it this prints a
message and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import jax
import numpy as np

from timing import best_times, matmul_gflops, paired_ratio, round_times

from toymodels.host import split_host_cpu
from toymodels.optimizer import OptimizerConfig, make_optimizer
from toymodels.processes import mess3, random_hmm
from toymodels.sharding import make_mesh, replicated
from toymodels.training import TrainConfig, compiled_step, init_state, init_states, train_step
from toymodels.transformer import ATTENTION, TransformerConfig, apply, graphdef_for

OPTIMIZER = OptimizerConfig(learning_rate=1e-3, schedule="constant", warmup_fraction=0.0)


def torch_model(torch, config: TransformerConfig):
    """The PyTorch twin of toymodels.transformer.Transformer (learned positions, no myopic mode)."""
    nn, functional = torch.nn, torch.nn.functional
    d, h, k, m = config.d_model, config.num_heads, config.head_dim, config.mlp_width

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_attn, self.ln_mlp = nn.LayerNorm(d, eps=config.layer_norm_eps), nn.LayerNorm(d, eps=config.layer_norm_eps)
            self.qkv, self.out = nn.Linear(d, 3 * h * k), nn.Linear(h * k, d)
            self.fc_in, self.fc_out = nn.Linear(d, m), nn.Linear(m, d)

        def forward(self, x):
            b, length, _ = x.shape
            q, key, v = self.qkv(self.ln_attn(x)).view(b, length, 3, h, k).unbind(2)  # the same (3, H, K) split
            attended = functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, key, v)), is_causal=True)
            x = x + self.out(attended.transpose(1, 2).reshape(b, length, h * k))
            return x + self.fc_out(functional.gelu(self.fc_in(self.ln_mlp(x)), approximate="tanh"))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(config.vocab_size + 1, d)
            self.position = nn.Parameter(torch.zeros(config.context, d))
            self.blocks = nn.ModuleList([Block() for _ in range(config.num_layers)])
            self.ln_final, self.unembed = nn.LayerNorm(d, eps=config.layer_norm_eps), nn.Linear(d, config.vocab_size)

        def forward(self, tokens):
            bos = torch.full_like(tokens[:, :1], config.vocab_size)
            x = self.embedding(torch.cat([bos, tokens[:, :-1]], dim=1)) + self.position[: tokens.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.unembed(self.ln_final(x))

    return Model()


def load_params(torch, model, params) -> None:
    """Copy toymodels parameters into the PyTorch twin (nnx kernels are [in, out], torch weights [out, in])."""
    p = jax.tree.map(lambda x: torch.tensor(np.asarray(x), dtype=torch.float32), params.to_pure_dict())

    def linear(module, q):
        module.weight.copy_(q["kernel"].T)
        module.bias.copy_(q["bias"])

    def norm(module, q):
        module.weight.copy_(q["scale"])
        module.bias.copy_(q["bias"])

    with torch.no_grad():
        model.embedding.weight.copy_(p["embedding"]["embedding"])
        model.position.copy_(p["position_embedding"])
        for index, block in enumerate(model.blocks):
            q = p["blocks"][index]
            norm(block.ln_attn, q["ln_attn"])
            norm(block.ln_mlp, q["ln_mlp"])
            linear(block.qkv, q["attn"]["qkv"])
            linear(block.out, q["attn"]["out"])
            linear(block.fc_in, q["fc_in"])
            linear(block.fc_out, q["fc_out"])
        norm(model.ln_final, p["ln_final"])
        linear(model.unembed, p["unembed"])


def torch_trainer(torch, config: TransformerConfig, params, tokens):
    """(step, model): one AdamW step of a PyTorch twin started from `params` on the fixed batch `tokens`."""
    model = torch_model(torch, config)
    load_params(torch, model, params)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": OPTIMIZER.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    kwargs = dict(lr=OPTIMIZER.learning_rate, betas=(OPTIMIZER.b1, OPTIMIZER.b2), eps=OPTIMIZER.eps)
    try:
        optimizer = torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(groups, **kwargs)
    batch = torch.from_numpy(np.array(tokens, dtype=np.int64))
    flat_targets = batch.reshape(-1)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(batch).reshape(-1, config.vocab_size), flat_targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIMIZER.grad_clip)
        optimizer.step()
        return loss

    return step, model


def check_equivalence(torch, config: TransformerConfig, tokens, steps: int = 5) -> tuple[float, float]:
    """(max |logit difference| at initialisation, max relative loss difference over `steps` AdamW steps)."""
    optimizer = make_optimizer(OPTIMIZER, 1000)
    state = init_state(config, optimizer, 0, OPTIMIZER.learning_rate)
    step_ours = jax.jit(partial(train_step, graphdef=graphdef_for(config), optimizer=optimizer))
    step_theirs, model = torch_trainer(torch, config, state.params, tokens)
    with torch.no_grad():
        logits_theirs = model(torch.from_numpy(np.array(tokens, dtype=np.int64))).numpy()
    logits_ours = np.asarray(apply(graphdef_for(config), state.params, tokens))
    losses = []
    for _ in range(steps):
        state, metrics = step_ours(state, tokens)
        losses.append((float(metrics["loss"]), step_theirs().item()))
    ours, theirs = np.array(losses).T
    return float(np.abs(logits_ours - logits_theirs).max()), float(np.max(np.abs(ours - theirs) / ours))


WORKLOADS = {
    "issue": dict(process=lambda: random_hmm(16, 8, seed=0), layers=2, d_model=64, heads=4, head_dim=16, mlp=256,
                  batch=64, length=64, seeds=16),
    "mess3": dict(process=lambda: mess3(0.05, 0.85), layers=4, d_model=64, heads=1, head_dim=8, mlp=256,
                  batch=64, length=10, seeds=8),
}


def model_config(process, sizes: dict, **fields) -> TransformerConfig:
    """The benchmark's transformer for `process` with a workload's sizes (WORKLOADS' keys)."""
    return TransformerConfig(vocab_size=process.vocab_size, context=sizes["length"], num_layers=sizes["layers"],
                             d_model=sizes["d_model"], num_heads=sizes["heads"], head_dim=sizes["head_dim"],
                             mlp_width=sizes["mlp"], **fields)


def device_defaults(dtype: str | None, attention: str | None) -> tuple[str, str]:
    """(dtype, attention) with each None replaced by what the README recommends for sweeps on this
    device: bfloat16 on an accelerator (float32 on a CPU), the fused kernel on an NVIDIA GPU."""
    backend = jax.default_backend()
    return dtype or ("float32" if backend == "cpu" else "bfloat16"), attention or (
        "pallas" if backend == "gpu" else "einsum")


def model_flops_per_step(config: TransformerConfig, batch: int, length: int) -> float:
    """3x the forward FLOPs of one step: the block and unembedding matmuls, and the attention score and
    value products over all L x L (query, key) pairs, as both frameworks compute them."""
    d, hk, m = config.d_model, config.num_heads * config.head_dim, config.mlp_width
    per_token = config.num_layers * 2 * (d * 3 * hk + hk * d + 2 * d * m) + 2 * d * config.vocab_size
    attention = config.num_layers * 2 * 2 * hk * length * length
    return 3.0 * batch * (length * per_token + attention)


def engine_runner(config: TransformerConfig, process, num_seeds: int, batch: int, length: int, steps: int):
    """A closure running `steps` engine steps of `num_seeds` seeds on every device, as training.train
    does by default (state kept across calls)."""
    train = TrainConfig(steps=10**6, batch_size=batch, sequence_length=length, seeds=tuple(range(num_seeds)),
                        optimizer=OPTIMIZER)
    mesh = make_mesh(num_seeds, batch)
    holder = [init_states(config, train, mesh)]
    step, on_mesh = compiled_step(config, train, mesh), jax.device_put(jax.tree.map(np.asarray, process), replicated(mesh))

    def run():
        for _ in range(steps):
            holder[0], metrics = step(holder[0], on_mesh)
        jax.block_until_ready(metrics)

    return run


def seed_scaling(args, process, config: TransformerConfig) -> None:
    """The accelerator target: one program of `args.sweep_seeds` seeds against one model, in tokens/s,
    with the FLOP utilisation of each against a float32 matmul timed on the same device."""
    many = args.sweep_seeds
    contenders = {"toymodels engine, 1 model": engine_runner(config, process, 1, args.batch, args.length, args.steps),
                  f"toymodels engine, {many} seeds": engine_runner(config, process, many, args.batch, args.length,
                                                                   args.steps)}
    times = best_times(contenders, args.repeats, pause=0.1)
    matmul = matmul_gflops(args.repeats * 3, size=args.matmul_size)
    flops = model_flops_per_step(config, args.batch, args.length)
    device = jax.devices()[0]
    print(f"seed scaling on {jax.device_count()} x {device.device_kind} ({device.platform}): {config.num_layers} layers, "
          f"d_model {config.d_model}, {config.num_heads} heads of width {config.head_dim}; batch {args.batch} x "
          f"{args.length} tokens per model, {config.dtype} activations, {config.attention} attention; model FLOPs per step {flops / 1e9:.3f} G; "
          f"float32 {args.matmul_size}^2 matmul {matmul:.1f} GFLOP/s")
    rate = {}
    for name, seconds in times.items():
        models = many if name.endswith("seeds") else 1
        rate[name] = models * args.steps / seconds
        gflops = rate[name] * flops / 1e9
        print(f"{name:40s} {rate[name] * args.batch * args.length:12.0f} tokens/s {gflops:9.1f} GFLOP/s "
              f"{gflops / matmul:6.3f} of matmul")
    ratio = rate[f"toymodels engine, {many} seeds"] / rate["toymodels engine, 1 model"]
    print(f"ratio {many} seeds in one program / one model (tokens/s): {ratio:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="issue")
    for name in ("layers", "d-model", "heads", "head-dim", "mlp", "batch", "length", "seeds"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the workload's value")
    parser.add_argument("--steps", type=int, default=10, help="train steps per timed call")
    parser.add_argument("--repeats", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--mode", choices=("auto", "peer", "scaling"), default="auto",
                        help="peer: against PyTorch on the CPU; scaling: many seeds vs one model (the accelerator "
                             "target); auto: peer on a CPU, scaling on an accelerator")
    parser.add_argument("--sweep-seeds", type=int, default=64, help="seeds in one program for --mode scaling")
    parser.add_argument("--dtype", default=None, help="activation dtype of the model (other than float32: --mode "
                        "scaling only); parameters stay float32. Default: bfloat16 on an accelerator, float32 on a CPU")
    parser.add_argument("--attention", default=None, choices=ATTENTION,
                        help="the model's attention implementation (TransformerConfig.attention; cudnn and pallas: "
                             "NVIDIA GPU). Default: pallas on an NVIDIA GPU, einsum elsewhere")
    parser.add_argument("--matmul-size", type=int, default=None, help="reference matmul size (default 2048 on a "
                        "CPU, 8192 on an accelerator)")
    args = parser.parse_args()
    split_host_cpu()  # as the training scripts do: one JAX CPU device per core
    for name, value in WORKLOADS[args.workload].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    on_cpu = jax.default_backend() == "cpu"
    if args.matmul_size is None:
        args.matmul_size = 2048 if on_cpu else 8192
    args.dtype, args.attention = device_defaults(args.dtype, args.attention)
    process = args.process()
    config = model_config(process, vars(args), dtype=args.dtype, attention=args.attention)
    if args.mode == "scaling" or (args.mode == "auto" and not on_cpu):
        seed_scaling(args, process, config)
        return
    if config.dtype != "float32":
        parser.error("--dtype other than float32 needs --mode scaling: the PyTorch peer trains in float32")
    try:
        import torch
    except ImportError:
        print("bench_transformer_train: skipped, PyTorch is not installed (pip install -e '.[bench]')")
        return

    tokens = process.sample(jax.random.key(0), args.batch, args.length)
    logit_gap, loss_gap = check_equivalence(torch, config, tokens)

    def engine(num_seeds: int):
        return engine_runner(config, process, num_seeds, args.batch, args.length, args.steps)

    optimizer = make_optimizer(OPTIMIZER, 10**6)
    pure = jax.jit(partial(train_step, graphdef=graphdef_for(config), optimizer=optimizer), donate_argnums=0)
    pure_state = [init_state(config, optimizer, 0, OPTIMIZER.learning_rate)]

    def ours_given_batch():
        for _ in range(args.steps):
            pure_state[0], metrics = pure(pure_state[0], tokens)
        jax.block_until_ready(metrics)

    init = jax.jit(partial(init_state, config, optimizer))
    torch_steps = [torch_trainer(torch, config, init(seed, OPTIMIZER.learning_rate).params, tokens)[0] for seed in range(args.seeds)]

    threads = torch.get_num_threads()

    def torch_run(steps, num_threads: int):
        def run():
            torch.set_num_threads(num_threads)
            try:
                for _ in range(args.steps):
                    for step in steps:
                        step()
            finally:
                torch.set_num_threads(threads)

        return run

    seeds = args.seeds
    one, many = f"PyTorch eager ({threads} threads)", f"PyTorch, {seeds} sequential ({threads} threads)"
    one_1, many_1 = "PyTorch eager (1 thread)", f"PyTorch, {seeds} sequential (1 thread)"
    contenders = {"toymodels engine": engine(1), "toymodels train_step": ours_given_batch,
                  one: torch_run(torch_steps[:1], threads), one_1: torch_run(torch_steps[:1], 1),
                  f"toymodels engine, {seeds} seeds": engine(seeds),
                  many: torch_run(torch_steps, threads), many_1: torch_run(torch_steps, 1)}
    # Models each contender trains per step, stated, not read off its name (a thread count equal to
    # the seed count once made the one-model PyTorch contender count as `seeds` models).
    models = {name: seeds if name in (f"toymodels engine, {seeds} seeds", many, many_1) else 1 for name in contenders}
    per_round = round_times(contenders, args.repeats, warmup=2, pause=0.5)
    times = {name: min(t) for name, t in per_round.items()}
    matmul = matmul_gflops(args.repeats * 3, size=args.matmul_size)
    flops = model_flops_per_step(config, args.batch, args.length)
    tokens_per_step = args.batch * args.length

    params = sum(p.numel() for p in torch_model(torch, config).parameters())
    print(f"transformer training: {args.layers} layers, d_model {args.d_model}, {args.heads} head(s) of width {args.head_dim}, "
          f"MLP {config.mlp_width}, {params} parameters; batch {args.batch} x {args.length} tokens; AdamW; float32 CPU; {config.attention} attention")
    print(f"JAX {jax.__version__} on {len(jax.devices())} {jax.devices()[0].device_kind} device(s); "
          f"PyTorch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"equivalence: max |logit gap| at init {logit_gap:.1e}; max relative loss gap over 5 AdamW steps {loss_gap:.1e}")
    print(f"model FLOPs per step {flops / 1e9:.3f} G; float32 {args.matmul_size}^2 matmul {matmul:.1f} GFLOP/s "
          "(this run)")
    print(f"{'contender':40s} {'steps/s per model':>18s} {'model-steps/s':>14s} {'tokens/s':>10s} {'GFLOP/s':>8s} "
          f"{'of matmul':>9s}")
    rate = {}
    for name, seconds in times.items():
        rate[name] = models[name] * args.steps / seconds
        gflops = rate[name] * flops / 1e9
        print(f"{name:40s} {args.steps / seconds:18.1f} {rate[name]:14.1f} {rate[name] * tokens_per_step:10.0f} "
              f"{gflops:8.1f} {gflops / matmul:9.2f}")
    peer_one, peer_many = max(one, one_1, key=rate.get), max(many, many_1, key=rate.get)  # PyTorch's better setting
    torch_one, torch_many = rate[peer_one], rate[peer_many]
    print("ratios: best of rounds; then the median [quartiles] of the ratio within each round")
    print(f"ratio engine / best PyTorch eager (1 model): {rate['toymodels engine'] / torch_one:.2f}x; "
          f"{paired_ratio(per_round, 'toymodels engine', peer_one)}")
    print(f"ratio train_step / best PyTorch eager (1 model, same batch): {rate['toymodels train_step'] / torch_one:.2f}x; "
          f"{paired_ratio(per_round, 'toymodels train_step', peer_one)}")
    print(f"ratio engine {seeds} seeds / best PyTorch {seeds} sequential (model-steps/s): "
          f"{rate[f'toymodels engine, {seeds} seeds'] / torch_many:.2f}x; "
          f"{paired_ratio(per_round, f'toymodels engine, {seeds} seeds', peer_many)}")
    print(f"seeds in one program vs one seed (engine, model-steps/s): "
          f"{rate[f'toymodels engine, {seeds} seeds'] / rate['toymodels engine']:.2f}x")
    print(f"engine (1 model) fraction of the matmul rate: {rate['toymodels engine'] * flops / 1e9 / matmul:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
