"""The CPU kernel behind HMMProcess.log_prob (toymodels/native): that it is built and used, its cache,
what happens without a compiler, and what a kernel must still support inside JAX (gradients, vmap,
empty batches). Its values are checked against the brute-force oracles in test_hmm.py and
test_hmm_long.py, which run every log_prob test on both paths (tests/log_prob_paths.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import brute_force as bf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from strategies import random_hmm

from toymodels.native import build
from toymodels.native import hmm_log_prob as native
from toymodels.predictors import check_tokens
from toymodels.processes import hmm as hmm_module
from toymodels.processes.hmm import HMMProcess

HAVE_COMPILER = shutil.which(build.compiler().split()[0]) is not None
STYLES = ("emit_then_move", "move_then_emit", "dense")  # the kernel's three steps


def kernel_targets_in(process: HMMProcess, tokens) -> bool:
    lowered = hmm_module._log_likelihood.lower(process.recursion, check_tokens(tokens))
    return any(target in lowered.as_text() for target, _ in native._TARGETS.values())


@pytest.mark.skipif(not HAVE_COMPILER, reason="no C++ compiler: log_prob uses the XLA scan")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_prob_runs_the_kernel_on_the_cpu(dtype):
    """Where a compiler exists (CI's machine has one) the kernel is built, and log_prob's compiled
    program calls it: the brute-force tests of log_prob then check the kernel, not a silent fallback."""
    assert jax.default_backend() == "cpu"
    assert native.available(dtype)
    transitions, initial = random_hmm(np.random.default_rng(0), 3, 4, "dense")
    process = HMMProcess(transitions.astype(dtype), initial.astype(dtype))
    assert kernel_targets_in(process, np.zeros((2, 5), np.int32))
    assert not kernel_targets_in(process, np.zeros((2, 0), np.int32))  # nothing to filter


@pytest.mark.skipif(not HAVE_COMPILER, reason="no C++ compiler")
def test_build_reuses_its_cache(tmp_path):
    """A second build of the same source with the same compiler returns the cached library unchanged."""
    first = build.build("hmm_log_prob", directory=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert build.build("hmm_log_prob", directory=tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left behind


def test_missing_or_failing_compiler_raises_build_error(tmp_path):
    with pytest.raises(build.NativeBuildError, match="no C\\+\\+ compiler"):
        build.build("hmm_log_prob", directory=tmp_path, cxx="no-such-compiler-toymodels")
    failing = tmp_path / "failing-cxx"
    failing.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo fake 1.0 && exit 0\necho broken >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(build.NativeBuildError, match="broken"):
        build.build("hmm_log_prob", directory=tmp_path / "cache", cxx=str(failing))
    assert not list((tmp_path / "cache").iterdir())  # the failed attempts left nothing behind


def test_load_warns_and_falls_back_when_the_kernel_cannot_be_built(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-toymodels")
    monkeypatch.setenv("TOYMODELS_CACHE_DIR", str(tmp_path))
    with pytest.warns(RuntimeWarning, match="XLA path is used"):
        assert build.load.__wrapped__("hmm_log_prob") is None
    monkeypatch.setenv("TOYMODELS_NATIVE", "0")  # disabled: no build, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build.load.__wrapped__("hmm_log_prob") is None


def test_log_prob_without_the_kernel_uses_the_xla_scan():
    """With TOYMODELS_NATIVE=0 (as without a compiler) log_prob compiles the XLA scan and gives the
    brute-force value; run in a fresh interpreter, since the choice is made once per process."""
    code = (
        "import numpy as np, jax; jax.config.update('jax_enable_x64', True)\n"
        "from toymodels.processes import hmm\n"
        "p = hmm.HMMProcess(np.full((2, 1, 1), 0.5), np.ones(1))\n"
        "x = np.array([[0, 1, 1]])\n"
        "assert 'toymodels_hmm' not in hmm._log_likelihood.lower(p.recursion, x).as_text()\n"
        "print(float(p.log_prob(x)[0]))\n"
    )
    env = dict(os.environ, TOYMODELS_NATIVE="0", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) == pytest.approx(3 * np.log(0.5), rel=1e-15)


@pytest.mark.parametrize("style", STYLES)
def test_gradient_of_log_prob_matches_enumeration(style):
    """d log P(x) / d initial_i = P(x | first state i) / P(x): the kernel has no derivative of its own,
    and log_prob must still be differentiable (through the XLA scan's)."""
    transitions, initial = random_hmm(np.random.default_rng(1), 3, 4, style)
    process = HMMProcess(transitions, initial)
    tokens = bf.hmm_sample(transitions, initial, 3, 5, np.random.default_rng(2))
    recursion = process.recursion

    def total_log_prob(start):
        moved = hmm_module._Recursion(recursion.transitions, start, recursion.moves, recursion.emissions,
                                      recursion.structure)
        return hmm_module._log_likelihood(moved, check_tokens(tokens)).sum()

    gradient = np.asarray(jax.grad(total_log_prob)(recursion.initial))
    expected = np.zeros(len(initial))
    for row in tokens:
        total = bf.hmm_prob(transitions, initial, list(row))
        for i in range(len(initial)):
            expected[i] += bf.hmm_prob(transitions, np.eye(len(initial))[i], list(row)) / total
    np.testing.assert_allclose(gradient, expected, rtol=1e-10)


def test_vmap_over_processes_matches_each_process():
    """vmap over a stack of processes (the kernel folds the leading axis into its batch) gives each
    process's own log_prob."""
    rng = np.random.default_rng(3)
    processes = [HMMProcess(*random_hmm(rng, 3, 5, "emit_then_move")) for _ in range(3)]
    tokens = check_tokens(rng.integers(3, size=(7, 9)))
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[p.recursion for p in processes])
    together = np.asarray(jax.vmap(hmm_module._log_likelihood, in_axes=(0, None))(stacked, tokens))
    for row, process in zip(together, processes):
        arrays = np.asarray(process.transitions), np.asarray(process.initial)
        expected = [bf.hmm_forward(*arrays, x)[0][-1] for x in np.asarray(tokens)]
        np.testing.assert_allclose(row, expected, rtol=1e-12)


def test_empty_batch_and_one_sequence():
    process = HMMProcess(*random_hmm(np.random.default_rng(4), 2, 3, "dense"))
    assert process.log_prob(np.zeros((0, 4), np.int32)).shape == (0,)
    one = np.array([[0, 1, 1, 0]])
    expected = np.log(bf.hmm_prob(np.asarray(process.transitions), np.asarray(process.initial), list(one[0])))
    np.testing.assert_allclose(np.asarray(process.log_prob(one)), [expected], rtol=1e-12)


@pytest.mark.skipif(not HAVE_COMPILER, reason="no C++ compiler")
def test_kernel_rejects_inconsistent_operands():
    """Shapes are the wrapper's job, but the kernel checks them too: an error, never a wrong read."""
    emissions = jnp.ones((3, 4))  # V = 3, so the general step needs 3 matrices
    with pytest.raises(jax.errors.JaxRuntimeError, match="inconsistent shapes"):
        native.log_prob("general", emissions, jnp.ones((1, 4, 4)), jnp.ones(4) / 4,
                        jnp.zeros((2, 3), jnp.int32)).block_until_ready()
