"""End to end: a task: segmentation study on a tiny phantom, the report section, the CLI, learning."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medlens.config import StudyConfig
from medlens.errors import StageInputMissing

pytestmark = pytest.mark.slow


def _cfg(tmp, **seg):
    return StudyConfig.model_validate({
        "run_dir": str(tmp), "name": "t", "task": "segmentation",
        "data": {"synthetic": {"n_patients": 24, "image_size": 64}},
        "split": {"folds": 2}, "train": {"epochs": 2, "image_size": 32, "batch_size": 16},
        "evaluate": {"n_bootstrap": 200}, "seg": {"features": [4, 8, 16, 16, 32, 4], **seg}})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from medlens.stages.runner import run_study

    cfg = _cfg(tmp_path_factory.mktemp("seg"))
    return run_study(cfg), cfg


def test_outputs_and_metrics(tiny_run):
    run, _ = tiny_run
    seg = run / "seg"
    for name in ("metrics.json", "predictions.parquet", "overlays.npz",
                 "fold_0/model.safetensors", "fold_0/history.csv", "fold_0/classifier/model.safetensors"):
        assert (seg / name).is_file(), name
    assert (run / "report.html").is_file()
    m = json.loads((seg / "metrics.json").read_text())
    # every fold by default, and the threshold from the out-of-fold validation images
    assert m["folds_trained"] == 2 and (seg / "fold_1" / "model.safetensors").is_file()
    assert m["threshold_rule"] == "validation" and 0 < m["threshold"] < 1 and m["validation"]["n_images"] > 0
    for part in ("test", "external"):
        t = m[part]
        for key in ("dice", "iou", "hd95", "asd", "lesion_sensitivity", "lesion_precision", "lesion_count_error",
                    "auc_mask", "auc_cls", "auc_classifier", "auc_difference"):
            e = t[key]
            assert set(e) == {"value", "low", "high"}, key
            if np.isfinite(e["low"]):
                assert e["low"] <= e["value"] + 1e-9 and e["value"] <= e["high"] + 1e-9, key
        assert sum(r["lesions"] for r in t["lesion_size"]) == t["n_lesions"]
        d = t["detection"]  # the segmentation scored as a detector, one box per 8-connected lesion
        assert d["n_lesions"] == t["n_lesions"] and d["n_images"] == t["n_images"]
        assert 0 <= d["cpm"]["low"] <= d["cpm"]["value"] <= d["cpm"]["high"] <= 1
        assert 0 <= d["map"]["value"] <= d["map_50"]["value"] <= 1
        assert {"mae", "rmse", "spearman"} <= set(t["severity"])


def test_report_section(tiny_run):
    from medlens.sections import read_section, section_dir
    from medlens.seg.report import write_seg_section

    run, _ = tiny_run
    sec = read_section(section_dir(run, "seg") / "section.json")  # written by the seg stage
    assert sec["title"].startswith("Lesion segmentation") and "Dice" in sec["summary"]
    assert sec["figures"]["overlays"]["path"].read_bytes()[:4] == b"\x89PNG"
    assert any(k.startswith("lesion size") for k in sec["tables"])
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and sec["summary"].split(";")[0] in html
    assert write_seg_section(run.parent / "missing") is None


def test_rerun_skips_and_missing_inputs(tiny_run, tmp_path):
    from medlens.stages.runner import run_study
    from medlens.seg.stage import seg_stage

    run, cfg = tiny_run
    before = (run / "seg" / "metrics.json").stat().st_mtime_ns
    run_study(cfg)
    assert (run / "seg" / "metrics.json").stat().st_mtime_ns == before
    with pytest.raises(StageInputMissing, match="manifest.parquet"):
        seg_stage(tmp_path, cfg)


def test_cli_reports_errors_in_one_line(tmp_path):
    from medlens.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("task: segmentation\nseg: {task: multitask, patch_size: 32}\n")
    res = CliRunner().invoke(app, ["run", str(bad)])
    assert res.exit_code != 0 and "patch_size" in str(res.exception)


def test_segmentation_learns_small_lesions(tmp_path):
    """A U-Net at 64 px, 6 epochs on ~100 training images: honest floor, well below the demo's 0.85."""
    from medlens.data.sources import read_synthetic
    from medlens.data.synthetic import generate
    from medlens.config.seg import SegConfig
    from medlens.seg.data import load_seg_arrays
    from medlens.seg.metrics import dice_score
    from medlens.seg.models import create_segnet
    from medlens.seg.train import fit_segnet, predict
    from medlens.config import TrainConfig

    generate(tmp_path / "d", n_patients=50, seed=3, image_size=64)
    m = read_synthetic(tmp_path / "d")
    m = m[m["site"] == "A"]
    pids = sorted(m["patient_id"].unique())
    tr, te = m[m["patient_id"].isin(pids[:28])], m[m["patient_id"].isin(pids[28:])]
    sc = SegConfig(task="segmentation")
    arr = [load_seg_arrays(x.reset_index(drop=True), size=64, in_chans=3, use_clahe=True) for x in (tr, te)]
    net = create_segnet("segmentation", in_chans=3, features=sc.features)
    fit_segnet(net, arr[0], arr[1], TrainConfig(image_size=64, epochs=6, lr=3e-3), sc, seed=0, out_dir=tmp_path / "f")
    prob = predict(net, arr[1].images)["seg_prob"]
    truth = arr[1].masks[:, 0].numpy()
    dice = [dice_score(t, p > 0.5) for t, p in zip(truth, prob) if t.any()]
    assert np.mean(dice) > 0.5


