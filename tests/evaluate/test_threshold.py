"""Operating-point selection (validation only) against pROC's Youden threshold."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.errors import DataError
from medlens.evaluate import choose_threshold, roc_coordinates, sensitivity_score, specificity_score


def test_youden_threshold_matches_proc_for_s100b(asah, proc_reference):
    ref = proc_reference["youden_s100b"]
    y, s = asah["outcome"].to_numpy(), asah["s100b"].to_numpy()
    t = choose_threshold(y, s, method="youden")
    assert t == pytest.approx(ref["threshold"], abs=1e-4)
    pred = (s >= t).astype(int)
    assert sensitivity_score(y, pred) == pytest.approx(ref["sensitivity"], abs=1e-4)
    assert specificity_score(y, pred) == pytest.approx(ref["specificity"], abs=1e-4)


def test_roc_coordinates_agree_with_metrics(make_binary):
    y, s = make_binary(60, seed=1, ties=True)
    roc = roc_coordinates(y, s)
    assert roc.sensitivity[0] == 1.0 and roc.specificity[-1] == 1.0
    for t, se, sp in zip(roc.thresholds[1:-1], roc.sensitivity[1:-1], roc.specificity[1:-1]):
        pred = (s >= t).astype(int)
        assert se == pytest.approx(sensitivity_score(y, pred), abs=1e-12)
        assert sp == pytest.approx(specificity_score(y, pred), abs=1e-12)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_sensitivity_target_is_met_with_best_specificity(make_binary, target):
    y, s = make_binary(400, seed=2)
    t = choose_threshold(y, s, method="sensitivity", target=target)
    assert sensitivity_score(y, (s >= t).astype(int)) >= target
    higher = np.unique(s[s > t])
    if higher.size:  # the next stricter threshold must miss the target
        assert sensitivity_score(y, (s >= higher[0] + 1e-12).astype(int)) < target


def test_specificity_target_is_met(make_binary):
    y, s = make_binary(400, seed=3)
    t = choose_threshold(y, s, method="specificity", target=0.9)
    assert specificity_score(y, (s >= t).astype(int)) >= 0.9


def test_unknown_method_suggests_the_right_one():
    with pytest.raises(DataError, match="Did you mean 'youden'"):
        choose_threshold([0, 1], [0.1, 0.9], method="yuoden")
