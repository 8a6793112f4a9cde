"""One-call summaries used by the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.errors import DataError
from medlens.evaluate import (
    BINARY_METRICS,
    Estimate,
    UndefinedMetricWarning,
    auc_score,
    binary_summary,
    compare_binary,
    delong_ci,
    delong_test,
    delong_unpaired_test,
    external_difference,
    multiclass_summary,
    wilson_ci,
)

KEYS = ["auc", "auc_pr", "sensitivity", "specificity", "ppv", "npv", "f1", "accuracy",
        "balanced_accuracy", "youden_j"]


def test_binary_summary_keys_values_and_methods(make_binary):
    y, s = make_binary(250, seed=1)
    out = binary_summary(y, s, threshold=0.5, n_boot=500, seed=0)
    assert list(out) == KEYS
    pred = (s >= 0.5).astype(int)
    for key, (metric, thr) in BINARY_METRICS.items():
        assert isinstance(out[key], Estimate)
        assert out[key].value == pytest.approx(metric(y, pred if thr else s), abs=1e-12)
        assert out[key].low <= out[key].value <= out[key].high
    assert out["auc"] == delong_ci(y, s)
    tp = int(np.sum((y == 1) & (pred == 1)))
    assert out["sensitivity"] == wilson_ci(tp, int(y.sum()))
    assert binary_summary(y, s, threshold=0.5, n_boot=500, seed=0) == out


def test_binary_summary_matches_proc_auc_ci(asah, proc_reference):
    out = binary_summary(asah["outcome"], asah["s100b"], threshold=0.205, n_boot=200)
    assert [out["auc"].low, out["auc"].high] == pytest.approx(proc_reference["ci_delong_s100b"], abs=1e-4)


def test_binary_summary_with_repeated_patients_uses_cluster_bootstrap(make_binary):
    y, s = make_binary(100, seed=2)
    patients = np.repeat(np.arange(100), 2)
    naive = binary_summary(y[patients], s[patients], threshold=0.5, n_boot=500)
    cluster = binary_summary(y[patients], s[patients], threshold=0.5, groups=patients, n_boot=500)
    for key in KEYS:
        assert cluster[key].value == pytest.approx(naive[key].value, abs=1e-12)
    for key in ("auc", "sensitivity", "f1"):
        assert (cluster[key].high - cluster[key].low) > (naive[key].high - naive[key].low)
    unique_ids = binary_summary(y, s, threshold=0.5, groups=np.arange(100), n_boot=500)
    assert unique_ids == binary_summary(y, s, threshold=0.5, n_boot=500)


def test_binary_summary_tiny_and_undefined_inputs():
    y = np.array([0, 0, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.9])
    with pytest.warns(UndefinedMetricWarning, match="ppv"):
        out = binary_summary(y, s, threshold=0.95, n_boot=200)  # nothing predicted positive
    assert np.isnan(out["ppv"].value)
    assert out["auc"].value == pytest.approx(auc_score(y, s), abs=1e-12)
    with pytest.raises(DataError, match="both positive and negative"):
        binary_summary([1, 1, 1], [0.2, 0.5, 0.9], threshold=0.5)


def test_multiclass_summary(make_binary):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet(np.ones(3), 300) + 0.8 * np.eye(3)[y]
    out = multiclass_summary(y, proba, n_boot=300)
    assert list(out) == ["auc", "accuracy", "balanced_accuracy"]
    assert out["auc"].value == pytest.approx(auc_score(y, proba), abs=1e-12)
    assert out["accuracy"] == wilson_ci(int(np.sum(proba.argmax(1) == y)), 300)
    for e in out.values():
        assert e.low <= e.value <= e.high
    with pytest.raises(DataError, match="class"):
        multiclass_summary(np.zeros(10, dtype=int), rng.random((10, 3)))


def test_compare_binary_wraps_delong(make_binary):
    y, s = make_binary(200, seed=4)
    s2 = 0.5 * s + np.random.default_rng(1).normal(size=s.size)
    out = compare_binary(y, s, s2, threshold_a=0.5, threshold_b=0.2)
    ref = delong_test(y, s, s2)
    assert (out["auc_a"], out["auc_b"], out["z"], out["p"]) == (ref.auc_a, ref.auc_b, ref.statistic, ref.p_value)
    assert out["difference"] == pytest.approx(out["auc_a"] - out["auc_b"], abs=1e-15)
    assert 0.0 <= out["mcnemar_p"] <= 1.0
    unpaired = compare_binary(y, s, s2, paired=False)
    assert unpaired["p"] == delong_unpaired_test(y, s, y, s2).p_value and "df" in unpaired


def test_external_difference(make_binary):
    y1, s1 = make_binary(300, seed=5, signal=1.5)
    y2, s2 = make_binary(300, seed=6, signal=0.5)
    drop = external_difference(y1, s1, y2, s2, n_boot=500)
    assert drop.value == pytest.approx(auc_score(y2, s2) - auc_score(y1, s1), abs=1e-12)
    assert drop.low <= drop.value <= drop.high < 0  # a real drop is detected
    same = external_difference(y1, s1, y1, s1, n_boot=500)
    assert same.low < 0 < same.high
    with pytest.raises(DataError, match="threshold"):
        external_difference(y1, s1, y2, s2, metric="sensitivity")
    with pytest.raises(DataError, match="Did you mean 'auc_pr'"):
        external_difference(y1, s1, y2, s2, metric="auc-pr")
