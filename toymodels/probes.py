"""Linear probes from a transformer's residual stream to exact latents (belief states, posteriors).

The question a probe answers: is an exactly known latent quantity y (the belief over hidden states,
the posterior over authors or personas, the next-token distribution) a linear function of the model's
activations h? We fit y ~ h W + c by least squares (optionally ridge-penalised, the bias never is) on
training examples and score the fit on held-out ones:

    R^2_k = 1 - sum_n (y_nk - yhat_nk)^2 / sum_n (y_nk - mean_n y_k)^2       (per target dimension k)
    R^2   = 1 - sum_k SSE_k / sum_k SST_k  over dimensions with SST_k > 0    (variance-weighted)
    MSE   = mean over examples and dimensions of (y - yhat)^2

A dimension that is constant on the held-out set has no R^2 (NaN in r2_per_dim, left out of R^2).
The fit is closed form: centre features and targets, then W = lstsq(H_c, Y_c) for ridge 0 (the
minimum-norm solution when H_c is rank deficient) or W = V diag(s / (s^2 + ridge)) U^T Y_c from the
SVD H_c = U diag(s) V^T, and c = mean(y) - mean(h) W. Both stay accurate in float32 (no normal
equations), so probes of float32 activations need no x64 mode. lstsq treats singular values below
10 sqrt(D) eps s_max as zero: rounding the entries alone moves singular values by up to about
sqrt(D) eps s_max, and exact collinearity leaves ~eps s_max in practice. (The library default,
eps max(N, D), grows with the number of examples and on 32000 x 64 float32 residual streams dropped
directions that carry the belief, raising the probe's MSE by half.)

Alignment with the transformer (transformer.py): residual position t has read x_<t, so it is probed
against the latent after t tokens, entry t of `process.belief_states(tokens)` or `posterior(tokens)`
(entry 0 is the prior); `align_targets` drops their last entry (the latent after all L tokens, which no
position has seen). `probe_layers` splits held-out *sequences* (never positions of one sequence, which
are correlated) into probe-training and probe-test sets, and `shuffled_control` fits the same probes to
targets permuted across training examples, the baseline a real probe must beat (its held-out R^2 is
about 0, or slightly negative: roughly -(D + 1) / n_train - 1 / n_test for D features, the second
term because R^2 is scored against the test set's own mean).

Shape legend: N examples, D features, K target dimensions, B sequences, L positions, Y layers
(residual streams: the embedding and the output of each block).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from toymodels.precision import matmul


class Probe(NamedTuple):
    """A fitted linear probe: yhat = features @ weights + bias."""

    weights: Float[Array, "D K"]  # one column per target dimension
    bias: Float[Array, " K"]  # unpenalised intercept

    def predict(self, features_NxD: Float[Array, "N D"]) -> Float[Array, "N K"]:
        """The probe's prediction of the targets from features."""
        return matmul(features_NxD, self.weights) + self.bias


class ProbeScore(NamedTuple):
    """How well a probe predicts targets on one set of examples (see the module docstring)."""

    r2: Float[Array, ""]  # variance-weighted R^2 over the target dimensions
    r2_per_dim: Float[Array, " K"]  # R^2 of each dimension (NaN where it is constant)
    mse: Float[Array, ""]  # mean squared error over examples and dimensions
    mse_per_dim: Float[Array, " K"]  # mean squared error of each dimension


class LayerProbes(NamedTuple):
    """One probe per layer (leaves stacked on a leading layer axis Y) and its scores."""

    probes: Probe  # weights [Y, D, K], bias [Y, K]
    train: ProbeScore  # scores on the probe-training examples (each leaf [Y] or [Y, K])
    test: ProbeScore  # scores on held-out sequences (each leaf [Y] or [Y, K])


# --------------------------------------------------------------------------------------------------
# Validation (on concrete inputs, at the public boundary)
# --------------------------------------------------------------------------------------------------


