"""Data-generating processes with exact ground truth, one module per family."""

from toymodels.processes.hmm import HMMProcess
from toymodels.processes.table import TableProcess

__all__ = ["HMMProcess", "TableProcess"]
