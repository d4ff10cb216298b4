"""Import a script by its path (scripts/ and paper/ are folders of scripts, not packages), and run
paper/draw.py on a test's results."""

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


def draw_and_check(tmp_path: Path, monkeypatch, stem: str) -> None:
    """paper/draw.py on tmp_path/results into tmp_path/paper; the figure (pdf, png) and table (md, tex)
    of experiment `stem` must exist and be non-empty."""
    monkeypatch.syspath_prepend(str(ROOT / "paper"))
    draw = load_script(ROOT / "paper" / "draw.py", "paper_draw")
    assert draw.main(["--results", str(tmp_path / "results"), "--paper", str(tmp_path / "paper")]) == 0
    for name in (f"figures/{stem}.pdf", f"figures/{stem}.png", f"tables/{stem}.md", f"tables/{stem}.tex"):
        assert (tmp_path / "paper" / name).stat().st_size > 0, name
