import json
import re
import time

import pandas as pd
import pytest

from medlens.data.splits import load_splits, save_splits
from medlens.errors import LeakageError
from medlens.stages.runner import run_study


def test_run_writes_every_artifact(tiny_run):
    for name in ("config.yaml", "manifest.parquet", "qc.parquet", "splits.json", "metrics.json", "metrics.csv",
                 "predictions.parquet", "report.html", "fold_0/model.safetensors", "fold_1/history.csv"):
        assert (tiny_run / name).is_file(), name
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert {"test", "external", "val", "folds", "operating_point"} <= set(m)
    assert 0 <= m["test"]["auc"]["low"] <= m["test"]["auc"]["value"] <= m["test"]["auc"]["high"] <= 1
    # test and external predictions are fold averages, one row per image
    pred = pd.read_parquet(tiny_run / "predictions.parquet")
    splits = load_splits(tiny_run / "splits.json")
    assert sorted(pred.loc[pred["part"] == "test", "sample_id"]) == sorted(splits["test"])
    assert sorted(pred.loc[pred["part"] == "external", "sample_id"]) == sorted(splits["external"])
    assert "torch" in (tiny_run / "config.yaml").read_text()


def test_metrics_agree_with_sklearn_on_saved_predictions(tiny_run):
    from sklearn.metrics import roc_auc_score

    m = json.loads((tiny_run / "metrics.json").read_text())
    pred = pd.read_parquet(tiny_run / "predictions.parquet")
    for part in ("test", "external"):
        g = pred[pred["part"] == part]
        assert m[part]["auc"]["value"] == pytest.approx(roc_auc_score(g["label"], g["p1"]), abs=1e-12)


def test_rerun_skips_every_stage(tiny_run, tiny_config):
    cfg = tiny_config(tiny_run.parent)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tiny_run / ".stages").iterdir()}
    t0 = time.perf_counter()
    run_study(cfg)
    assert time.perf_counter() - t0 < 10
    assert {p.name: p.stat().st_mtime_ns for p in (tiny_run / ".stages").iterdir()} == stamps


def test_changed_config_reruns_only_downstream(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, data={"synthetic": {"n_patients": 16, "image_size": 48}}, train={"epochs": 1})
    run = run_study(cfg)
    stamps = {p.stem: p.stat().st_mtime_ns for p in (run / ".stages").iterdir()}
    run_study(tiny_config(tmp_path, data={"synthetic": {"n_patients": 16, "image_size": 48}},
                          train={"epochs": 1}, evaluate={"n_bootstrap": 300}))
    after = {p.stem: p.stat().st_mtime_ns for p in (run / ".stages").iterdir()}
    # explain reports its agreement CIs with evaluate.n_bootstrap, the export card and the report show the new CIs;
    # training, QC and trust (which reads the operating point, unchanged) are untouched
    assert sorted(k for k in stamps if after[k] != stamps[k]) == ["evaluate", "explain", "export", "report"]


def test_tampered_splits_are_caught(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, data={"synthetic": {"n_patients": 16, "image_size": 48}}, train={"epochs": 1})
    run = run_study(cfg)
    s = load_splits(run / "splits.json")
    m = pd.read_parquet(run / "manifest.parquet").set_index("sample_id")
    test_patient = m.loc[s["test"][0], "patient_id"]
    s["folds"][0]["train"] += [x for x in s["test"] if m.loc[x, "patient_id"] == test_patient]
    save_splits(s, run / "splits.json")
    with pytest.raises(LeakageError, match=test_patient):
        run_study(cfg)


def test_regression_study_trains_folds_and_stops_before_classification_stages(tmp_path, tiny_config):
    import subprocess
    import sys

    import pandas as pd

    from medlens.config import dump_config

    cfg = tiny_config(tmp_path, name="severity", data={"synthetic": {"n_patients": 16, "image_size": 48}},
                      train={"epochs": 1}, engine={"task": "regression", "target": "severity"})
    path = tmp_path / "severity.yaml"
    path.write_text(dump_config(cfg))
    r = subprocess.run([sys.executable, "-m", "medlens.cli", "run", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "engine.task regression: folds trained" in r.stdout
    # in a pipe (a log file, CI, a batch scheduler): one start and one end line per stage, no progress-bar residue
    started = [m.group(1) for ln in r.stderr.splitlines()
               if (m := re.fullmatch(r"\d\d:\d\d:\d\d stage (\S+): started \(first run\)", ln))]
    done = [m.group(1) for ln in r.stderr.splitlines()
            if (m := re.fullmatch(r"\d\d:\d\d:\d\d stage (\S+): done in [\d.]+ s", ln))]
    assert started == done == ["synth", "ingest", "qc", "split", "prepare", "train"], r.stderr
    folds = [ln[9:] for ln in r.stderr.splitlines() if "stage train: fold" in ln]  # each fold inside its stage
    assert [f.split(" (")[0].split(" in ")[0] for f in folds] == [
        "stage train: fold 0 started", "stage train: fold 0 done", "stage train: fold 1 started",
        "stage train: fold 1 done"], r.stderr
    assert not [ln for ln in (r.stdout + r.stderr).splitlines() if not ln.strip()]
    pred = pd.read_parquet(cfg.out / "fold_0" / "predictions.parquet")
    assert {"label", "pred"} <= set(pred.columns) and pred["pred"].notna().all()
    assert not (cfg.out / "metrics.json").exists()
