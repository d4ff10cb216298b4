"""Result files: run metadata, and atomic JSON records (one file per finished run) that stay strict JSON
(RFC 8259): non-finite floats are stored as the strings "nan", "inf", "-inf" and read back as floats (so
never use those three strings as labels). Arrays become nested lists, NumPy scalars plain numbers."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np


# Paths whose changes do not make the code dirty: the paper's figures and tables are outputs (they even
# record the code version), and rewriting them after a commit must not mark every later run "-dirty".
NOT_CODE = ("paper/figures", "paper/tables")


def code_version(where: str | os.PathLike | None = None) -> str:
    """`git describe --always` of the checkout holding this package (or `where`), with "-dirty" if any
    file outside NOT_CODE differs from that commit or is new and not ignored (a new module or
    experiment script changes what runs, though `git describe --dirty` ignores untracked files);
    without git, the installed package's version."""
    cwd = Path(where) if where is not None else Path(__file__).parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        name = git("describe", "--always")
        changes = git("status", "--porcelain", "--untracked-files=all", "--", ":(top)",
                      *(f":(top,exclude){path}" for path in NOT_CODE))
    except (OSError, subprocess.SubprocessError):
        return _installed_version("toymodels")
    return f"{name}-dirty" if changes else name


def _installed_version(name: str) -> str:
    """The installed distribution's version; "not installed" for a source tree on PYTHONPATH."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_metadata() -> dict[str, Any]:
    """Code version (`code_version`), library versions, devices, x64 mode, UTC timestamp; no host names
    or paths."""
    return {
        "code_version": code_version(),
        "versions": {name: _installed_version(name) for name in ("toymodels", "jax", "jaxlib", "flax", "numpy")},
        "device": {"platform": jax.devices()[0].platform, "kind": jax.devices()[0].device_kind, "count": jax.device_count()},
        "x64": bool(jax.config.jax_enable_x64),
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic) or hasattr(value, "__array__"):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(value, value) if isinstance(value, str) else value


def write_json_atomic(path: str | os.PathLike, record: Any) -> Path:
    """Write `record` to `path` (creating its directory) so that `path` only ever holds its old content or
    the whole record: serialise first, then write a temp file beside it, fsync, and os.replace."""
    path, text = Path(path), json.dumps(_plain(record), indent=1, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            os.umask(umask := os.umask(0o022))  # read the umask: mkstemp makes 0600, give what open() would
            os.fchmod(file.fileno(), 0o666 & ~umask)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)  # a no-op after the rename; removes the temp after a failure
    return path


def read_json(path: str | os.PathLike) -> Any:
    """The record `write_json_atomic` wrote, with "nan", "inf", "-inf" read back as floats."""
    return _decode(json.loads(Path(path).read_text()))
