"""Claim tests share the oracles in tests/ (brute_force.py, strategies.py): put that folder on the path."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
