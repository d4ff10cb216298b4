"""Import a script by its path: scripts/ and paper/ are folders of scripts, not packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "scripts" / "experiments"


def load_script(path: Path, name: str):
    """Execute the script at `path` as module `name`, registered in sys.modules first (dataclasses defined
    in it need that). The experiments' folder goes on sys.path, since they import their shared helpers
    as `_common`."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
