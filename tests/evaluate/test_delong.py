"""DeLong statistics against R pROC 1.18 (shared/reference/pROC), and McNemar."""

from __future__ import annotations


import numpy as np
import pytest
from scipy import stats

from medlens.errors import DataError
from medlens.evaluate import (
    auc_score,
    delong_ci,
    delong_covariance,
    delong_test,
    delong_unpaired_test,
    delong_variance,
    mcnemar_test,
)

MARKERS = ["s100b", "wfns", "ndka"]
PAIRS = [("s100b", "wfns"), ("s100b", "ndka"), ("wfns", "ndka")]


@pytest.mark.parametrize("marker", MARKERS)
def test_auc_ci_and_variance_match_proc_on_asah(asah, proc_reference, marker):
    y, s = asah["outcome"], asah[marker]
    ci = delong_ci(y, s)
    assert ci.value == pytest.approx(proc_reference[f"auc_{marker}"], abs=1e-4)
    assert auc_score(y, s) == pytest.approx(proc_reference[f"auc_{marker}"], abs=1e-4)
    assert [ci.low, ci.high] == pytest.approx(proc_reference[f"ci_delong_{marker}"], abs=1e-4)
    assert delong_variance(y, s) == pytest.approx(proc_reference[f"var_delong_{marker}"], abs=1e-4, rel=1e-4)


@pytest.mark.parametrize("a,b", PAIRS)
def test_paired_and_unpaired_tests_match_proc_on_asah(asah, proc_reference, a, b):
    y = asah["outcome"]
    paired = delong_test(y, asah[a], asah[b])
    ref = proc_reference[f"delong_paired_{a}_vs_{b}"]
    assert paired.statistic == pytest.approx(ref["z"], abs=1e-4)
    assert paired.p_value == pytest.approx(ref["p"], abs=1e-4)
    unpaired = delong_unpaired_test(y, asah[a], y, asah[b])
    ref = proc_reference[f"delong_unpaired_{a}_vs_{b}"]
    assert unpaired.statistic == pytest.approx(ref["d"], abs=1e-4)
    assert unpaired.p_value == pytest.approx(ref["p"], abs=1e-4)
    cov = delong_covariance(y, asah[a], asah[b])
    assert cov == pytest.approx(proc_reference[f"cov_delong_{a}_{b}"], abs=1e-6)


@pytest.mark.parametrize("case", ["extra_imbalanced_300", "extra_ties_80", "extra_rare_1500", "extra_tiny_30"])
def test_extra_cases_match_proc(proc_extra, case):
    data, ref = proc_extra[case]
    y, a, b = data["y"], data["a"], data["b"]
    for col, key in ((a, "a"), (b, "b")):
        ci = delong_ci(y, col)
        assert ci.value == pytest.approx(ref[f"auc_{key}"], abs=1e-4)
        assert [ci.low, ci.high] == pytest.approx(ref[f"ci_{key}"], abs=1e-4)
    t = delong_test(y, a, b)
    assert t.statistic == pytest.approx(ref["z"], abs=1e-4)
    assert t.p_value == pytest.approx(ref["p"], abs=1e-4)


def test_paired_test_is_antisymmetric_and_zero_for_identical_scores(make_binary):
    y, s = make_binary(100, seed=3)
    s2 = s + np.random.default_rng(1).normal(size=s.size)
    ab, ba = delong_test(y, s, s2), delong_test(y, s2, s)
    assert ab.statistic == pytest.approx(-ba.statistic, abs=1e-12)
    assert ab.p_value == pytest.approx(ba.p_value, abs=1e-12)
    same = delong_test(y, s, s)
    assert same.statistic == 0.0 and same.p_value == 1.0


def test_covariance_of_a_score_with_itself_is_its_variance(make_binary):
    y, s = make_binary(80, seed=4, ties=True)
    assert delong_covariance(y, s, s) == pytest.approx(delong_variance(y, s), abs=1e-15)


def test_delong_needs_two_of_each_class():
    with pytest.raises(DataError, match="at least 2"):
        delong_ci([0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(DataError, match="both positive and negative"):
        delong_ci([1, 1, 1], [0.1, 0.2, 0.3])


def test_mcnemar_matches_its_definition():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 200)
    pa = np.where(rng.random(200) < 0.8, y, 1 - y)
    pb = np.where(rng.random(200) < 0.7, y, 1 - y)
    b = int(np.sum((pa == y) & (pb != y)))
    c = int(np.sum((pa != y) & (pb == y)))
    res = mcnemar_test(y, pa, pb, correction=False)
    assert (res["b"], res["c"]) == (b, c)
    assert res["p_value"] == pytest.approx(stats.chi2.sf((b - c) ** 2 / (b + c), 1), abs=1e-12)
    corrected = mcnemar_test(y, pa, pb)
    assert corrected["p_value"] > res["p_value"]
    exact = mcnemar_test(y, pa, pb, exact=True)
    assert exact["p_value"] == pytest.approx(stats.binomtest(min(b, c), b + c).pvalue, abs=1e-12)
    assert mcnemar_test(y, pa, pa)["p_value"] == 1.0


def test_unpaired_test_on_independent_sets_has_nominal_type_one_error():
    # Two independent samples from the same population: p < 0.05 in about 5% of trials.
    rng = np.random.default_rng(6)
    rejections = []
    for _ in range(200):
        ys = [rng.integers(0, 2, 120) for _ in range(2)]
        ss = [y + rng.normal(size=y.size) for y in ys]
        rejections.append(delong_unpaired_test(ys[0], ss[0], ys[1], ss[1]).p_value < 0.05)
    assert 0.0 < np.mean(rejections) < 0.12
