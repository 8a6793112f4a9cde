"""Wilson intervals and the (stratified, clustered) bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from medlens.errors import DataError
from medlens.evaluate import (
    BootstrapWarning,
    Estimate,
    auc_score,
    average_precision_score,
    bootstrap_ci,
    bootstrap_distribution,
    f1_score,
    ppv_score,
    wilson_ci,
)
from medlens.evaluate import ci as ci_module


def _wilson_formula(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_wilson_equals_the_closed_form():
    rng = np.random.default_rng(0)
    pairs = {(k, n) for n in [*range(1, 101), 250, 999, 1000, 12345, 10**6]
             for k in (0, 1, 2, n // 3, n // 2, n - 2, n - 1, n) if 0 <= k <= n}
    pairs |= {(int(rng.integers(0, n + 1)), n) for n in range(1, 5000, 7)}
    for confidence in (0.5, 0.9, 0.95, 0.99, 0.999):
        for k, n in sorted(pairs):
            e = wilson_ci(k, n, confidence=confidence)
            low, high = _wilson_formula(k, n, confidence)
            assert e.value == k / n
            # the closed form leaves rounding residue (~1e-18) at the exact bounds 0 and 1
            assert e.low == 0.0 if k == 0 else e.low == pytest.approx(low, rel=1e-12)
            assert e.high == 1.0 if k == n else e.high == pytest.approx(high, rel=1e-12)


@pytest.mark.parametrize("k,n,low,high", [  # Newcombe, Stat Med 1998;17:857-872, Table II, method 3 (score)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_reproduces_the_published_intervals(k, n, low, high):
    e = wilson_ci(k, n)
    assert (round(e.low, 4), round(e.high, 4)) == (low, high)


def test_wilson_rejects_impossible_counts_and_handles_zero_total():
    with pytest.raises(DataError):
        wilson_ci(5, 3)
    with pytest.raises(DataError, match="confidence"):
        wilson_ci(0, 0, confidence=1.0)
    e = wilson_ci(0, 0)
    assert np.isnan(e.value) and np.isnan(e.low) and np.isnan(e.high)


def test_estimate_is_frozen_and_serialises():
    e = Estimate(0.7, 0.6, 0.8)
    assert e.to_dict() == {"value": 0.7, "low": 0.6, "high": 0.8}
    with pytest.raises(AttributeError):
        e.value = 1.0  # type: ignore[misc]


def test_bootstrap_is_seeded_and_contains_point_estimate(make_binary):
    y, s = make_binary(300, seed=1)
    a = bootstrap_ci(auc_score, y, s, seed=3)
    b = bootstrap_ci(auc_score, y, s, seed=3)
    c = bootstrap_ci(auc_score, y, s, seed=4)
    assert a == b
    assert a != c
    assert a.low < a.value < a.high
    assert a.value == auc_score(y, s)


def test_bootstrap_does_not_depend_on_block_size(make_binary, monkeypatch):
    y, s = make_binary(200, seed=2)
    full = bootstrap_distribution({"auc": (auc_score, s)}, y, n_resamples=300, seed=0)["auc"]
    monkeypatch.setattr(ci_module, "_BLOCK_CELLS", 200 * 7)
    small = bootstrap_distribution({"auc": (auc_score, s)}, y, n_resamples=300, seed=0)["auc"]
    np.testing.assert_array_equal(full, small)


@pytest.mark.parametrize("metric,kind", [(auc_score, "score"), (average_precision_score, "score"), (f1_score, "label")])
def test_vectorised_and_generic_paths_agree(make_binary, metric, kind):
    y, s = make_binary(150, seed=3, ties=True)
    x = s if kind == "score" else (s >= 0.5).astype(int)
    fast = bootstrap_distribution({"m": (metric, x)}, y, n_resamples=200, seed=9)["m"]
    slow = bootstrap_distribution({"m": (lambda a, b: metric(a, b), x)}, y, n_resamples=200, seed=9)["m"]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_stratified_bootstrap_keeps_class_counts(make_binary):
    y, _ = make_binary(90, seed=4)
    for W in ci_module._resample_blocks(y, groups=None, n_resamples=50, seed=0, stratify=True):
        np.testing.assert_array_equal(W @ y, np.full(W.shape[0], y.sum()))
        np.testing.assert_array_equal(W.sum(1), np.full(W.shape[0], y.size))


def test_undefined_replicates_are_counted_not_raised():
    # One positive and a classifier that predicts it only sometimes: PPV is often 0/0.
    y = np.array([1] + [0] * 9)
    pred = np.array([1] + [0] * 9)
    with pytest.warns(BootstrapWarning, match="undefined"):
        e = bootstrap_ci(ppv_score, y, pred, n_resamples=200, seed=0, stratify=False)
    assert e.value == 1.0 and np.isfinite(e.low)


def test_unstratified_one_class_resample_is_nan_for_auc():
    y = np.array([0] * 5 + [1])
    s = np.arange(6.0)
    reps = bootstrap_distribution({"auc": (auc_score, s)}, y, n_resamples=100, seed=1, stratify=False)["auc"]
    assert np.isnan(reps).any() and np.isfinite(reps).any()


def test_cluster_bootstrap_resamples_patients(make_binary):
    # Every patient contributes three identical images. A patient-level bootstrap of the
    # tripled data must equal the row bootstrap of one image per patient; a naive row
    # bootstrap of the tripled data pretends to 3x the sample and is clearly narrower.
    y, s = make_binary(120, seed=5)
    patients = np.repeat(np.arange(y.size), 3)
    y3, s3 = y[patients], s[patients]
    dedup = bootstrap_ci(auc_score, y, s, seed=11)
    cluster = bootstrap_ci(auc_score, y3, s3, groups=patients, seed=11)
    naive = bootstrap_ci(auc_score, y3, s3, seed=11)
    assert (cluster.low, cluster.high) == pytest.approx((dedup.low, dedup.high), abs=1e-12)
    assert (naive.high - naive.low) < 0.8 * (cluster.high - cluster.low)


def test_cluster_bootstrap_moves_a_patients_images_together():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4"])
    y = np.array([0, 0, 1, 0, 0, 0, 1])
    for W in ci_module._resample_blocks(y, groups=groups, n_resamples=100, seed=2, stratify=True):
        assert np.all(W[:, 0] == W[:, 1]) and np.all(W[:, 3] == W[:, 5])
        np.testing.assert_array_equal(W[:, [2, 6]].sum(1) > 0, True)  # 2 positive patients kept


def test_groups_length_is_checked(make_binary):
    y, s = make_binary(20, seed=6)
    with pytest.raises(DataError, match="groups"):
        bootstrap_ci(auc_score, y, s, groups=np.arange(5))
