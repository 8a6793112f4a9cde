"""Repeated cross-validation (``evaluate.repeats``): the repeats' splits, the spread recomputed from their
predictions, the report's table, resuming, and the corrected resampled t-test in ``medlens compare``."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers.study import make_tiny_config


def _study(root, **overrides):
    """The tiny study with 3 repeats, up to the evaluate stage (what compare reads)."""
    from medlens.stages import evaluate, prepare, repeats, train
    from medlens.stages.runner import DATA, run_stages

    cfg = make_tiny_config(root, evaluate={"repeats": 3}, **overrides)
    return cfg, run_stages(cfg, [s for s in (*DATA, prepare.STAGE, train.STAGE, repeats.STAGE, evaluate.STAGE)
                                 if s.when(cfg)])


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("repeats"))


def _ensemble(folder, method="platt") -> pd.DataFrame:
    """A repeat's calibrated fold predictions: out-of-fold validation rows, fold-averaged test/external rows."""
    from medlens.evaluate.study import calibrate_folds, fold_frames

    frames = pd.concat(calibrate_folds(fold_frames(folder), method)[0])
    val = frames[frames["part"] == "val"]
    held = frames[frames["part"] != "val"].groupby(["sample_id", "part"], as_index=False)[["label", "p1"]].mean()
    return pd.concat([val[["sample_id", "part", "label", "p1"]], held], ignore_index=True)


def test_each_repeat_has_new_folds_and_the_same_locked_sets(repeated):
    _, run = repeated
    base = json.loads((run / "splits.json").read_text())
    manifest = pd.read_parquet(run / "manifest.parquet").set_index("sample_id")
    for r in (1, 2):
        rs = json.loads((run / f"repeat_{r}" / "splits.json").read_text())
        assert rs["test"] == base["test"] and rs["external"] == base["external"]
        assert rs["folds"] != base["folds"]
        assert sorted(s for f in rs["folds"] for s in f["val"]) == sorted(s for f in base["folds"] for s in f["val"])
        for f in rs["folds"]:  # patient-grouped: no patient on both sides
            assert not set(manifest.loc[f["train"], "patient_id"]) & set(manifest.loc[f["val"], "patient_id"])
        for k in range(len(rs["folds"])):
            assert (run / f"repeat_{r}" / f"fold_{k}" / "model.safetensors").is_file()
            assert not (run / f"repeat_{r}" / f"fold_{k}" / "last.pt").exists()


def test_the_spread_recomputes_from_the_repeats_predictions(repeated):
    from medlens.evaluate import choose_threshold

    cfg, run = repeated
    m = json.loads((run / "metrics.json").read_text())
    ens = [_ensemble(run)] + [_ensemble(run / f"repeat_{r}") for r in (1, 2)]
    val = pd.concat([e[e["part"] == "val"] for e in ens])
    t = choose_threshold(val["label"].to_numpy(), val["p1"].to_numpy(), method="sensitivity",
                         target=cfg.evaluate.target_sensitivity)
    assert m["operating_point"]["threshold"] == pytest.approx(t, abs=1e-12)  # chosen on all repeats' OOF rows
    assert m["repeats"]["n"] == 3
    for part in ("test", "external"):
        aucs, sens = [], []
        for e in ens:
            g = e[e["part"] == part]
            aucs.append(roc_auc_score(g["label"], g["p1"]))
            sens.append(float((g.loc[g["label"] == 1, "p1"] >= t).mean()))
        for name, vals in (("auc", aucs), ("sensitivity", sens)):
            f = m["repeats"]["figures"][part][name]
            assert [r[part][name] for r in m["repeats"]["per_repeat"]] == pytest.approx(vals, abs=1e-12)
            assert f["sd"] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
            assert (f["min"], f["max"]) == pytest.approx((min(vals), max(vals)), abs=1e-12)
            assert f["value"] == pytest.approx(vals[0], abs=1e-12)  # the shipped ensemble is repeat 0
            v, sd = vals[0], f["sd"]
            assert f["total_low"] == pytest.approx(max(0, v - ((v - f["low"]) ** 2 + (1.96 * sd) ** 2) ** 0.5))
            assert f["total_high"] == pytest.approx(min(1, v + ((f["high"] - v) ** 2 + (1.96 * sd) ** 2) ** 0.5))
            assert f["total_low"] <= f["low"] + 1e-12 and f["total_high"] >= f["high"] - 1e-12
            worse = f["sd"] > (f["high"] - f["low"]) / 2
            assert worse == any(n.startswith({"auc": "AUC"}.get(name, name.capitalize()) + " on ")
                                and ("internal test" if part == "test" else "external") in n
                                for n in m["repeats"]["notes"])


