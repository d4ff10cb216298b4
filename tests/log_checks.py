"""The log-space comparison every exact test makes: a library's log-probabilities against an oracle's
probabilities, with the zero-probability conventions of DESIGN.md checked exactly."""

from __future__ import annotations

import numpy as np

# Log-space agreement with a float64 oracle: a relative error of 1e-9 on probabilities, far above
# float64 round-off and far below any bug.
LOG_ATOL = 1e-9


def assert_log_matches(log_lib, prob_ref, atol=LOG_ATOL):
    """log_lib == log(prob_ref): never NaN, exactly -inf where prob_ref is 0, finite and close elsewhere."""
    log_lib, prob_ref = np.asarray(log_lib, np.float64), np.asarray(prob_ref, np.float64)
    assert log_lib.shape == prob_ref.shape
    assert not np.any(np.isnan(log_lib)), "NaN in a log-probability"
    zero = prob_ref == 0
    assert np.all(np.isneginf(log_lib[zero])), "a zero-probability event has a finite log-probability"
    assert np.all(np.isfinite(log_lib[~zero])), "a possible event has log-probability -inf"
    np.testing.assert_allclose(log_lib[~zero], np.log(prob_ref[~zero]), rtol=0, atol=atol)
