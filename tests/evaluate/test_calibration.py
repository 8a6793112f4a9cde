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
