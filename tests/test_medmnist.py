"""MedMNIST v2 benchmark: one recipe for every file, the evaluator's metrics, and the --quick path on real data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from medlens.config import load_config
from medlens.data.medmnist import dataset_name, paper_baselines, paper_rows
from medlens.errors import DataError
from medlens.evaluate.medmnist import medmnist_metrics, sklearn_metrics
from medlens.sections import read_section

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {n: REPO / "configs" / "medmnist" / f"{n}.yaml" for n in ("pneumoniamnist", "retinamnist")}
RECIPE_FREE = ("name",)


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_medmnist", REPO / "benchmarks" / "medmnist.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _recipe(path: Path) -> dict:
    d = load_config(path).model_dump(mode="json")
    for key in RECIPE_FREE:
        d.pop(key)
    d["data"].pop("path")
    d["evaluate"].pop("baselines")
    return d


def test_configs_share_one_recipe():
    """Only name, data.path and the paper's rows differ: the recipe is not tuned per file."""
    a, b = (_recipe(p) for p in CONFIGS.values())
    assert a == b
    cfg = load_config(CONFIGS["pneumoniamnist"])
    assert cfg.split.strategy == "predefined" and cfg.split.external_site is None
    assert set(cfg.qc.checks) == {"exposure", "contrast"} and cfg.qc.fail_on == ()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_baselines_are_the_papers_rows(name, shared_path):
    csv = shared_path("reference", "medmnist_v2.csv")
    assert list(load_config(CONFIGS[name]).evaluate.baselines) == paper_baselines(name, csv)
    assert Path(load_config(CONFIGS[name]).data.path).name == f"{name}.npz"


def test_paper_rows(shared_path):
    rows = {r["method"]: r for r in paper_rows("pneumoniamnist", shared_path("reference", "medmnist_v2.csv"))}
    assert rows["ResNet-18 (28)"]["test_auc"] == 0.944 and rows["Google AutoML Vision"]["test_acc"] == 0.946
    assert paper_rows("nosuchmnist", shared_path("reference", "medmnist_v2.csv")) == []
    with pytest.raises(DataError, match="not found"):
        paper_rows("retinamnist", REPO / "no" / "such.csv")


def test_dataset_name():
    assert dataset_name("/x/bloodmnist.npz") == "bloodmnist"
    assert dataset_name("RetinaMNIST_64.npz") == "retinamnist"


@pytest.mark.parametrize("k", [2, 5])
def test_metrics_follow_the_medmnist_evaluator(k):
    rng = np.random.default_rng(k)
    y = np.r_[np.arange(k), rng.integers(0, k, 300)]
    p = rng.dirichlet(np.ones(k), y.size)
    p[np.arange(y.size), y] += 0.3 * rng.random(y.size)
    p /= p.sum(1, keepdims=True)
    m = medmnist_metrics(y, p, n_boot=200)
    if k == 2:
        auc, acc = roc_auc_score(y, p[:, 1]), accuracy_score(y, (p[:, 1] > 0.5).astype(int))
    else:
        auc, acc = roc_auc_score(y, p, multi_class="ovr", average="macro"), accuracy_score(y, p.argmax(1))
    assert m["auc"].value == pytest.approx(auc, abs=1e-12) and m["acc"].value == pytest.approx(acc, abs=1e-12)
    assert sklearn_metrics(y, p) == pytest.approx({"auc": auc, "acc": acc})
    for e in m.values():
        assert e.low <= e.value <= e.high


