"""Point metrics against scikit-learn on random and degenerate inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.metrics as skm

from medlens.errors import DataError
from medlens.evaluate import (
    UndefinedMetricWarning,
    accuracy_score,
    auc_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    npv_score,
    ppv_score,
    sensitivity_score,
    specificity_score,
    youden_j_score,
)

# (name, our score metric, scikit-learn reference)
RANKING = [
    ("auc", auc_score, skm.roc_auc_score),
    ("ap", average_precision_score, skm.average_precision_score),
]


def _npv(y, p, sample_weight=None):
    return skm.precision_score(1 - np.asarray(y), 1 - np.asarray(p), sample_weight=sample_weight, zero_division=np.nan)


def _spec(y, p, sample_weight=None):
    return skm.recall_score(1 - np.asarray(y), 1 - np.asarray(p), sample_weight=sample_weight)


def _youden(y, p, sample_weight=None):
    return skm.recall_score(y, p, sample_weight=sample_weight) + _spec(y, p, sample_weight) - 1


TABLE = [
    ("sensitivity", sensitivity_score, skm.recall_score),
    ("specificity", specificity_score, _spec),
    ("ppv", ppv_score, lambda y, p, sample_weight=None: skm.precision_score(y, p, sample_weight=sample_weight, zero_division=np.nan)),
    ("npv", npv_score, _npv),
    ("f1", f1_score, skm.f1_score),
    ("accuracy", accuracy_score, skm.accuracy_score),
    ("balanced_accuracy", balanced_accuracy_score, skm.balanced_accuracy_score),
    ("youden", youden_j_score, _youden),
]

CASES = [
    pytest.param(dict(n=400, seed=1), id="random"),
    pytest.param(dict(n=150, seed=2, ties=True), id="ties"),
    pytest.param(dict(n=5, seed=3), id="tiny"),
    pytest.param(dict(n=500, seed=4, prevalence=0.03), id="rare"),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name,ours,ref", RANKING, ids=[r[0] for r in RANKING])
def test_ranking_metrics_match_sklearn(case, name, ours, ref, make_binary):
    y, s = make_binary(**case)
    assert ours(y, s) == pytest.approx(ref(y, s), abs=1e-12)


@pytest.mark.parametrize("name,ours,ref", RANKING, ids=[r[0] for r in RANKING])
def test_ranking_metrics_with_sample_weight(name, ours, ref, make_binary):
    y, s = make_binary(200, seed=5, ties=True)
    w = np.random.default_rng(0).integers(1, 5, size=y.size).astype(float)
    assert ours(y, s, sample_weight=w) == pytest.approx(ref(y, s, sample_weight=w), abs=1e-12)


def test_all_tied_scores_give_auc_one_half():
    y = np.array([0, 1, 0, 1, 1])
    assert auc_score(y, np.full(5, 0.3)) == pytest.approx(skm.roc_auc_score(y, np.full(5, 0.3)), abs=1e-12)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name,ours,ref", TABLE, ids=[t[0] for t in TABLE])
def test_table_metrics_match_sklearn(case, name, ours, ref, make_binary):
    y, s = make_binary(**case)
    pred = (s >= 0.5).astype(int)
    if (name == "npv" and pred.all()) or (name == "ppv" and not pred.any()):
        # zero denominator: undefined, reported as nan with a warning (sklearn says 0.0)
        from medlens.evaluate import UndefinedMetricWarning

        with pytest.warns(UndefinedMetricWarning):
            assert np.isnan(ours(y, pred))
        return
    w = np.random.default_rng(1).integers(1, 4, size=y.size).astype(float)
    assert ours(y, pred) == pytest.approx(ref(y, pred), abs=1e-12)
    assert ours(y, pred, sample_weight=w) == pytest.approx(ref(y, pred, sample_weight=w), abs=1e-12)


def test_multiclass_one_vs_rest_macro_matches_sklearn():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert auc_score(y, proba) == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-12)
    assert average_precision_score(y, proba) == pytest.approx(skm.average_precision_score(y, proba), abs=1e-12)
    pred = proba.argmax(1)
    assert accuracy_score(y, pred) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert balanced_accuracy_score(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)


def test_multilabel_macro_matches_sklearn():
    rng = np.random.default_rng(8)
    y = (rng.random((200, 3)) < [0.2, 0.5, 0.7]).astype(int)
    s = y + rng.normal(size=(200, 3))
    assert auc_score(y, s) == pytest.approx(skm.roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert average_precision_score(y, s) == pytest.approx(skm.average_precision_score(y, s, average="macro"), abs=1e-12)


@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [1, 1, 1]], ids=["all-negative", "all-positive"])
def test_auc_one_class_raises_clear_error(labels):
    with pytest.raises(DataError, match="both positive and negative"):
        auc_score(labels, np.linspace(0, 1, len(labels)))


def test_multiclass_missing_class_raises():
    proba = np.full((4, 3), 1 / 3)
    with pytest.raises(DataError, match="class 2"):
        auc_score([0, 1, 0, 1], proba)


def test_bad_labels_and_scores_raise():
    with pytest.raises(DataError, match="binary labels 0/1"):
        auc_score([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="NaN"):
        auc_score([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(DataError, match="3 samples but y_true has 2"):
        sensitivity_score([0, 1], [0, 1, 1])


def test_undefined_ppv_warns_and_returns_nan():
    with pytest.warns(UndefinedMetricWarning, match="PPV"):
        value = ppv_score([0, 1, 1], [0, 0, 0])
    assert np.isnan(value)


def test_sensitivity_without_positives_raises():
    with pytest.raises(DataError, match="positive"):
        sensitivity_score([0, 0, 0], [0, 1, 0])


@pytest.mark.parametrize("case", CASES)
def test_confusion_matrix_matches_sklearn(case, make_binary):
    y, s = make_binary(**case)
    pred = (s >= 0.5).astype(int)
    expected = skm.confusion_matrix(y, pred, labels=[0, 1])
    np.testing.assert_array_equal(confusion_matrix(y, pred), expected)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert tp == np.sum((y == 1) & (pred == 1)) and fp == np.sum((y == 0) & (pred == 1))


def test_confusion_matrix_is_2x2_with_one_class_and_kxk_for_multiclass():
    assert confusion_matrix([0, 0, 0], [0, 0, 0]).shape == (2, 2)
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    np.testing.assert_array_equal(confusion_matrix(y, p), skm.confusion_matrix(y, p, labels=range(4)))


def test_metrics_do_not_warn_on_well_defined_input(make_binary):
    y, s = make_binary(100, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _, metric, _ in TABLE:
            metric(y, (s >= 0.5).astype(int))
