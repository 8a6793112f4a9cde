"""Invariances every metric must satisfy (sklearn's test_common pattern)."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.evaluate import (
    accuracy_score,
    auc_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    npv_score,
    ppv_score,
    sensitivity_score,
    specificity_score,
    youden_j_score,
)

SCORE_METRICS = [auc_score, average_precision_score]
LABEL_METRICS = [sensitivity_score, specificity_score, ppv_score, npv_score, f1_score,
                 accuracy_score, balanced_accuracy_score, youden_j_score]
ALL = [(m, "score") for m in SCORE_METRICS] + [(m, "label") for m in LABEL_METRICS]
IDS = [m.__name__ for m, _ in ALL]


@pytest.fixture
def inputs(make_binary):
    y, s = make_binary(120, seed=21, ties=True)
    return lambda kind: (y, s if kind == "score" else (s >= 0.5).astype(int))


@pytest.mark.parametrize("metric,kind", ALL, ids=IDS)
def test_invariant_to_sample_order(metric, kind, inputs):
    y, x = inputs(kind)
    perm = np.random.default_rng(0).permutation(y.size)
    assert metric(y[perm], x[perm]) == pytest.approx(metric(y, x), abs=1e-12)


@pytest.mark.parametrize("metric,kind", ALL, ids=IDS)
def test_lists_bools_and_arrays_agree(metric, kind, inputs):
    y, x = inputs(kind)
    expected = metric(y, x)
    assert metric(y.tolist(), x.tolist()) == pytest.approx(expected, abs=1e-12)
    assert metric(y.astype(bool), x if kind == "score" else x.astype(bool)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("metric,kind", ALL, ids=IDS)
def test_integer_weights_equal_repeated_rows(metric, kind, inputs):
    y, x = inputs(kind)
    w = np.random.default_rng(2).integers(0, 4, size=y.size)
    w[:2] = 1
    rep = np.repeat(np.arange(y.size), w)
    assert metric(y, x, sample_weight=w) == pytest.approx(metric(y[rep], x[rep]), abs=1e-12)


@pytest.mark.parametrize("metric", SCORE_METRICS, ids=[m.__name__ for m in SCORE_METRICS])
def test_ranking_metrics_invariant_to_monotone_transform(metric, inputs):
    y, s = inputs("score")
    assert metric(y, np.exp(s) * 3 + 1) == pytest.approx(metric(y, s), abs=1e-12)


@pytest.mark.parametrize("metric,kind", ALL, ids=IDS)
def test_values_lie_in_range(metric, kind, inputs):
    y, x = inputs(kind)
    low = -1.0 if metric is youden_j_score else 0.0
    assert low <= metric(y, x) <= 1.0
