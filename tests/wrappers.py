"""Small predictor wrappers the tests share."""

from __future__ import annotations

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
