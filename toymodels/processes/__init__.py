"""Data-generating processes with exact ground truth, one module per family.

Importing this package registers every family with `registry`, so `make_process(name, **kwargs)` and
`catalog()` see all of them.
"""

from toymodels.processes.hmm import HMMProcess
from toymodels.processes.registry import catalog, families, make_process, register_family
from toymodels.processes.table import TableProcess
from toymodels.processes.standard import markov_chain, mess3, random_hmm, rrxor
from toymodels.processes.authors import (
    hierarchical_authors,
    hierarchical_markov_authors,
    latent_authors,
    map_author_predictor,
    markov_authors,
    single_author_predictor,
)
from toymodels.processes.generated import generated_text_mixture, human_and_model
from toymodels.processes.hashing import hash_then_payload, hash_then_payload_hmm, non_inverting_predictor
from toymodels.processes.mixture import MixtureProcess
from toymodels.processes.offscreen import offscreen
from toymodels.processes.precaching import markov_control, precaching
from toymodels.processes.personas import persona_stage, random_persona_stage, restrict_prior
from toymodels.processes.dialog import coupled_dialog, dialog, random_dialog
from toymodels.processes.waluigi import waluigi

__all__ = [
    "HMMProcess",
    "MixtureProcess",
    "TableProcess",
    "catalog",
    "coupled_dialog",
    "dialog",
    "families",
    "generated_text_mixture",
    "hash_then_payload",
    "hash_then_payload_hmm",
    "hierarchical_authors",
    "hierarchical_markov_authors",
    "human_and_model",
    "latent_authors",
    "map_author_predictor",
    "markov_authors",
    "single_author_predictor",
    "make_process",
    "markov_chain",
    "markov_control",
    "mess3",
    "non_inverting_predictor",
    "offscreen",
    "persona_stage",
    "precaching",
    "random_dialog",
    "random_hmm",
    "random_persona_stage",
    "register_family",
    "restrict_prior",
    "rrxor",
    "waluigi",
]