def test_patch_training_with_sliding_window(tmp_path):
    from medlens.config import TrainConfig
    from medlens.config.seg import SegConfig
    from medlens.seg.data import SegArrays
    from medlens.seg.models import create_segnet
    from medlens.seg.train import fit_segnet, predict

    rng = np.random.default_rng(0)
    masks = np.zeros((8, 1, 48, 48), np.uint8)
    for i in range(4):
        y, x = rng.integers(4, 40, 2)
        masks[i, 0, y:y + 4, x:x + 4] = 1
    images = (120 - 80 * masks).repeat(3, 1).astype(np.uint8)
    data = SegArrays(torch.from_numpy(images), torch.from_numpy(masks), (masks.reshape(8, -1).max(1)).astype(int),
                     np.zeros(8))
    sc = SegConfig(task="segmentation", patch_size=32)
    net = create_segnet("segmentation", in_chans=3, features=(4, 8, 8, 16, 16, 4))
    hist = fit_segnet(net, data, data, TrainConfig(image_size=48, epochs=2, batch_size=4), sc, seed=0, out_dir=tmp_path)
    assert len(hist) == 2 and "val_dice" in hist
    out = predict(net, data.images, patch_size=32)
    assert out["seg_prob"].shape == (8, 48, 48)


def test_timm_encoder_unet_trains_on_patches(tmp_path):
    """segmentation-models-pytorch's U-Net on a timm encoder, through the same patch loop and sliding window."""
    from medlens.config import TrainConfig
    from medlens.config.seg import SegConfig
    from medlens.seg.fullres import FullResImage
    from medlens.seg.models import create_segnet
    from medlens.seg.train import fit_segnet, predict_fullres

    rng = np.random.default_rng(0)
    items = []
    for _ in range(3):
        mask = np.zeros((70, 90), np.uint8)
        mask[30:34, 5:85] = 1
        img = (rng.random((1, 70, 90)) + 2 * mask).astype(np.float32)
        fov = np.ones((70, 90), bool)
        items.append(FullResImage(img, mask, fov, mask.astype(bool), fov, 1.0))
    sc = SegConfig(task="segmentation", resample="native", patch_size=32, architecture="timm_unet",
                   encoder="resnet10t", loss="bce", patches_per_image=4)
    net = create_segnet("segmentation", in_chans=1, features=sc.features, architecture="timm_unet", encoder="resnet10t")
    hist = fit_segnet(net, items, items, TrainConfig(epochs=1, batch_size=4), sc, seed=0, out_dir=tmp_path)
    assert "val_f1" in hist and (tmp_path / "model.safetensors").is_file()
    prob = predict_fullres(net, items, patch_size=32, flips=True)
    assert prob[0].shape == (70, 90) and np.isfinite(prob[0]).all()
    with pytest.raises(ValueError, match="segments only"):
        SegConfig(task="multitask", architecture="timm_unet")


def test_multitask_options_train(tmp_path):
    """Ordinal severity, learned (uncertainty) weights and Dice+focal run and record each task loss."""
    from medlens.config import TrainConfig
    from medlens.config.seg import SegConfig
    from medlens.seg.data import SegArrays
    from medlens.seg.models import create_segnet
    from medlens.seg.train import fit_segnet, predict

    rng = np.random.default_rng(1)
    masks = (rng.random((8, 1, 32, 32)) < 0.01).astype(np.uint8)
    data = SegArrays(torch.from_numpy(rng.integers(0, 255, (8, 3, 32, 32), dtype=np.uint8)), torch.from_numpy(masks),
                     np.array([0, 1] * 4), rng.integers(0, 5, 8).astype(float))
    sc = SegConfig(task="multitask", severity="ordinal", loss_weighting="uncertainty", loss="dice_focal")
    net = create_segnet("multitask", in_chans=3, features=(4, 8, 8, 16, 16, 4), severity="ordinal")
    hist = fit_segnet(net, data, data, TrainConfig(image_size=32, epochs=1, batch_size=4), sc, seed=0, out_dir=tmp_path)
    assert {"loss_seg", "loss_cls", "loss_severity", "val_dice", "val_auc"} <= set(hist.columns)
    out = predict(net, data.images)
    assert out["severity"].shape == (8,) and (0 <= out["severity"]).all() and (out["severity"] <= 4).all()


def test_a_study_killed_in_its_second_fold_keeps_its_first(tiny_run, tmp_path):
    """Fold 0 finished, fold 1 was killed: the rerun trains fold 1 only and reaches the uninterrupted result."""
    import shutil

    from medlens.stages.runner import run_study

    run, cfg = tiny_run
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    cfg = cfg.model_copy(update={"run_dir": tmp_path})
    seg = copy / "seg"
    kept = {p: p.stat().st_mtime_ns for p in (seg / "fold_0").rglob("model.safetensors")}
    for p in (seg / "fold_1").rglob("trained.json"):  # killed before fold 1 finished: no trained.json, no metrics
        p.unlink()
    (seg / "metrics.json").unlink()
    run_study(cfg)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "fold 0 was trained again"
    assert all(p.is_file() for p in (seg / "fold_1").rglob("trained.json"))
    before, after = (json.loads((d / "seg" / "metrics.json").read_text()) for d in (run, copy))
    for m in (before, after):
        m.pop("seconds")
    assert after == before
