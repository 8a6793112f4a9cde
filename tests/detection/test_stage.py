"""`medlens run` with task: detection on a tiny phantom: what it writes agrees with itself and with
independent recomputation; export parity and Triton configs; resume after a kill; torchrun with 2 gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from medlens.config import StudyConfig
from medlens.evaluate.froc import cpm, froc, match
from medlens.train.checkpoint import LAST, load_last

from .conftest import DET

TORCHRUN = Path(sys.executable).parent / "torchrun"
pytestmark = pytest.mark.slow


def _cfg(run: Path) -> StudyConfig:
    return StudyConfig.model_validate(yaml.safe_load((run / "config.yaml").read_text()))


def _truth(run: Path, part: str):
    from medlens.data.preprocess import Preprocess
    from medlens.detection.data import load_det_arrays
    from medlens.detection.stage import study_rows

    by_id, splits = study_rows(run)
    ids = [i for i in splits[part] if i in by_id.index]
    return ids, load_det_arrays(by_id.loc[ids].reset_index(), Preprocess.from_config(_cfg(run)), None)


def test_the_study_writes_every_declared_file(det_run):
    for rel in ("det/metrics.json", "det/predictions.parquet", "det/overlays.npz", "det/export/model.onnx",
                "det/export/export.json", "det/export/ood.safetensors", "det/export/ood.json", "report.html", "det/fold_0/model.safetensors",
                "det/fold_1/seg/model.safetensors"):
        assert (det_run / rel).is_file(), rel
    assert not (det_run / "det" / "fold_0" / LAST).exists()  # a finished fold keeps no resume state
    refused = json.loads((det_run / "det" / "export" / "export.json").read_text())["ood"]["flagged"]
    assert set(refused) == {"test", "external"} and all(0 <= v <= 1 for v in refused.values())
    assert "OOD gate: external images refused" in (det_run / "report.html").read_text()
    m = json.loads((det_run / "det" / "metrics.json").read_text())
    for part in ("test", "external"):
        assert set(m[part]) == {"detector", "segmentation"}
        for method in m[part].values():
            assert 0 <= method["cpm"]["low"] <= method["cpm"]["value"] <= method["cpm"]["high"] <= 1
            assert len(method["operating_point"]["by_size"]) == 4  # the default edges (16, 36, 64)
    pred = pd.read_parquet(det_run / "det" / "predictions.parquet")
    assert set(pred["part"]) == {"test", "external"}  # validation and training images are never written there


@pytest.mark.parametrize("part", ["test", "external"])
def test_metrics_recompute_from_the_written_boxes(det_run, part):
    """CPM and the operating point, recomputed from predictions.parquet and the reference boxes, equal metrics.json."""
    m = json.loads((det_run / "det" / "metrics.json").read_text())
    ids, truth = _truth(det_run, part)
    pred = pd.read_parquet(det_run / "det" / "predictions.parquet")
    groups = {k: g for k, g in pred[pred["part"] == part].groupby("sample_id")}
    boxes = [(groups[i][["x0", "y0", "x1", "y1"]].to_numpy(float), groups[i]["score"].to_numpy(float))
             if i in groups else (np.zeros((0, 4)), np.zeros(0)) for i in ids]
    assert cpm(froc(truth.boxes, boxes)) == pytest.approx(m[part]["detector"]["cpm"]["value"], abs=1e-12)
    lesions, fps = match(truth.boxes, boxes)
    les, t = np.concatenate(lesions), m["threshold"]
    op = m[part]["detector"]["operating_point"]
    assert op["sensitivity"]["value"] == pytest.approx((les >= t).mean(), abs=1e-12)
    assert op["fp_per_image"]["value"] == pytest.approx(sum(int((f >= t).sum()) for f in fps) / len(ids), abs=1e-12)
    assert m[part]["detector"]["n_lesions"] == les.size and m[part]["detector"]["n_images"] == len(ids)


def test_export_parity_and_triton_repository(det_run):
    from medlens.export.triton import validate_config

    info = json.loads((det_run / "det" / "export" / "export.json").read_text())
    p = info["parity"]
    assert p["passed"] and p["min_iou"] >= 0.99 and p["max_score_diff"] <= 1e-4 and p["count_mismatches"] == 0
    assert p["n_images"] > 0
    configs = sorted((det_run / "det" / "export" / "model_repository").glob("*/config.pbtxt"))
    assert len(configs) == 2
    for c in configs:
        parsed = validate_config(c.read_text())
        k = info["max_detections"]
        assert parsed["outputs"] == {"boxes": [k, 4], "scores": [k], "features": [info["n_features"]]}


def test_report_agrees_with_metrics(det_run):
    html = (det_run / "report.html").read_text()
    m = json.loads((det_run / "det" / "metrics.json").read_text())
    c = m["test"]["detector"]["cpm"]
    assert f"{c['value']:.3f} ({c['low']:.3f}–{c['high']:.3f})" in html
    assert "detection by segmentation" in html and html.count("data:image/png;base64,") >= 2


def _prepared(root: Path, name: str) -> StudyConfig:
    from helpers.study import make_tiny_config

    from medlens.stages.runner import prepare_study

    cfg = make_tiny_config(root, **{**DET, "name": name})
    prepare_study(cfg)
    return cfg


class Killed(Exception):
    pass


def test_resume_after_a_kill_gives_the_same_weights(tmp_path):
    from medlens.detection.stage import train_fold

    whole = _prepared(tmp_path / "a", "whole")
    train_fold(whole, whole.out, 0)
    killed = _prepared(tmp_path / "b", "killed")

    def kill(epoch: int) -> None:
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        train_fold(killed, killed.out, 0, on_epoch_end=kill)
    assert load_last(killed.out / "det" / "fold_0" / LAST)["epoch"] == 0
    train_fold(killed, killed.out, 0)  # resume="auto" picks up the matching last.pt
    a = load_file(str(whole.out / "det" / "fold_0" / "model.safetensors"))
    b = load_file(str(killed.out / "det" / "fold_0" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_last(killed.out / "det" / "fold_0" / LAST)["epoch"] == DET["train"]["epochs"] - 1


def test_torchrun_two_gloo_processes_train_a_fold(tmp_path):
    cfg = _prepared(tmp_path, "ddp")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nnodes", "1", "--nproc_per_node", "2", "-m",
                           "medlens.cli", "train", str(path), "--fold", "0"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("fold 0: detector trained (2 processes)") == 1  # rank 0 only
    state = load_last(cfg.out / "det" / "fold_0" / LAST)
    assert state["epoch"] == DET["train"]["epochs"] - 1 and len(state["history"]) == DET["train"]["epochs"]
    from medlens.detection.model import DetNet

    net = DetNet(3, tuple(DET["detection"]["features"]))
    net.load_state_dict(load_file(str(cfg.out / "det" / "fold_0" / "model.safetensors")))
    assert not list((cfg.out / "det" / "fold_0").glob("*.tmp"))


def _user_table(tmp_path: Path):
    """A hospital's image table (the phantom's images, its own column names) and a box table beside it."""
    from medlens.data.synthetic import generate
    from medlens.evaluate.boxes import boxes_from_mask
    from medlens.data.images import load_mask

    m = generate(tmp_path / "images", n_patients=36, seed=2, image_size=32)
    pd.DataFrame({"file": [str(Path("images") / p) for p in m["image"]], "subject": m["patient_id"],
                  "hospital": m["site"], "finding": m["label_expert"]}).to_csv(tmp_path / "study.csv", index=False)
    rows = [{"image": str(Path("images") / img), "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "class": "lesion"}
            for img, mask in zip(m["image"], m["mask"])
            for b in boxes_from_mask(load_mask(str(tmp_path / "images" / mask)))]
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)
    return {"data": {"source": "csv", "path": str(tmp_path / "study.csv"),
                     "csv_columns": {"image": "file", "label": "finding", "patient_id": "subject", "site": "hospital"}},
            "split": {"external_site": "B"}}, len(rows)


def test_a_users_table_with_a_box_table(tmp_path):
    from helpers.study import make_tiny_config

    from medlens.stages.runner import run_study

    data, n_boxes = _user_table(tmp_path)
    run = run_study(make_tiny_config(tmp_path / "runs", **{**DET, **data, "detection": {
        **DET["detection"], "boxes": str(tmp_path / "boxes.csv")}}))
    m = json.loads((run / "det" / "metrics.json").read_text())
    assert "segmentation" not in m["test"]  # no masks in the user's table: no detection by segmentation
    assert 0 < m["test"]["detector"]["n_lesions"] + m["external"]["detector"]["n_lesions"] < n_boxes
    assert "was not run" in (run / "report.html").read_text()


def test_a_bad_box_table_stops_the_run_with_one_line(tmp_path):
    data, _ = _user_table(tmp_path)
    boxes = pd.read_csv(tmp_path / "boxes.csv")
    boxes.loc[3, "x1"] = boxes.loc[3, "x0"] - 1
    boxes.to_csv(tmp_path / "boxes.csv", index=False)
    study = {**data, "task": "detection", "name": "bad", "run_dir": str(tmp_path / "runs"),
             "detection": {"boxes": str(tmp_path / "boxes.csv")}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    res = subprocess.run([sys.executable, "-m", "medlens.cli", "run", "s.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "boxes.csv row 5: x0, y0, x1, y1 must be numbers with x1 > x0" in " ".join(res.stderr.split())
    assert not (tmp_path / "runs" / "bad" / "det").exists()  # nothing trained or half-written
