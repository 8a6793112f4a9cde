"""The new-site procedure: the refitted OOD gate against a brute-force leave-one-out, and over many local draws."""

import numpy as np
import pandas as pd
import pytest

from medlens.inference.ood import MahalanobisDetector, fit_mahalanobis, threshold_at_pass_rate
from medlens.evaluate.study import local_patients
from medlens.trust.new_site import new_site_draws, refit_gate


def _gate(rng, d=16):
    train, y = rng.normal(size=(300, d)), rng.integers(0, 2, 300)
    train[y == 1] += 1.0
    det = fit_mahalanobis(train, y)
    val = rng.normal(size=(100, d))
    return MahalanobisDetector(det.means, det.precision, threshold_at_pass_rate(det.score(val), 0.95))


def test_refit_threshold_is_the_leave_one_out_quantile():
    rng = np.random.default_rng(0)
    det = _gate(rng)
    f, y = rng.normal(1.0, 1.3, size=(30, 16)), rng.integers(0, 2, 30)
    y[0] = 2  # a class with a single image: left out, it has no own mean
    new = refit_gate([det], [f], y, 0.9)[0]
    loo = []
    for i in range(len(f)):
        keep = np.arange(len(f)) != i
        means = [f[keep & (y == c)].mean(0) for c in np.unique(y) if (keep & (y == c)).any()]
        loo.append(MahalanobisDetector(np.vstack([det.means, *means]), det.precision).score(f[i:i + 1])[0])
    assert new.threshold == pytest.approx(max(det.threshold, np.quantile(loo, 0.9)), rel=1e-10)
    assert new.means.shape == (det.means.shape[0] + 3, 16)
    np.testing.assert_array_equal(new.precision, det.precision)


def test_a_shifted_site_passes_after_the_refit_and_ood_images_stay_out():
    rng = np.random.default_rng(1)
    dets = [_gate(rng) for _ in range(2)]
    n_pat = 60
    pid = np.repeat(np.arange(n_pat), 3).astype(str)
    label = np.repeat(rng.random(n_pat) < 0.4, 3).astype(int)
    shift = np.r_[6.0, np.zeros(15)]  # another camera: every image moved along one direction
    feats = [rng.normal(size=(len(pid), 16)) + shift + label[:, None] for _ in dets]
    ood = [rng.normal(size=(40, 16)) * 3 + 8 for _ in dets]
    score = np.clip(0.25 + 0.5 * label + rng.normal(0, 0.15, len(pid)), 0, 1)
    site = pd.DataFrame({"patient_id": pid, "label": label, "score": score})
    res = new_site_draws(site, feats, ood, dets, internal_threshold=0.9, fraction=0.2, rule="youden", target=0.9,
                         pass_rate=0.95, n_draws=20, seed=0)
    sm = res["summary"]
    assert res["n_draws"] == 20 and len(res["draws"]) == 20
    assert sm["gate_pass_before"]["median"] < 0.2  # the training gate refuses the new camera
    assert sm["gate_pass"]["median"] >= 0.9 and sm["ood_refused"]["p5"] >= 0.95
    assert sm["sensitivity"]["median"] > sm["sensitivity_internal"]["median"]  # the internal threshold is too high
    d = res["draws"]
    assert (d["local_images"] + d["rest_images"] == len(pid)).all()
    assert sm["sensitivity"]["p5"] <= sm["sensitivity"]["median"] <= sm["sensitivity"]["p95"]


def test_local_sets_are_whole_patients_of_both_classes():
    pid = np.repeat(np.arange(50), 2)
    label = np.repeat(np.arange(50) % 3 == 0, 2).astype(int)
    local = local_patients(pid, label, 0.2, np.random.default_rng(0))
    assert set(pid[local]).isdisjoint(pid[~local])
    pos = {p for p, lab in zip(pid[local], label[local]) if lab}
    assert len(pos) == 3 and len(set(pid[local])) == 3 + 6  # floor(0.2 × 17) positive, floor(0.2 × 33) negative
    assert local_patients(pid[:10], label[:10], 0.2, np.random.default_rng(0)) is None
