"""Subgroup analysis: point estimates against scikit-learn, CIs, flags and heterogeneity on built cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import recall_score

from medlens.evaluate.subgroups import subgroup_analysis


def _frame(n: int = 400, weak_site_sens: float = 0.4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    site = np.where(np.arange(n) < n // 2, "A", "B")
    y = rng.integers(0, 2, n)
    detect = np.where(site == "A", 0.95, weak_site_sens)
    pred = np.where(y == 1, rng.random(n) < detect, rng.random(n) < 0.1)
    score = np.where(pred, 0.8, 0.2) + rng.normal(0, 0.01, n)
    return pd.DataFrame({"label": y, "score": score, "patient_id": [f"P{i // 2}" for i in range(n)], "site": site,
                         "age": rng.integers(18, 95, n)})


def test_estimates_match_sklearn_and_weak_site_is_named():
    f = _frame()
    out = subgroup_analysis(f, ["site", "age"], 0.5, n_boot=500, seed=0)
    rows = {r["level"]: r for r in out["columns"]["site"]["levels"]}
    for level, r in rows.items():
        g = f[f["site"] == level]
        pred = (g["score"] >= 0.5).astype(int)
        assert abs(r["sensitivity"]["value"] - recall_score(g["label"], pred)) < 1e-12
        assert abs(r["specificity"]["value"] - recall_score(1 - g["label"], 1 - pred)) < 1e-12
        assert r["sensitivity"]["low"] <= r["sensitivity"]["value"] <= r["sensitivity"]["high"]
    assert rows["B"]["below_overall"] == ["sensitivity"] and rows["A"]["below_overall"] == []
    assert out["columns"]["site"]["p_sensitivity"] < 1e-6
    assert {r["level"] for r in out["columns"]["age"]["levels"]} == {"<40", "40-59", "60-74", ">=75"}


def test_no_heterogeneity_when_sites_behave_alike():
    out = subgroup_analysis(_frame(weak_site_sens=0.95, seed=3), ["site"], 0.5, n_boot=500, seed=0)
    assert out["columns"]["site"]["p_sensitivity"] > 0.05
    assert all(not r["below_overall"] for r in out["columns"]["site"]["levels"])
