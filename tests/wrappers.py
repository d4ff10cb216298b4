"""Small predictor wrappers the tests share."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from toymodels.predictors import PytreeNode


class ConditionalsOnly(PytreeNode):
    """The same predictor with log_conditionals only: no sample (so it cannot be the data side) and no
    init_state/step (so generate takes the recompute path). `max_length` overrides the base's limit."""

    _data_fields = ("base",)
    _static_fields = ("limit",)

    def __init__(self, base, max_length=None):
        self.base = base
        self.limit = max_length

    @property
    def vocab_size(self):
        return self.base.vocab_size

    @property
    def max_length(self):
        return self.base.max_length if self.limit is None else self.limit

    def log_conditionals(self, tokens):
        return self.base.log_conditionals(tokens)


class Constant(PytreeNode):
    """A predictor with the same next-token distribution after every prefix, possible or not: the
    simplest "does anything at all off the support" predictor that stays normalised everywhere (an HMM
    used as r would not: after a prefix it cannot produce, its conditionals are all -inf)."""

    _data_fields = ("log_probs",)
    max_length = None

    def __init__(self, probs):
        with np.errstate(divide="ignore"):
            self.log_probs = jnp.asarray(np.log(np.asarray(probs, np.float64)))

    @property
    def vocab_size(self):
        return self.log_probs.shape[-1]

    def log_conditionals(self, tokens):
        return jnp.broadcast_to(self.log_probs, tokens.shape + self.log_probs.shape)
