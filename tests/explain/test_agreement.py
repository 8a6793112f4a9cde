"""Per-image agreement scores, the random-map baseline, CIs and the paired test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medlens.errors import DataError
from medlens.explain import agreement as agr


def _region():
    r = np.zeros((16, 16), bool)
    r[4:8, 4:8] = True
    return r


def test_box_region_is_inclusive_and_clipped():
    r = agr.box_region((2, 3, 5, 4), (10, 10))
    assert r.sum() == 4 * 2 and r[3, 2] and r[4, 5] and not r[5, 5]
    assert agr.box_region((-5, -5, 50, 50), (4, 4)).all()


def test_perfect_uniform_and_missed_maps():
    region = _region()
    perfect = region.astype(float)
    uniform = np.ones((16, 16))
    missed = np.zeros((16, 16))
    missed[12:, 12:] = 1
    assert agr.pointing_score(perfect, region) == 1.0 and agr.pointing_score(missed, region) == 0.0
    assert agr.energy_pointing_score(perfect, region) == 1.0
    assert agr.energy_pointing_score(uniform, region) == pytest.approx(region.mean())
    assert agr.energy_pointing_score(missed, region) == 0.0
    iou, dice = agr.overlap_scores(perfect, region, top_percent=100 * region.mean())
    assert iou == pytest.approx(1.0) and dice == pytest.approx(1.0)
    iou, dice = agr.overlap_scores(missed, region, method="otsu")
    assert iou == 0.0 and dice == 0.0


def test_undefined_cases_are_nan_not_errors():
    region = _region()
    assert np.isnan(agr.energy_pointing_score(np.zeros((16, 16)), region))
    assert np.isnan(agr.pointing_score(np.ones((16, 16)), np.zeros((16, 16), bool)))
    with pytest.raises(DataError, match="same shape"):
        agr.energy_pointing_score(np.ones((8, 8)), region)
    with pytest.raises(DataError, match="topk"):
        agr.threshold_map(np.ones((4, 4)), method="mean")


def test_rank_correlation_with_soft_expert_map():
    region = _region()
    soft = agr.soft_expert_map(region)
    assert agr.rank_correlation_score(soft, soft) == pytest.approx(1.0)
    assert agr.rank_correlation_score(-soft, soft) == pytest.approx(-1.0)
    assert agr.rank_correlation_score(np.ones((16, 16)), soft) == 0.0


def test_random_maps_score_the_area_fraction_on_average():
    region = np.zeros((32, 32), bool)
    region[8:24, 8:24] = True
    maps = agr.random_maps(200, 32, grid=(8, 8), seed=1)
    assert maps.shape == (200, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    energy = np.mean([agr.energy_pointing_score(m, region) for m in maps])
    assert energy == pytest.approx(region.mean(), abs=0.03)
    np.testing.assert_array_equal(maps, agr.random_maps(200, 32, grid=(8, 8), seed=1))


def test_aggregate_mean_with_patient_bootstrap_ci():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.4, 0.6, 40)
    est = agr.aggregate(values, groups=np.repeat(np.arange(20), 2), n_resamples=300)
    assert est.low < est.value < est.high and est.value == pytest.approx(values.mean())
    assert np.isnan(agr.aggregate([np.nan, np.nan]).value)
    one = agr.aggregate([0.3, np.nan])
    assert one.value == 0.3 and np.isnan(one.low)


def test_paired_wilcoxon_detects_a_consistent_difference():
    ids = [f"s{i}" for i in range(20)]
    a = pd.DataFrame({"sample_id": ids, "energy": np.linspace(0.5, 0.7, 20)})
    b = pd.DataFrame({"sample_id": ids[::-1], "energy": np.linspace(0.1, 0.3, 20)[::-1] - 0.01 * np.arange(20) % 0.03})
    res = agr.paired_energy_test(a, b)
    assert res["n_pairs"] == 20 and res["p_value"] < 0.001 and res["median_difference"] > 0
    same = agr.paired_energy_test(a, a)
    assert same["p_value"] is None and same["n_pairs"] == 20
    none = agr.paired_energy_test(a, b.assign(sample_id=[f"x{i}" for i in range(20)]))
    assert none["n_pairs"] == 0 and none["p_value"] is None