def _as_float(name: str, value, ndim: int, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have shape {what}, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values; probe only finite activations and targets")
    return array


def _check_ridge(ridge) -> float:
    ok = isinstance(ridge, (int, float, np.number)) and not isinstance(ridge, bool)
    if not ok or not math.isfinite(ridge) or ridge < 0:
        raise ValueError(f"ridge must be a finite number >= 0 (0: plain least squares), got {ridge!r}")
    return float(ridge)


def _check_pair(features, targets) -> tuple[Array, Array]:
    x = _as_float("features", features, 2, "[examples, features]")
    y = _as_float("targets", targets, 2, "[examples, target dimensions]")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"features and targets must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError(f"a probe needs at least 2 examples, got {x.shape[0]}")
    if x.shape[1] < 1 or y.shape[1] < 1:
        raise ValueError(f"features and targets need at least one column each, got shapes {x.shape} and {y.shape}")
    dtype = jnp.result_type(float, x.dtype, y.dtype)  # float64 under x64 for float64 inputs, else float32
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _check_split(name: str, value, num_sequences: int) -> float:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not ok or not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    num_train = int(round(value * num_sequences))
    if num_train < 1 or num_train >= num_sequences:
        raise ValueError(
            f"{name}={value} leaves no probe-training or no held-out sequence among {num_sequences}; "
            "use more sequences or a fraction nearer 0.5"
        )
    return float(value)


# --------------------------------------------------------------------------------------------------
# Fitting and scoring (traceable cores, public wrappers that validate)
# --------------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames="least_squares")
def _fit(x_NxD: Array, y_NxK: Array, ridge: Array, least_squares: bool) -> Probe:
    """The closed-form fit; `least_squares` (ridge == 0, static) picks lstsq over the ridge formula."""
    x_mean, y_mean = x_NxD.mean(axis=0), y_NxK.mean(axis=0)
    xc_NxD, yc_NxK = x_NxD - x_mean, y_NxK - y_mean
    if least_squares:
        rcond = 10 * math.sqrt(x_NxD.shape[1]) * jnp.finfo(x_NxD.dtype).eps
        weights_DxK = jnp.linalg.lstsq(xc_NxD, yc_NxK, rcond=rcond)[0]
    else:
        u, s, vt = jnp.linalg.svd(xc_NxD, full_matrices=False)
        weights_DxK = matmul(vt.T, (s / (s**2 + ridge))[:, None] * matmul(u.T, yc_NxK))
    return Probe(weights_DxK, y_mean - matmul(x_mean, weights_DxK))


@jax.jit
def _score(probe: Probe, x_NxD: Array, y_NxK: Array) -> ProbeScore:
    error_NxK = y_NxK - probe.predict(x_NxD)
    sse_K = jnp.sum(error_NxK**2, axis=0)
    sst_K = jnp.sum((y_NxK - y_NxK.mean(axis=0)) ** 2, axis=0)
    varies_K = sst_K > 0
    r2_K = jnp.where(varies_K, 1 - sse_K / jnp.where(varies_K, sst_K, 1), jnp.nan)
    total = jnp.sum(jnp.where(varies_K, sst_K, 0))
    r2 = jnp.where(total > 0, 1 - jnp.sum(jnp.where(varies_K, sse_K, 0)) / jnp.where(total > 0, total, 1), jnp.nan)
    mse_K = sse_K / y_NxK.shape[0]
    return ProbeScore(r2, r2_K, mse_K.mean(), mse_K)


def fit_probe(features: Float[Array, "N D"], targets: Float[Array, "N K"], ridge: float = 0.0) -> Probe:
    """The least-squares (ridge > 0: ridge) linear probe from features to targets, with a free bias."""
    ridge = _check_ridge(ridge)
    x, y = _check_pair(features, targets)
    return _fit(x, y, jnp.asarray(ridge, x.dtype), ridge == 0)


def evaluate_probe(probe: Probe, features: Float[Array, "N D"], targets: Float[Array, "N K"]) -> ProbeScore:
    """R^2 (per dimension and variance-weighted) and MSE of a probe's predictions of targets."""
    if not isinstance(probe, Probe):
        raise ValueError(f"probe must be a Probe (from fit_probe), got {type(probe).__name__}")
    x, y = _check_pair(features, targets)
    weights = np.asarray(probe.weights)
    if weights.shape != (x.shape[1], y.shape[1]) or np.shape(probe.bias) != (y.shape[1],):
        raise ValueError(f"probe maps {weights.shape[0]} features to {np.shape(probe.bias)} targets, but features "
                         f"have {x.shape[1]} columns and targets {y.shape[1]}")
    return _score(probe, x, y)


# --------------------------------------------------------------------------------------------------
# Residual streams of sequences
# --------------------------------------------------------------------------------------------------


def align_targets(latent_BxL1xK: Float[Array, "B L+1 K"]) -> Float[Array, "B L K"]:
    """Targets for residual positions 0..L-1 from a latent of L + 1 entries (`belief_states` or
    `posterior` of length-L tokens): entry t, the latent after t tokens, is what position t has seen."""
    latent = _as_float("latent", latent_BxL1xK, 3, "[batch, length + 1, values] (entry 0 the prior)")
    if latent.shape[1] < 2:
        raise ValueError(f"latent must have at least 2 entries along its length axis, got shape {latent.shape}")
    return jnp.asarray(latent[:, :-1])


def split_sequences(num_sequences: int, train_fraction: float, key: Array) -> tuple[np.ndarray, np.ndarray]:
    """Indices (sorted) of the probe-training and the held-out sequences: a random partition by `key`
    with round(train_fraction * num_sequences) training sequences."""
    if isinstance(num_sequences, bool) or not isinstance(num_sequences, (int, np.integer)) or num_sequences < 2:
        raise ValueError(f"num_sequences must be an int >= 2, got {num_sequences!r}")
    _check_split("train_fraction", train_fraction, num_sequences)
    order = np.asarray(jax.random.permutation(key, num_sequences))
    cut = int(round(train_fraction * num_sequences))
    return np.sort(order[:cut]), np.sort(order[cut:])


def _check_residuals(residuals, targets) -> tuple[np.ndarray, np.ndarray]:
    h = _as_float("residuals", residuals, 4, "[layers, batch, length, d_model]")
    y = _as_float("targets", targets, 3, "[batch, length, target dimensions]")
    if h.shape[1:3] != y.shape[:2]:
        raise ValueError(f"residuals cover [batch, length] = {h.shape[1:3]} but targets cover {y.shape[:2]}; "
                         "use align_targets on a latent of L + 1 entries")
    return h, y


def _flat(h_YxBxLxD: np.ndarray, y_BxLxK: np.ndarray, rows: np.ndarray) -> tuple[Array, Array]:
    h = h_YxBxLxD[:, rows]
    x_YxNxD = h.reshape(h.shape[0], -1, h.shape[-1])
    y_NxK = y_BxLxK[rows].reshape(-1, y_BxLxK.shape[-1])
    dtype = jnp.result_type(float, x_YxNxD.dtype, y_NxK.dtype)
    return jnp.asarray(x_YxNxD, dtype), jnp.asarray(y_NxK, dtype)


def _layer_probes(residuals, targets, key, train_fraction, ridge, shuffle: bool) -> LayerProbes:
    ridge = _check_ridge(ridge)
    h, y = _check_residuals(residuals, targets)
    train_rows, test_rows = split_sequences(h.shape[1], train_fraction, jax.random.fold_in(key, 0))
    x_train, y_train = _flat(h, y, train_rows)
    x_test, y_test = _flat(h, y, test_rows)
    fit_targets = y_train
    if shuffle:  # every training example gets another example's targets: features carry no information
        fit_targets = y_train[jax.random.permutation(jax.random.fold_in(key, 1), y_train.shape[0])]
    return _fit_layers(x_train, fit_targets, y_train, x_test, y_test, jnp.asarray(ridge, x_train.dtype), ridge == 0)


@partial(jax.jit, static_argnames="least_squares")
def _fit_layers(x_train, fit_targets, y_train, x_test, y_test, ridge, least_squares: bool) -> LayerProbes:
    """vmap over layers of fit-then-score (compiled once per shape and per ridge == 0 or not)."""
    def one(xt, xs):
        probe = _fit(xt, fit_targets, ridge, least_squares)
        return probe, _score(probe, xt, y_train), _score(probe, xs, y_test)

    return LayerProbes(*jax.vmap(one)(x_train, x_test))


def probe_layers(
    residuals: Float[Array, "Y B L D"],
    targets: Float[Array, "B L K"],
    *,
    key: Array,
    train_fraction: float = 0.8,
    ridge: float = 0.0,
) -> LayerProbes:
    """Fit one probe per layer from residual position t to targets[:, t] (every position pooled) on
    a `key`-drawn train_fraction of the sequences; score it on the probe-training and the held-out ones."""
    return _layer_probes(residuals, targets, key, train_fraction, ridge, shuffle=False)


def shuffled_control(
    residuals: Float[Array, "Y B L D"],
    targets: Float[Array, "B L K"],
    *,
    key: Array,
    train_fraction: float = 0.8,
    ridge: float = 0.0,
) -> LayerProbes:
    """probe_layers' control: the same split (same key) and held-out set, but each probe is fitted to
    the training targets permuted across training examples (positions of all sequences pooled), so
    any held-out R^2 above about 0 would be an artefact of the method, not information in the features.
    The `train` scores compare the fit with the unpermuted training targets."""
    return _layer_probes(residuals, targets, key, train_fraction, ridge, shuffle=True)
