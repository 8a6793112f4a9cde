"""The one OOD gate (:mod:`medlens.inference.ood`) on simulated features: fit, threshold, save/load, fold members."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from medlens.errors import DataError, StageInputMissing
from medlens.inference import ood


def test_docstring_examples():
    assert doctest.testmod(ood, extraglobs={"np": np}).failed == 0


def _gaussians(rng, n, shift=0.0, d=16):
    y = rng.integers(0, 2, n)
    f = rng.normal(0, 1, (n, d)) + 3.0 * y[:, None] * np.eye(d)[0] + shift
    return f, y


def test_mahalanobis_separates_and_threshold_passes_95(tmp_path):
    rng = np.random.default_rng(1)
    f_train, y_train = _gaussians(rng, 400)
    f_val, _ = _gaussians(rng, 400)
    f_ood, _ = _gaussians(rng, 100, shift=4.0)
    det = ood.fit_mahalanobis(f_train, y_train)
    thr = ood.threshold_at_pass_rate(det.score(f_val), 0.95)
    det = ood.MahalanobisDetector(det.means, det.precision, thr)
    assert abs((~det.is_ood(f_val)).mean() - 0.95) < 0.01
    assert det.is_ood(f_ood).mean() > 0.95
    ood.save_detectors(tmp_path / "trust", [det, det], {"model_name": "x"})
    one = ood.load_detectors(tmp_path / "trust", fold=1)
    assert np.allclose(one.score(f_val), det.score(f_val))
    ens = ood.load_detectors(tmp_path / "trust")
    both = np.concatenate([f_val, f_val], 1)
    assert np.allclose(ens.score(both), det.score(f_val) / thr)
    with pytest.raises(DataError, match="shape"):
        ens.score(f_val)
    with pytest.raises(DataError, match="fold 5"):
        ood.load_detectors(tmp_path / "trust", fold=5)
    with pytest.raises(StageInputMissing, match="medlens audit"):
        ood.load_detectors(tmp_path / "nowhere")


def test_fold_members_are_fitted_on_their_own_rows_and_thresholded_on_their_validation_rows():
    """Two members side by side equal two separate fits; member 1 sees a shifted feature space."""
    rng = np.random.default_rng(2)
    f, y = _gaussians(rng, 600)
    both = np.concatenate([f, f + 5.0], 1)
    fit, thr = [list(range(0, 300)), list(range(300, 600))], [list(range(300, 450)), list(range(0, 150))]
    dets = ood.fit_fold_detectors(both, y, fit, thr, 0.9)
    for j, det in enumerate(dets):
        alone = ood.fit_mahalanobis(f[fit[j]] + 5.0 * j, y[fit[j]])
        assert np.allclose(det.means, alone.means) and np.allclose(det.precision, alone.precision)
        d = f.shape[1]
        passed = ~det.is_ood(both[thr[j], j * d:(j + 1) * d])
        assert abs(passed.mean() - 0.9) < 0.02
    with pytest.raises(DataError, match="3 fold members"):
        ood.fit_fold_detectors(both, y, fit + [fit[0]], thr + [thr[0]], 0.9)


def test_gate_ids_share_one_pool_and_never_fit_on_validation():
    dev = [f"s{i:04d}" for i in range(1000)]
    folds = [{"train": [s for i, s in enumerate(dev) if i % 5 != k], "val": [s for i, s in enumerate(dev) if i % 5 == k]}
             for k in range(5)]
    splits = {"folds": folds}
    small = ood.gate_ids(splits, [0, 1, 2, 3, 4], 5000, seed=0)  # fewer images than the cap: all of them
    assert [(len(a), len(b)) for a, b in small] == [(800, 200)] * 5
    capped = ood.gate_ids(splits, [0, 1, 2, 3, 4], 400, seed=0)
    pool = set().union(*(a for a, _ in capped))
    assert len(pool) == 400  # k folds share one subset: at most n extra forward passes
    for (fit, thr), fold in zip(capped, folds):
        assert not set(fit) & set(fold["val"]) and set(thr) <= set(fold["val"]) and len(thr) == 200
    assert ood.gate_ids(splits, [3], 400, seed=0) == [capped[3]]  # one exported fold: the same images


def test_at_most_is_a_seeded_subset_in_order():
    ids = [f"s{i:05d}" for i in range(20000)]
    a = ood.at_most(ids, 8192, seed=0)
    assert len(a) == len(set(a)) == 8192 and set(a) <= set(ids) and a == sorted(a)
    assert a == ood.at_most(ids, 8192, seed=0) and a != ood.at_most(ids, 8192, seed=1)
    assert ood.at_most(ids[:500], 8192, seed=0) == ids[:500]