def test_the_report_shows_the_spread_and_a_rerun_or_more_repeats_retrain_nothing_twice(repeated, tmp_path):
    import shutil

    from medlens.stages.runner import run_study

    cfg, run = repeated
    copy = tmp_path / "tiny"
    shutil.copytree(run, copy)
    cfg = cfg.model_copy(update={"run_dir": tmp_path})
    assert cfg.out == copy
    run_study(cfg)  # the rest of the study: explain, trust, export, report
    stamps = {p.name: p.stat().st_mtime_ns for p in (copy / ".stages").glob("repeat_*_fold_*.json")}
    assert len(stamps) == 4
    m = json.loads((copy / "metrics.json").read_text())
    html = (copy / "report.html").read_text()
    assert "Training variance (3 repeats" in html
    rows = re.findall(r'data-repeat="(\w+)\.(\w+)">(.*?)</tr>', html, re.S)
    assert {(p, f) for p, f, _ in rows} == {(p, f) for p in m["repeats"]["figures"] for f in m["repeats"]["figures"][p]}
    for part, fig, cells in rows:
        f = m["repeats"]["figures"][part][fig]
        shown = [float(x) for x in re.findall(r"\d\.\d{3}", cells)]
        assert shown == pytest.approx([f["value"], f["low"], f["high"], f["sd"], f["min"], f["max"], f["total_low"],
                                       f["total_high"]], abs=5e-4)
    more = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"repeats": 4})})
    run_study(more)
    after = {p.name: p.stat().st_mtime_ns for p in (copy / ".stages").glob("repeat_*_fold_*.json")}
    assert {k: after[k] for k in stamps} == stamps and len(after) == 6  # only repeat 3 was trained
    assert json.loads((copy / "metrics.json").read_text())["repeats"]["n"] == 4


def test_corrected_resampled_ttest_by_hand():
    from medlens.evaluate.compare import corrected_resampled_ttest

    a, b = [0.80, 0.83, 0.81, 0.84], [0.82, 0.86, 0.81, 0.88]
    d = [0.02, 0.03, 0.00, 0.04]  # b - a
    mean = sum(d) / 4
    var = sum((x - mean) ** 2 for x in d) / 3
    t = mean / ((1 / 4 + 100 / 400) * var) ** 0.5  # Nadeau & Bengio: 1/J + n_test/n_train
    res = corrected_resampled_ttest(a, b, n_train=400, n_test=100)
    assert res["t"] == pytest.approx(t, rel=1e-12) and res["df"] == 3
    from scipy.stats import t as student

    assert res["p"] == pytest.approx(2 * student.sf(t, 3), rel=1e-12)
    naive = mean / (var / 4) ** 0.5  # the uncorrected paired t-test is larger: it ignores the overlap
    assert naive > res["t"]


def test_compare_prints_the_corrected_ttest_beside_delong(repeated, tmp_path):
    _, run_a = repeated
    _, run_b = _study(tmp_path, name="tiny_b", train={"lr": 0.001})
    res = subprocess.run([sys.executable, "-m", "medlens.cli", "compare", str(run_a), str(run_b), "--out",
                          str(tmp_path / "cmp.json")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DeLong" in res.stdout and "corrected resampled t" in res.stdout
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    aucs = [[r["test"]["auc"] for r in json.loads((run / "metrics.json").read_text())["repeats"]["per_repeat"]]
            for run in (run_a, run_b)]
    d = np.subtract(aucs[1], aucs[0])
    splits = json.loads((run_a / "splits.json").read_text())
    ratio = len(splits["test"]) / np.mean([len(f["train"]) for f in splits["folds"]])
    assert cmp["corrected_ttest"]["t"] == pytest.approx(d.mean() / np.sqrt((1 / 3 + ratio) * d.var(ddof=1)))
