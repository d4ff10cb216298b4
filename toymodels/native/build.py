"""Compile a C++ XLA FFI kernel of this package on first use, cache it, and load it.

A kernel is one `.cc` file beside this module. It is built with the machine's C++ compiler (`$CXX`, else
`c++`) against the XLA FFI headers that jaxlib ships, for the host CPU (`-march=native`), into a cache
directory (`$TOYMODELS_CACHE_DIR`, else `$XDG_CACHE_HOME/toymodels`, else `~/.cache/toymodels`). The
library's file name hashes everything the build depends on (source, compiler and its version, flags,
jaxlib version, CPU), so a change to any of them builds anew and a cached library is never stale. Builds
write to a temporary file and rename it, so that processes building at once (test workers) never load a
half-written library.

Kernels are an optimisation, never a requirement: with `TOYMODELS_NATIVE=0`, or when no compiler can
build them, `load` returns None (with one warning saying why) and callers use their XLA path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jaxlib

SOURCE_DIR = Path(__file__).resolve().parent
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
# Tried first; a compiler that rejects -march=native (some non-x86 toolchains) builds without it.
HOST_FLAGS = ("-march=native",)
BUILD_TIMEOUT_S = 300


class NativeBuildError(RuntimeError):
    """A kernel could not be built; the message holds the compiler's output."""


def enabled() -> bool:
    return os.environ.get("TOYMODELS_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("TOYMODELS_CACHE_DIR"):
        return Path(os.environ["TOYMODELS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "toymodels"


def compiler() -> str:
    return os.environ.get("CXX") or "c++"


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU's feature flags where Linux lists them."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler_version(command: list[str]) -> str:
    try:
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NativeBuildError(f"cannot run the C++ compiler {shlex.join(command)!r}: {error}") from error
    if result.returncode != 0:
        raise NativeBuildError(f"{shlex.join(command)} --version failed: {result.stderr.strip()}")
    return result.stdout


def build(name: str, directory: Path | None = None, cxx: str | None = None) -> Path:
    """Path of the shared library built from `name`.cc, building it unless the cache holds it.

    Raises NativeBuildError when the compiler is missing or fails."""
    source = SOURCE_DIR / f"{name}.cc"
    command = shlex.split(cxx or compiler())
    if not command or shutil.which(command[0]) is None:
        raise NativeBuildError(f"no C++ compiler {cxx or compiler()!r} on PATH (set CXX to one)")
    directory = Path(directory) if directory is not None else cache_dir()
    identity = "\n".join([source.read_text(), shlex.join(command), _compiler_version(command), " ".join(BASE_FLAGS),
                          " ".join(HOST_FLAGS), jaxlib.__version__, platform.machine(), _cpu_identity()])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    library = directory / f"{name}-{digest}.so"
    if library.exists():
        return library
    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in (HOST_FLAGS, ()):
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".so")
        os.close(handle)
        arguments = [*command, *BASE_FLAGS, *extra, "-isystem", jax.ffi.include_dir(), str(source), "-o", temporary]
        try:
            result = subprocess.run(arguments, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            result = subprocess.CompletedProcess(arguments, 1, "", str(error))
        if result.returncode == 0:
            os.replace(temporary, library)
            return library
        os.unlink(temporary)
        errors.append(f"$ {shlex.join(arguments)}\n{result.stderr.strip()[-2000:]}")
    raise NativeBuildError("building a native kernel failed:\n" + "\n".join(errors))


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The built library `name`, loaded once per process; None (after one warning) if kernels are
    disabled or cannot be built here."""
    if not enabled():
        return None
    try:
        return ctypes.CDLL(str(build(name)))
    except (NativeBuildError, OSError) as error:
        warnings.warn(f"toymodels: the native kernel {name!r} is unavailable, so the slower XLA path is used "
                      f"(set TOYMODELS_NATIVE=0 to silence this): {error}", RuntimeWarning, stacklevel=2)
        return None
