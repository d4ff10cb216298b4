"""Transformer training throughput beside PyTorch, measured in the same run, on the CPU.

Workload (default: the C13 Mess3 model): a pre-norm decoder-only transformer with 4 layers, d_model
64, one head of width 8, MLP width 256, learned positions, vocabulary 3 (+ BOS), sequences of 10
tokens, batch 64; AdamW (lr 1e-3 constant, betas 0.9/0.999, eps 1e-8, weight decay 0.01 on matrices
only) after global-norm clipping at 1, mean next-token cross-entropy. The PyTorch model below is the
same architecture op for op (fused QKV, tanh GELU, LayerNorm eps 1e-5, scaled_dot_product_attention
with a causal mask); it is loaded with our initial parameters, and the run first checks that both
give the same logits and the same losses over a few AdamW steps on one batch.

Contenders, alternated within each timing round (this VM's load drifts):
  toymodels engine        training.compiled_step: draws its own batch on device, then one step
  toymodels train_step    the pure jitted step on a given batch (what PyTorch is given)
  PyTorch eager           one model and its torch.optim.AdamW (fused when the build has it) on a given batch,
                          with PyTorch's default threads and with 1 thread (on a small, shared CPU its
                          multi-threaded eager mode can be several times slower); ratios use the faster
  toymodels engine, N     N seeds trained by one vmapped program (the engine's way to run seeds)
  PyTorch, N sequential   N separate PyTorch models stepped one after another (both thread settings)

PyTorch is a benchmark-only dependency (`pip install -e '.[bench]'`); without it this prints a
message and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import jax
import numpy as np

from toymodels.optimizer import OptimizerConfig, make_optimizer
from toymodels.processes import mess3
from toymodels.sharding import make_mesh, replicated
from toymodels.training import TrainConfig, compiled_step, init_state, init_states, train_step
from toymodels.transformer import TransformerConfig, apply, graphdef_for

OPTIMIZER = OptimizerConfig(learning_rate=1e-3, schedule="constant", warmup_fraction=0.0)


def best_times(contenders: dict, rounds: int, warmup: int = 2, pause: float = 0.5) -> dict[str, float]:
    """Minimum wall time of each contender over `rounds` rounds, alternating contenders within a round
    so that drifts in machine load hit every contender alike. Each contender first runs `warmup` untimed
    calls (compilation, PyTorch's first slow iterations), and every call is followed by an untimed
    `pause`: XLA's and PyTorch's worker threads spin for a while after their work ends, which on a
    2-core machine would slow whichever framework runs next."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--head-dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=8, help="N: models for the vmapped-seeds comparison")
    parser.add_argument("--steps", type=int, default=10, help="train steps per timed call")
    parser.add_argument("--repeats", type=int, default=4, help="alternating timing rounds")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("bench_transformer_train: skipped, PyTorch is not installed (pip install -e '.[bench]')")
        return

    process = mess3(0.05, 0.85)
    config = TransformerConfig(vocab_size=process.vocab_size, context=args.length, num_layers=args.layers,
                               d_model=args.d_model, num_heads=args.heads, head_dim=args.head_dim)
    tokens = process.sample(jax.random.key(0), args.batch, args.length)
    logit_gap, loss_gap = check_equivalence(torch, config, tokens)

    def engine(num_seeds: int):
        """A closure running `args.steps` engine steps of `num_seeds` vmapped seeds (state kept across calls)."""
        train = TrainConfig(steps=10**6, batch_size=args.batch, sequence_length=args.length, seeds=tuple(range(num_seeds)),
                            optimizer=OPTIMIZER, num_devices=1)
        mesh = make_mesh(num_seeds, args.batch, jax.devices()[:1])
        holder = [init_states(config, train, mesh)]
        step, on_mesh = compiled_step(config, train, mesh), jax.device_put(jax.tree.map(np.asarray, process), replicated(mesh))

        def run():
            for _ in range(args.steps):
                holder[0], metrics = step(holder[0], on_mesh)
            jax.block_until_ready(metrics)

        return run

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
                  f"toymodels engine, {seeds} vmapped": engine(seeds),
                  many: torch_run(torch_steps, threads), many_1: torch_run(torch_steps, 1)}
    times = best_times(contenders, args.repeats)
    models = {name: (seeds if f"{seeds} " in name else 1) for name in contenders}
    tokens_per_step = args.batch * args.length

    params = sum(p.numel() for p in torch_model(torch, config).parameters())
    print(f"transformer training: {args.layers} layers, d_model {args.d_model}, {args.heads} head(s) of width {args.head_dim}, "
          f"MLP {config.mlp_width}, {params} parameters; batch {args.batch} x {args.length} tokens; AdamW; float32 CPU")
    print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; PyTorch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"equivalence: max |logit gap| at init {logit_gap:.1e}; max relative loss gap over 5 AdamW steps {loss_gap:.1e}")
    print(f"{'contender':40s} {'steps/s per model':>18s} {'model-steps/s':>14s} {'tokens/s':>10s}")
    rate = {}
    for name, seconds in times.items():
        rate[name] = models[name] * args.steps / seconds
        print(f"{name:40s} {args.steps / seconds:18.1f} {rate[name]:14.1f} {rate[name] * tokens_per_step:10.0f}")
    torch_one, torch_many = max(rate[one], rate[one_1]), max(rate[many], rate[many_1])  # PyTorch's better setting
    print(f"ratio engine / best PyTorch eager (1 model): {rate['toymodels engine'] / torch_one:.2f}x")
    print(f"ratio train_step / best PyTorch eager (1 model, same batch): {rate['toymodels train_step'] / torch_one:.2f}x")
    print(f"ratio engine {seeds} vmapped / best PyTorch {seeds} sequential (model-steps/s): "
          f"{rate[f'toymodels engine, {seeds} vmapped'] / torch_many:.2f}x")
    print(f"vmapped seeds vs one seed (engine, model-steps/s): "
          f"{rate[f'toymodels engine, {seeds} vmapped'] / rate['toymodels engine']:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
