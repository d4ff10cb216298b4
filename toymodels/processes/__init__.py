"""Data-generating processes with exact ground truth, one module per family.

Importing this package registers every family with `registry`, so `make_process(name, **kwargs)` and
`catalog()` see all of them.
"""

from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import catalog, families, make_process, register_family
from toymodels.processes.table import TableProcess
from toymodels.processes.standard import markov_chain, mess3, random_hmm, rrxor

__all__ = [
    "HMMProcess",
    "TableProcess",
    "catalog",
    "families",
    "make_process",
    "markov_chain",
    "mess3",
    "random_hmm",
    "register_family",
    "rrxor",
]
