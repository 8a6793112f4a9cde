"""Calibration metrics and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss as sk_brier
from sklearn.metrics import log_loss

from medlens.errors import DataError
from medlens.evaluate import (
    apply_temperature,
    brier_score_loss,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)


def _calibrated(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    return (rng.random(n) < p).astype(int), p


def test_brier_matches_sklearn():
    y, p = _calibrated(500, seed=1)
    assert brier_score_loss(y, p) == pytest.approx(sk_brier(y, p), abs=1e-12)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn(strategy):
    y, p = _calibrated(2000, seed=2)
    curve = reliability_curve(y, p, n_bins=8, strategy=strategy)
    frac, mean = calibration_curve(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(curve.fraction_positive, frac, atol=1e-12)
    np.testing.assert_allclose(curve.mean_predicted, mean, atol=1e-12)
    assert curve.counts.sum() == y.size


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_small_when_calibrated_and_large_when_not(strategy):
    y, p = _calibrated()
    good = expected_calibration_error(y, p, strategy=strategy)
    over_confident = expit(4 * (p - 0.5) * 4)  # pushes probabilities toward 0 and 1
    bad = expected_calibration_error(y, over_confident, strategy=strategy)
    assert good < 0.02
    assert bad > 0.1


def test_multiclass_ece_uses_top_label_confidence():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5000, 3)) * 2
    proba = softmax(logits, axis=1)
    y = np.array([rng.choice(3, p=row) for row in proba])
    assert expected_calibration_error(y, proba) < 0.03
    assert expected_calibration_error(y, softmax(logits * 4, axis=1)) > 0.1


def test_temperature_scaling_reduces_nll_binary():
    rng = np.random.default_rng(4)
    true_logit = rng.normal(scale=1.5, size=4000)
    y = (rng.random(4000) < expit(true_logit)).astype(int)
    logits = 3.0 * true_logit  # over-confident model
    t = fit_temperature(y[:2000], logits[:2000])
    assert t == pytest.approx(3.0, rel=0.2)
    before = log_loss(y[2000:], expit(logits[2000:]))
    after = log_loss(y[2000:], apply_temperature(logits[2000:], t))
    assert after < before
    probs_t = fit_temperature(y[:2000], expit(logits[:2000]), kind="probabilities")
    assert probs_t == pytest.approx(t, rel=1e-3)


def test_temperature_scaling_reduces_nll_multiclass():
    rng = np.random.default_rng(5)
    true = rng.normal(size=(3000, 4))
    y = np.array([rng.choice(4, p=row) for row in softmax(true, axis=1)])
    logits = 2.5 * true
    t = fit_temperature(y[:1500], logits[:1500])
    assert t > 1.5
    before = log_loss(y[1500:], softmax(logits[1500:], axis=1), labels=range(4))
    after = log_loss(y[1500:], apply_temperature(logits[1500:], t), labels=range(4))
    assert after < before


def test_calibration_rejects_logits_passed_as_probabilities():
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [-2.0, 3.0])
    with pytest.raises(DataError, match="strategy"):
        reliability_curve([0, 1], [0.2, 0.8], strategy="adaptive")


def test_bias_temperature_recovers_the_generating_map_and_meets_its_score_equations():
    """softmax(z / T + b): fitted on labels drawn from a known (T, b), it finds them; class frequencies are matched."""
    from scipy.special import log_softmax as lsm

    from medlens.evaluate.calibration import calibrate_proba, fit_bias_temperature, fit_calibration

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (30_000, 4))
    t0, b0 = 1.7, np.array([0.0, -0.8, 0.5, 1.2])
    true_p = np.exp(lsm(z / t0 + b0, axis=1))
    y = (true_p.cumsum(1) > rng.random((len(z), 1))).argmax(1)
    t, b = fit_bias_temperature(y, z, kind="logits")
    assert abs(t - t0) < 0.06 and np.max(np.abs(b - b0)) < 0.06
    prm = fit_calibration(y, softmax(z, axis=1), "platt")
    assert prm["method"] == "bias_temperature" and abs(prm["temperature"] - t) < 1e-4
    q = calibrate_proba(softmax(z, axis=1), prm)
    assert np.allclose(q.mean(0), np.bincount(y, minlength=4) / y.size, atol=1e-5)  # intercept score equations
    # the arg-max of a class-weighted model's probabilities over-calls rare classes; the intercepts undo it
    weighted = softmax(np.log(true_p) - np.log(np.bincount(y) / y.size), axis=1)
    fixed = calibrate_proba(weighted, fit_calibration(y, weighted, "platt"))
    assert np.mean(fixed.argmax(1) == y) > np.mean(weighted.argmax(1) == y) + 0.02


def test_in_graph_calibration_equals_calibrate_proba():
    import torch

    from medlens.evaluate.calibration import calibrate_proba, fit_calibration
    from medlens.inference.core import calibration_matrix

    rng = np.random.default_rng(1)
    for k in (2, 3):
        logits = rng.normal(0, 2, (400, k))
        y = rng.integers(0, k, 400)
        for method in ("platt", "temperature", "none"):
            prm = fit_calibration(y, softmax(logits, axis=1), method)
            w, c = calibration_matrix(prm, k)
            ours = torch.softmax(torch.log_softmax(torch.tensor(logits, dtype=torch.float32), 1) @ w + c, 1).numpy()
            assert np.allclose(ours, calibrate_proba(softmax(logits, axis=1), prm), atol=1e-5), (k, method)
