"""Run metadata: what every result records about the code and machine, also from a plain source tree."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess

import pytest

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


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_version_is_dirty_for_code_changes_only(tmp_path):
    """In a scratch repository: a clean commit gives its hash; rewriting the paper's outputs keeps it
    clean (they record the version themselves); a new untracked module or an edited one is dirty."""

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "paper" / "tables").mkdir(parents=True)
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "paper" / "tables" / "t.md").write_text("version a\n")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "--short", "HEAD")
    where = tmp_path / "pkg"
    assert results.code_version(where) == head
    (tmp_path / "paper" / "tables" / "t.md").write_text("version b\n")
    (tmp_path / "paper" / "tables" / "new.md").write_text("new table\n")
    assert results.code_version(where) == head
    (tmp_path / "pkg" / "new_experiment.py").write_text("y = 2\n")
    assert results.code_version(where) == f"{head}-dirty"
    (tmp_path / "pkg" / "new_experiment.py").unlink()
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert results.code_version(where) == f"{head}-dirty"
