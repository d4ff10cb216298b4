"""Linear probes (toymodels/probes.py): a planted linear map is recovered to within its sampling error,
the fits equal numpy.linalg's least squares and sklearn's scores, the shuffled control scores about 0
on held-out data, and residual position t is matched with the latent after t tokens.

Oracles: numpy.linalg.lstsq on the intercept-augmented (and, for ridge, row-augmented) system;
sklearn.metrics for R^2 and MSE; closed-form sampling variances of least squares for the tolerances;
the exact belief states of Mess3 for the alignment check.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import mean_squared_error, r2_score

from toymodels.probes import (
    Probe,
    align_targets,
    evaluate_probe,
    fit_probe,
    probe_layers,
    shuffled_control,
    split_sequences,
)
from toymodels.processes import mess3

# Shapes come from short lists: every new shape compiles the fit again. The properties that sample a
# process or fit three layers run a third of the profile's examples.
FEW = max(5, settings().max_examples // 3)
Z = 6.0  # two-sided 6-sigma bounds: P(|z| > 6) = 2e-9 per entry, safe under a union bound of thousands


def planted(seed: int, n: int, d: int, k: int, noise: float):
    """Features x ~ N(0, I_d), targets y = x A + b + noise * N(0, I_k); returns x, y, A, b."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((d, k)), rng.standard_normal(k)
    x = rng.standard_normal((n, d))
    return x, x @ a + b + noise * rng.standard_normal((n, k)), a, b


