"""Run metadata: what every result records about the code and machine, also from a plain source tree."""

from __future__ import annotations

import importlib.metadata
import subprocess

from toymodels import results


def test_metadata_names_code_versions_and_device():
    metadata = results.run_metadata()
    assert {"code_version", "versions", "device", "x64", "utc"} <= set(metadata)
    assert set(metadata["versions"]) == {"toymodels", "jax", "jaxlib", "flax", "numpy"}
    assert metadata["device"]["count"] >= 1


def test_source_tree_without_installed_metadata_or_git(monkeypatch):
    """Scripts run from a checkout on PYTHONPATH (no installed distribution, no git) still record."""

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    def no_git(*args, **kwargs):
        raise OSError("git not found")

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(subprocess, "run", no_git)
    metadata = results.run_metadata()
    assert metadata["code_version"] == "not installed"
    assert set(metadata["versions"].values()) == {"not installed"}
