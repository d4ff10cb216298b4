"""HMMProcess.log_prob has two implementations: a C++ kernel, which `process.log_prob` runs on the CPU
(toymodels/native; test_hmm_native.py checks that it does), and the XLA scan, which runs on every other
backend and wherever the kernel cannot be built. Tests of log_prob take a `path` and check both against
the same oracle."""

from __future__ import annotations

import jax

from toymodels.predictors import check_tokens
from toymodels.processes import hmm

PATHS = ("cpu_kernel", "xla_scan")
_xla_scan = jax.jit(hmm._xla_log_likelihood)


def log_prob(process, tokens, path: str):
    if path == "cpu_kernel":
        return process.log_prob(tokens)
    if path == "xla_scan":
        return _xla_scan(process.recursion, check_tokens(tokens))
    raise ValueError(f"path must be one of {PATHS}, got {path!r}")