def numpy_fit(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """argmin ||y - x w - c||^2 + ridge ||w||^2 as one plain least-squares problem: the intercept is a
    column of ones, and the penalty rows sqrt(ridge) I (with a 0 under the intercept) are appended."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    rhs = y
    if ridge > 0:
        design = np.vstack([design, np.hstack([np.sqrt(ridge) * np.eye(d), np.zeros((d, 1))])])
        rhs = np.vstack([y, np.zeros((d, y.shape[1]))])
    solution = np.linalg.lstsq(design, rhs, rcond=None)[0]
    return solution[:d], solution[d]


@given(seed=st.integers(0, 2**31 - 1), d=st.sampled_from([1, 3, 6]), k=st.sampled_from([1, 4]),
       noise=st.sampled_from([0.05, 0.3, 1.0]))
def test_planted_linear_map_is_recovered(seed, d, k, noise):
    n_train, n_test = 400, 2000
    x, y, a, b = planted(seed, n_train + n_test, d, k, noise)
    probe = fit_probe(x[:n_train], y[:n_train])
    # Least squares: cov(w_k) = noise^2 (Xc^T Xc)^-1, var(c_k) = noise^2 (1/n + mean^T (Xc^T Xc)^-1 mean).
    mean = x[:n_train].mean(axis=0)
    inverse = np.linalg.inv((x[:n_train] - mean).T @ (x[:n_train] - mean))
    weight_sd = noise * np.sqrt(np.diag(inverse))[:, None]
    bias_sd = noise * np.sqrt(1 / n_train + mean @ inverse @ mean)
    assert np.all(np.abs(np.asarray(probe.weights) - a) < Z * weight_sd)
    assert np.all(np.abs(np.asarray(probe.bias) - b) < Z * bias_sd)

    # Population R^2 of dimension j: 1 - noise^2 / (|A_j|^2 + noise^2). On held-out data, SSE/n and SST/n
    # each deviate from their means by Z sqrt(2 / n_test) relatively (chi-square), and the fitted map adds
    # (d + 1) / n_train relative excess error in expectation (three times that bounds it).
    score = evaluate_probe(probe, x[n_train:], y[n_train:])
    variance = (a**2).sum(axis=0) + noise**2
    population = 1 - noise**2 / variance
    relative = 2 * Z * np.sqrt(2 / n_test) + 3 * (d + 1) / n_train
    assert np.all(np.abs(np.asarray(score.r2_per_dim) - population) < (1 - population) * relative)
    overall = 1 - k * noise**2 / variance.sum()
    assert abs(float(score.r2) - overall) < (1 - overall) * relative
    assert abs(float(score.mse) - noise**2) < noise**2 * relative


@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([5, 40]), d=st.sampled_from([1, 8]), k=st.sampled_from([1, 3]),
       ridge=st.sampled_from([0.0, 1e-3, 0.5, 20.0]), duplicate=st.booleans())
def test_fit_matches_numpy_lstsq_and_scores_match_sklearn(seed, n, d, k, ridge, duplicate):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 10, size=d)
    if duplicate:  # rank deficient: the minimum-norm (ridge 0) solution is not the only one
        x = np.hstack([x, x[:, :1]])
    y = rng.standard_normal((n, k))
    probe = fit_probe(x, y, ridge)
    weights, bias = numpy_fit(x, y, ridge)
    fitted = x @ weights + bias
    # The fitted values (the projection) are unique even when the weights are not.
    np.testing.assert_allclose(np.asarray(probe.predict(x)), fitted, rtol=1e-7, atol=1e-8 * np.abs(y).max())
    if ridge > 0 or (np.linalg.matrix_rank(x - x.mean(axis=0)) == x.shape[1]):
        np.testing.assert_allclose(np.asarray(probe.weights), weights, rtol=1e-6, atol=1e-8 * np.abs(weights).max())

    x_new, y_new = rng.standard_normal((50, x.shape[1])), rng.standard_normal((50, k))
    score = evaluate_probe(probe, x_new, y_new)
    predicted = x_new @ np.asarray(probe.weights) + np.asarray(probe.bias)
    np.testing.assert_allclose(np.asarray(score.r2_per_dim), r2_score(y_new, predicted, multioutput="raw_values"),
                               rtol=1e-9)
    assert float(score.r2) == pytest.approx(r2_score(y_new, predicted, multioutput="variance_weighted"), rel=1e-9)
    assert float(score.mse) == pytest.approx(mean_squared_error(y_new, predicted), rel=1e-9)


def test_constant_target_dimension_has_no_r2():
    x, y, _, _ = planted(0, 200, 3, 2, 0.1)
    y = np.hstack([y, np.full((200, 1), 0.25)])
    score = evaluate_probe(fit_probe(x, y), x, y)
    assert np.isnan(score.r2_per_dim[2]) and np.all(np.isfinite(score.r2_per_dim[:2]))
    sse = ((y[:, :2] - np.asarray(fit_probe(x, y).predict(x))[:, :2]) ** 2).sum()
    assert float(score.r2) == pytest.approx(1 - sse / ((y[:, :2] - y[:, :2].mean(axis=0)) ** 2).sum(), rel=1e-9)


def layered(seed: int, sequences: int, length: int, d: int, k: int, noise: float):
    """(residuals [3, B, L, D], targets [B, L, K], embed [K, D]) with iid rows: targets standard normal;
    layer 0 noise, layer 1 = targets @ embed + noise * N(0, 1), layer 2 = layer 1 + N(0, 1)."""
    rng = np.random.default_rng(seed)
    targets = rng.standard_normal((sequences, length, k))
    embed = rng.standard_normal((k, d))
    signal = targets @ embed + noise * rng.standard_normal((sequences, length, d))
    residuals = np.stack([rng.standard_normal((sequences, length, d)), signal,
                          signal + rng.standard_normal((sequences, length, d))])
    return residuals, targets, embed


@settings(max_examples=FEW)
@given(seed=st.integers(0, 2**31 - 1), d=st.sampled_from([2, 12]), k=st.sampled_from([1, 3]))
def test_probe_layers_matches_a_numpy_refit_on_its_split(seed, d, k):
    residuals, targets, _ = layered(seed, 60, 5, d, k, noise=0.5)
    key = jax.random.key(seed)
    result = probe_layers(residuals, targets, key=key, train_fraction=0.7, ridge=0.1)
    train, test = split_sequences(60, 0.7, jax.random.fold_in(key, 0))
    assert len(train) == 42 and len(test) == 18 and not set(train) & set(test)
    for layer in range(3):
        x_tr, y_tr = residuals[layer, train].reshape(-1, d), targets[train].reshape(-1, k)
        x_te, y_te = residuals[layer, test].reshape(-1, d), targets[test].reshape(-1, k)
        weights, bias = numpy_fit(x_tr, y_tr, 0.1)
        np.testing.assert_allclose(np.asarray(result.probes.weights[layer]), weights, rtol=1e-6, atol=1e-9)
        held_out = r2_score(y_te, x_te @ weights + bias, multioutput="variance_weighted")
        assert float(result.test.r2[layer]) == pytest.approx(held_out, rel=1e-8, abs=1e-10)
        assert float(result.train.mse[layer]) == pytest.approx(mean_squared_error(y_tr, x_tr @ weights + bias), rel=1e-8)


def control_bounds(x_train, y_train, x_test, y_test, z: float) -> tuple[float, float]:
    """Bounds on the held-out R^2 of a least-squares probe fitted to training targets that carry no
    information about the training features (permuted). Given the features, its weights w_k are about
    N(0, s_k^2 (Xc^T Xc)^-1) (s_k^2 the variance of target k), so the cross term 2 sum_k w_k . b_k with
    the held-out covariances b_k = Xc_test^T yc_test,k is Gaussian with the variance used here; the
    squared prediction adds about (D + 1) / n_train + 1 / n_test relative error (three times bounds it)."""
    xc = x_train - x_train.mean(axis=0)
    inverse = np.linalg.inv(xc.T @ xc)
    b = (x_test - x_test.mean(axis=0)).T @ (y_test - y_test.mean(axis=0))
    sst = ((y_test - y_test.mean(axis=0)) ** 2).sum()
    cross_sd = 2 * np.sqrt(sum(y_train[:, k].var() * b[:, k] @ inverse @ b[:, k] for k in range(b.shape[1]))) / sst
    excess = 3 * ((x_train.shape[1] + 1) / len(x_train) + 1 / len(x_test))
    return -z * cross_sd - excess, z * cross_sd


@settings(max_examples=FEW)
@given(seed=st.integers(0, 2**31 - 1), d=st.sampled_from([2, 16]))  # few shapes: one compilation each
def test_shuffled_control_scores_about_zero_on_held_out_data(seed, d):
    sequences, length, k = 500, 10, 2
    residuals, targets, embed = layered(seed, sequences, length, d, k, noise=0.3)
    key = jax.random.key(seed)
    real = probe_layers(residuals, targets, key=key)
    control = shuffled_control(residuals, targets, key=key)
    train, test = split_sequences(sequences, 0.8, jax.random.fold_in(key, 0))
    for layer in range(3):
        low, high = control_bounds(residuals[layer, train].reshape(-1, d), targets[train].reshape(-1, k),
                                   residuals[layer, test].reshape(-1, d), targets[test].reshape(-1, k), z=5.0)
        assert low < float(control.test.r2[layer]) < high, (layer, low, high)
        assert high < 0.2  # "about zero": 5 sigma of a chance fit is small at these sizes
    # The same features decode the real targets as well as the best linear map can: with y ~ N(0, I_k)
    # and x = y E + 0.3 n, population R^2 = tr(E (E^T E + 0.09 I)^-1 E^T) / k (layer 1), within the
    # sampling bounds of test_planted_linear_map_is_recovered.
    population = np.trace(embed @ np.linalg.solve(embed.T @ embed + 0.09 * np.eye(d), embed.T)) / k
    n_train, n_test = len(train) * length, len(test) * length
    relative = 2 * Z * np.sqrt(2 / n_test) + 3 * (d + 1) / n_train
    assert abs(float(real.test.r2[1]) - population) < (1 - population) * relative
    assert np.all(np.asarray(control.test.r2) < np.asarray(real.test.r2[1]))


@settings(max_examples=FEW)
@given(seed=st.integers(0, 2**31 - 1))
def test_residual_position_t_is_probed_against_the_belief_after_t_tokens(seed):
    """Synthetic residual streams: layer 1 holds (a random linear image of) the exact belief after t
    tokens at position t, the alignment of transformer.py; layer 2 holds the belief one token later,
    which position t has not seen. Only layer 1 is decoded perfectly."""
    process = mess3(0.05, 0.85)
    sequences, length, width = 300, 10, 16
    tokens = process.sample(jax.random.key(seed), sequences, length)
    beliefs = np.asarray(process.belief_states(tokens), np.float64)  # [B, L + 1, 3], entry 0 the prior
    targets = align_targets(beliefs)
    assert targets.shape == (sequences, length, 3)
    np.testing.assert_array_equal(np.asarray(targets[:, 0]), np.broadcast_to(beliefs[0, 0], (sequences, 3)))
    rng = np.random.default_rng(seed)
    embed = rng.standard_normal((3, width))
    residuals = np.stack([rng.standard_normal((sequences, length, width)), beliefs[:, :-1] @ embed, beliefs[:, 1:] @ embed])
    result = probe_layers(residuals, targets, key=jax.random.key(seed))
    assert float(result.test.r2[1]) == pytest.approx(1.0, abs=1e-9)
    assert float(result.test.mse[1]) < 1e-18
    assert float(result.test.r2[2]) < 0.99  # the next token moves the belief by more than a linear map of it


def test_bad_inputs_raise_value_errors():
    x, y, _, _ = planted(0, 20, 3, 2, 0.1)
    with pytest.raises(ValueError, match="features"):
        fit_probe(x[:, :, None], y)
    with pytest.raises(ValueError, match="same number of examples"):
        fit_probe(x[:10], y)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_probe(bad, y)
    with pytest.raises(ValueError, match="targets"):
        fit_probe(x, np.where(y > 0, np.inf, y))
    for ridge in (-1.0, np.inf, True, "0"):
        with pytest.raises(ValueError, match="ridge"):
            fit_probe(x, y, ridge)
    with pytest.raises(ValueError, match="probe maps"):
        evaluate_probe(fit_probe(x, y), x[:, :2], y)
    with pytest.raises(ValueError, match="Probe"):
        evaluate_probe((np.zeros((3, 2)), np.zeros(2)), x, y)
    residuals, targets, _ = layered(0, 10, 4, 3, 2, 0.1)
    with pytest.raises(ValueError, match="align_targets"):
        probe_layers(residuals, targets[:, :3], key=jax.random.key(0))
    with pytest.raises(ValueError, match="residuals"):
        probe_layers(residuals[0], targets, key=jax.random.key(0))
    for fraction in (0.0, 1.0, 0.01, 0.99):
        with pytest.raises(ValueError, match="train_fraction"):
            shuffled_control(residuals, targets, key=jax.random.key(0), train_fraction=fraction)
    with pytest.raises(ValueError, match="latent"):
        align_targets(targets[0])
    assert isinstance(fit_probe(x, y), Probe)
