"""Split the host CPU into one JAX device per core, before JAX starts.

Why: XLA:CPU runs the ops of one program one after another, and the small matmuls of a toy
transformer barely use a second thread, so one CPU device leaves cores idle. With one device per
core the training mesh (sharding.py) splits the seeds, or else the batch, over the cores: on a
2-core machine a training step of the benchmark model ran about 1.2-1.3x faster
(bench/bench_transformer_train.py). Only the CPU backend is affected; GPUs and TPUs are not.

The command-line scripts call `split_host_cpu()` first thing; library code never does, since the
device count can only be chosen before JAX's first computation. Results agree with a one-device run
to float rounding (gradients are summed over the batch in another order), not bit for bit.
"""

from __future__ import annotations

import os

import jax

ENV_VAR = "TOYMODELS_CPU_DEVICES"  # a device count; 0 leaves JAX's default (one CPU device)
MAX_DEVICES = 8  # a mesh axis needs a divisor of the seeds or the batch; more devices rarely help


def default_cpu_devices() -> int:
    """$TOYMODELS_CPU_DEVICES if set, else the cores this process may use, at most MAX_DEVICES."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        if not value.isdigit():
            raise ValueError(f"{ENV_VAR} must be a non-negative integer (0: JAX's default), got {value!r}")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, MAX_DEVICES)


def split_host_cpu(num_devices: int | None = None) -> bool:
    """Ask JAX for `num_devices` CPU devices (default: `default_cpu_devices()`; 0 or 1: leave it).

    Returns whether the setting took effect: it is False when JAX has already computed something,
    so the device count is fixed (then nothing changes and no error is raised), or when the
    command line of XLA already fixes the count (--xla_force_host_platform_device_count)."""
    count = default_cpu_devices() if num_devices is None else num_devices
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"num_devices must be a non-negative int, got {count!r}")
    if count <= 1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # backends already initialised: the count is fixed for this process
        return False
    return True