def test_binary_acc_uses_half_not_an_operating_point():
    m = medmnist_metrics([0, 0, 1, 1], [[0.45, 0.55], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    assert m["acc"].value == 0.5 and m["auc"].value == 0.75


def test_metrics_reject_bad_shapes():
    with pytest.raises(DataError, match="n_samples"):
        medmnist_metrics([0, 1, 1], [0.2, 0.8, 0.4])


def test_npz_target_uses_the_recipe_unchanged(tmp_path, shared_path):
    shared_path("reference", "medmnist_v2.csv")
    bench = _load_benchmark()
    cfg = bench.study_config(tmp_path / "bloodmnist.npz", run_dir=tmp_path)
    ref = load_config(CONFIGS["pneumoniamnist"])
    assert cfg.name == "bloodmnist" and list(cfg.evaluate.baselines) == []  # not in the paper table here
    assert (cfg.model, cfg.train, cfg.engine, cfg.split, cfg.qc) == (ref.model, ref.train, ref.engine, ref.split, ref.qc)


def test_quick_path_end_to_end(tmp_path_factory, shared_path, capsys):
    """`benchmarks/medmnist.py --quick` on the real RetinaMNIST file: train briefly, score, check vs sklearn."""
    shared_path("data", "medmnist", "retinamnist.npz")
    shared_path("reference", "medmnist_v2.csv")
    run_dir = tmp_path_factory.mktemp("medmnist")
    bench = _load_benchmark()
    assert bench.main(["--quick", "--run-dir", str(run_dir), str(CONFIGS["retinamnist"])]) == 0
    out = capsys.readouterr().out
    assert "retinamnist" in out and "ResNet-18 (28)" in out and "0.717" in out
    run = run_dir / "retinamnist-quick"
    summary = json.loads((run / "medmnist" / "summary.json").read_text())
    assert summary["test"]["n_images"] == 400 and summary["test"]["classes"] == 5
    assert summary["test"]["auc"]["value"] == pytest.approx(summary["test"]["sklearn"]["auc"], abs=1e-12)
    import pandas as pd

    pred = pd.read_parquet(run / "predictions.parquet")
    test = pred[pred["part"] == "test"]
    proba = test[[f"p{c}" for c in range(5)]].to_numpy()
    assert summary["test"]["auc"]["value"] == pytest.approx(
        roc_auc_score(test["label"], proba, multi_class="ovr", average="macro"), abs=1e-12)
    assert summary["test"]["acc"]["value"] == pytest.approx(accuracy_score(test["label"], proba.argmax(1)), abs=1e-12)
    section = read_section(run / "sections" / "medmnist" / "section.json")
    assert section["title"].startswith("Comparison with published results")
    rows = section["tables"]["published results"]["rows"]
    assert rows[0]["method"].startswith("this study") and any(r["method"] == "ResNet-18 (28)" for r in rows)
    # a multi-class report shows its calibration, and no agreement figures where MedMNIST has no expert box
    html = (run / "report.html").read_text()
    assert "Comparison with published results (MedMNIST v2)" in html and "ResNet-18 (28)" in html
    # the recipe calibrates with a temperature alone (issue 36): the class-weighted decision rule is kept
    assert "Calibration (test)" in html and "T = " in html and 'alt="reliability diagram"' in html
    assert "confidence of the predicted class" in html and "temperature scaling" in html
    assert "class intercepts" not in html
    assert "nan%" not in html and "was not measured" in html
    assert "whose two most likely classes are closest" in html and "nearest the operating threshold" not in html


def test_train_subset_is_stratified_and_keeps_validation_and_test(tmp_path):
    bench = _load_benchmark()
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], [300, 700])[:, None]
    arrays = {"train_images": rng.integers(0, 255, (1000, 4, 4), dtype=np.uint8), "train_labels": y,
              "val_images": np.zeros((50, 4, 4), np.uint8), "val_labels": np.zeros((50, 1), int),
              "test_images": np.ones((60, 4, 4), np.uint8), "test_labels": np.ones((60, 1), int)}
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    out = bench.train_subset(tmp_path / "pneumoniamnist.npz", 0.1, tmp_path / "sub")
    assert out.name == "pneumoniamnist_10pct.npz"
    with np.load(out) as f:
        assert np.bincount(f["train_labels"][:, 0]).tolist() == [30, 70]
        rows = {r.tobytes() for r in arrays["train_images"]}
        assert all(r.tobytes() in rows for r in f["train_images"])
        assert f["val_images"].shape == (50, 4, 4) and f["test_images"].shape == (60, 4, 4)
    assert bench.study_config(out, run_dir=tmp_path).name == "pneumoniamnist_10pct"  # its own run directory


def test_a_subset_file_keeps_the_papers_rows(tmp_path, shared_path):
    csv = shared_path("reference", "medmnist_v2.csv")
    cfg = _load_benchmark().study_config(tmp_path / "pneumoniamnist_10pct.npz", run_dir=tmp_path)
    assert list(cfg.evaluate.baselines) == paper_baselines("pneumoniamnist", csv) != []
