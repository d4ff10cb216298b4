"""Where the training step's time goes: the device kernels of the engine's step, by total time.

    python bench/profile_step.py --workload issue --seeds 64 [--dtype bfloat16] [--attention cudnn]

Traces `--steps` steps of `--seeds` seeds in one program (as bench_transformer_train.py times them)
with jax.profiler and prints, for each line of each accelerator in the trace (a GPU stream, say), the
time per step and its `--top` kernels by total time per step, with their calls per step. Kernel names are
XLA's (fusion_308, gemm_fusion_dot_27, ...): to see what a fusion computes, look it up in the compiled
program's text, `compiled_step(...).lower(...).compile().as_text()`. On a CPU the trace holds no device
lines; the XLA operations run by the host's threads are printed instead (this script turns on
--xla_cpu_enable_xprof_traceme, without which XLA:CPU records only a few of them).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import tempfile

import jax

from bench_transformer_train import WORKLOADS, device_defaults, engine_runner, model_config

from toymodels.host import split_host_cpu
from toymodels.transformer import ATTENTION


def kernel_table(trace_dir: str, steps: int, top: int) -> list[str]:
    """Lines of text: per device line (or host XLA thread on a CPU), ms per step and its top kernels."""
    (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
    planes = list(jax.profiler.ProfileData.from_file(path).planes)
    devices = [p for p in planes if p.name.startswith("/device:")]
    lines = [(p, line) for p in devices for line in p.lines] if devices else [
        (p, line) for p in planes if p.name.startswith("/host:") for line in p.lines if line.name.startswith("tf_XLA")]
    out = []
    for plane, line in lines:
        total, calls = collections.Counter(), collections.Counter()
        for event in line.events:
            if not devices and ("Execute" in event.name or "Await" in event.name
                                or event.name.startswith(("Wait", "Rendezvous"))):
                continue  # wrappers of other events on a host thread, or waits: counted twice
            total[event.name] += event.duration_ns
            calls[event.name] += 1
        if not total:
            continue
        out.append(f"{plane.name} {line.name}: {sum(total.values()) / 1e6 / steps:.3f} ms per step")
        for name, ns in total.most_common(top):
            out.append(f"  {ns / 1e3 / steps:10.1f} us/step  {calls[name] / steps:6.1f} calls/step  {name[:120]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="issue")
    parser.add_argument("--seeds", type=int, default=64, help="seeds in one program")
    parser.add_argument("--dtype", default=None, help="activation dtype (default as bench_transformer_train.py: "
                        "bfloat16 on an accelerator, float32 on a CPU)")
    parser.add_argument("--attention", default=None, choices=ATTENTION,
                        help="default as bench_transformer_train.py: pallas on an NVIDIA GPU, einsum elsewhere")
    parser.add_argument("--steps", type=int, default=10, help="steps traced")
    parser.add_argument("--top", type=int, default=25, help="kernels listed per line")
    args = parser.parse_args()
    # Before JAX starts: one trace event per XLA:CPU operation (an accelerator ignores the flag).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    split_host_cpu()
    args.dtype, args.attention = device_defaults(args.dtype, args.attention)
    workload = WORKLOADS[args.workload]
    process = workload["process"]()
    config = model_config(process, workload, dtype=args.dtype, attention=args.attention)
    run = engine_runner(config, process, args.seeds, workload["batch"], workload["length"], args.steps)
    run()  # compile and warm up outside the trace
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            run()
        print(f"{args.seeds} seeds, {args.dtype} activations, {args.attention} attention, "
              f"{args.workload} workload on {jax.devices()[0].device_kind}")
        print("\n".join(kernel_table(trace_dir, args.steps, args.top)))


if __name__ == "__main__":
    main()
