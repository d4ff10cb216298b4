"""Session-wide test configuration: JAX flags and Hypothesis profiles.

This file must set XLA_FLAGS before anything imports jax, so it does that
first. tests/ deliberately has no __init__.py: pytest uses rootdir-based
conftest discovery (rootdir = the directory holding pyproject.toml).
"""

import os

# (ruff E402 exempts imports that follow an os.environ assignment.)
# Pretend the host CPU is 8 devices so sharding / pmap code paths are
# exercised on a laptop or CI box without accelerators. setdefault: a user or
# CI job that sets XLA_FLAGS explicitly keeps its own value. This has to run
# before jax is imported anywhere, because XLA reads the flag at backend init.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from pathlib import Path

import jax
from hypothesis import HealthCheck, settings

# Exact-claim tests compare against closed-form ground truth, so they run in
# float64; float32 round-off would swamp the tolerances they check.
jax.config.update("jax_enable_x64", True)

# Persistent XLA compilation cache inside the repo (ignored by git). Repeated
# test runs skip recompiling the same jitted functions; only compilations that
# take at least 0.5 s are worth the disk round-trip.
_REPO_ROOT = Path(__file__).resolve().parent.parent
jax.config.update("jax_compilation_cache_dir", str(_REPO_ROOT / ".cache" / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# Health checks suppressed in every profile: building JAX arrays and the first
# jit of a function make example generation look "too slow", and strategies
# over matrices / sequences legitimately produce large data.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large]

# ci: the default for `make test`. Few examples keep the suite fast on a
# 2-core CI machine; derandomize=True makes runs reproducible, so a red CI is
# never a fluke that vanishes on rerun; deadline=None because JIT compilation
# makes the first example of each test arbitrarily slow; print_blob=True
# prints the @reproduce_failure blob so a CI failure can be replayed locally.
settings.register_profile(
    "ci",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=_SUPPRESS,
    print_blob=True,
)

# thorough: `make test-thorough`. Many random examples to hunt for edge cases
# before a release or after touching numerics; still no deadline (JIT).
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=_SUPPRESS,
)

# dev: quick local iteration while writing a test (HYPOTHESIS_PROFILE=dev).
settings.register_profile(
    "dev",
    max_examples=10,
    deadline=None,
)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
