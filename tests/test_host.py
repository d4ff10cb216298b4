"""toymodels.host: one JAX CPU device per core for the command-line scripts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from toymodels.host import ENV_VAR, MAX_DEVICES, default_cpu_devices, split_host_cpu


def test_default_is_the_usable_cores_capped(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_cpu_devices() == min(len(os.sched_getaffinity(0)), MAX_DEVICES)
    monkeypatch.setenv(ENV_VAR, "3")
    assert default_cpu_devices() == 3


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bad_environment_value_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ValueError, match=ENV_VAR):
        default_cpu_devices()


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_bad_device_count_raises(value):
    with pytest.raises(ValueError, match="num_devices"):
        split_host_cpu(value)


def test_no_effect_once_jax_has_started():
    """The test session already runs JAX on 8 forced devices: nothing changes, nothing raises."""
    import jax

    before = jax.device_count()
    assert split_host_cpu(2) is False and jax.device_count() == before


@pytest.mark.parametrize("requested, expected", [(3, 3), (0, 1)])
def test_fresh_process_gets_the_requested_cpu_devices(requested, expected):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = (f"from toymodels.host import split_host_cpu; split_host_cpu({requested}); "
            "import jax; print(len(jax.devices('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) == expected
