"""Shared cases for the latent-authors tests (test_family_authors*.py): sizes, padded random mixtures,
the log-space comparison, and the builders.

Shapes are few so jit caches stay small (each new shape or HMM structure is a new compilation): random
authors are V = 3, S = 2 HMMs, and every random mixture is padded to K = 4 authors with zero-prior copies
of a fixed gadget author that factorises neither way, so all of them share one shape and the general
filtering structure whatever the styles of the real authors.
"""

from __future__ import annotations

import brute_force as bf
import numpy as np
from brute_force_authors import hmm_author
from hypothesis import strategies as st
from strategies import random_hmm

from toymodels.processes.authors import latent_authors
from toymodels.processes.hmm import HMMProcess

V, S, L = 3, 2, 4
# Every sequence over ids 0..V (id V is impossible for every author): 256 rows, one shape for all tests.
WITH_IMPOSSIBLE = bf.all_sequences(V + 1, L)
STYLES = (
    "dense",
    "sparse",
    "deterministic",
    "emit_then_move",
    "move_then_emit",
    "near_deterministic",
)
# Styles whose HMMs almost surely take the general structure: for tests that run an author on its own.
GENERAL_STYLES = ("dense", "sparse", "near_deterministic")


K_PADDED = 4
# A two-state author that is neither emit-then-move nor move-then-emit (state 0: "0" stay or "1" move;
# state 1: "1" back), so a mixture that contains it always takes HMMProcess's general structure.
GADGET = (np.zeros((V, S, S)), np.array([1.0, 0.0]))
GADGET[0][0, 0, 0] = GADGET[0][1, 0, 1] = 0.5
GADGET[0][1, 1, 0] = 1.0


def pad(arrays, prior):
    """Append zero-prior gadget authors up to K_PADDED (they never write, so the mixture is unchanged)."""
    extra = K_PADDED - len(arrays)
    return list(arrays) + [GADGET] * extra, np.concatenate(
        [np.asarray(prior, np.float64), np.zeros(extra)]
    )


@st.composite
def author_arrays(draw, num_authors=st.sampled_from([2, 3]), styles=STYLES):
    """(list of (T, pi) arrays, prior), padded to K_PADDED. Sometimes author 1 copies author 0, sometimes
    a prior entry is 0, so that both "authors agree" and "authors differ" cases come up."""
    k = draw(num_authors)
    arrays = [
        random_hmm(
            np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
            V,
            S,
            draw(st.sampled_from(styles)),
        )
        for _ in range(k)
    ]
    if draw(st.booleans()) and draw(st.booleans()):
        arrays[1] = arrays[0]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["dirichlet", "uniform", "with_zero"]))
    prior = np.full(k, 1 / k) if kind == "uniform" else rng.dirichlet(np.ones(k))
    if kind == "with_zero":
        prior[draw(st.integers(0, k - 1))] = 0.0
        prior /= prior.sum()
    return pad(arrays, prior)


def build(arrays, prior):
    return latent_authors([HMMProcess(t, pi) for t, pi in arrays], prior)


def oracles(arrays):
    return [hmm_author(t, pi) for t, pi in arrays]
