"""Summary statistics, networks, losses, CLAHE and config of medlens.seg (no training)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from medlens.config import StudyConfig, load_config, parse_config
from medlens.errors import ConfigError, DataError
from medlens.seg.data import clahe
from medlens.seg.losses import MultiTaskLoss, ordinal_targets, segmentation_loss, severity_from_output, severity_loss
from medlens.seg.models import create_segnet
from medlens.seg.summary import image_stats, seg_summary, severity_summary, size_table


def _masks(n=12, size=24, seed=0):
    rng = np.random.default_rng(seed)
    m = np.zeros((n, size, size), np.uint8)
    for i in range(n // 2):  # half the images carry 1-3 square lesions of 1-36 px
        for _ in range(rng.integers(1, 4)):
            y, x, s = rng.integers(0, size - 6), rng.integers(0, size - 6), rng.integers(1, 7)
            m[i, y:y + s, x:x + s] = 1
    return m


def test_perfect_prediction_summary():
    m = _masks()
    labels = m.reshape(len(m), -1).any(1).astype(int)
    stats = image_stats(m, m.astype(np.float32), size_bins=(8, 16))
    s = seg_summary(stats, labels, groups=np.repeat(np.arange(6), 2), n_bootstrap=200, seed=0)
    for key in ("dice", "dice_all", "dice_global", "iou", "lesion_sensitivity", "lesion_precision", "auc_mask"):
        assert s[key]["value"] == pytest.approx(1.0), key
    assert s["hd95"]["value"] == 0 and s["lesion_count_error"]["value"] == 0
    table = size_table(stats, s, (8, 16))
    assert [r["lesion size"] for r in table] == ["<8 px", "8-15 px", "≥16 px"]
    assert sum(r["lesions"] for r in table) == s["n_lesions"] == stats["n_true"].sum()


def test_summary_values_and_intervals():
    m = _masks(n=40, seed=1)
    rng = np.random.default_rng(0)
    prob = np.clip(m + rng.normal(0, 0.35, m.shape), 0, 1).astype(np.float32)
    labels = m.reshape(len(m), -1).any(1).astype(int)
    stats = image_stats(m, prob)
    s = seg_summary(stats, labels, groups=np.repeat(np.arange(20), 2), cls_score=prob.reshape(40, -1).mean(1),
                    baseline_score=rng.random(40), n_bootstrap=300, seed=0)
    has = stats["n_true"] > 0
    assert s["dice"]["value"] == pytest.approx(stats.loc[has, "dice"].mean())
    tp, fp, fn = stats["tp"].sum(), stats["fp"].sum(), stats["fn"].sum()
    assert s["dice_global"]["value"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    for key in ("dice", "lesion_sensitivity", "auc_cls", "auc_classifier", "auc_difference"):
        e = s[key]
        assert e["low"] <= e["value"] <= e["high"], key
    assert s["auc_difference"]["value"] == pytest.approx(s["auc_cls"]["value"] - s["auc_classifier"]["value"])


def test_severity_summary():
    t = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, np.nan])
    s = severity_summary(t, np.nan_to_num(t) + 0.5, (np.nan_to_num(t) > 0).astype(int), n_bootstrap=200)
    assert s["mae"]["value"] == pytest.approx(0.5) and s["rmse"]["value"] == pytest.approx(0.5)
    assert s["spearman"]["value"] == pytest.approx(1.0) and s["n_images"] == 10


@pytest.mark.parametrize("kind, keys", [("segmentation", {"seg"}), ("multitask", {"seg", "cls", "severity"}),
                                        ("classifier", {"cls"})])
def test_network_outputs(kind, keys):
    net = create_segnet(kind, in_chans=3, features=(4, 8, 8, 16, 16, 4), severity="ordinal")
    out = net(torch.zeros(2, 3, 32, 32))
    assert set(out) == keys
    if "seg" in out:
        assert out["seg"].shape == (2, 1, 32, 32)
    if "severity" in out:
        assert out["severity"].shape == (2, 4)
    with pytest.raises(ConfigError, match="Did you mean 'multitask'"):
        create_segnet("multitsk", in_chans=3, features=(4, 8, 8, 16, 16, 4))


def test_losses():
    logits = torch.full((2, 1, 8, 8), -5.0)
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:4, 2:4] = 1
    for kind in ("dice_bce", "dice_focal"):
        loss = segmentation_loss(kind)
        good = logits.clone()
        good[target > 0] = 5.0
        assert loss(good, target) < loss(logits, target)
    grade = torch.tensor([0.0, 2.0, 4.0])
    assert ordinal_targets(grade).tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert severity_loss(torch.tensor([0.0, 2.0, 4.0]), grade) == 0
    assert severity_from_output(torch.tensor([[9.0, 9, -9, -9]])).item() == pytest.approx(2.0, abs=1e-3)
    fixed = MultiTaskLoss({"seg": 1.0, "cls": 0.5})
    assert fixed({"seg": torch.tensor(2.0), "cls": torch.tensor(2.0)}).item() == pytest.approx(3.0)
    learned = MultiTaskLoss({"seg": 1.0, "cls": 1.0}, uncertainty=True)
    assert len(list(learned.parameters())) == 2
    assert learned({"seg": torch.tensor(2.0), "cls": torch.tensor(2.0)}).item() == pytest.approx(2.0)


def test_clahe_keeps_shape_and_raises_contrast():
    rng = np.random.default_rng(0)
    img = (100 + 20 * rng.random((3, 32, 32))).astype(np.uint8)
    out = clahe(img)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out.astype(float).std() > img.astype(float).std()
    assert clahe(img[:1]).shape == (1, 32, 32)
    with pytest.raises(DataError, match="uint8"):
        clahe(img.astype(np.float32))


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_config_files():
    assert load_config(CONFIGS / "demo.yaml").seg == StudyConfig().seg
    cfg = load_config(CONFIGS / "segmentation.yaml")
    assert cfg.seg.task == "multitask" and cfg.train.image_size == 64
    with pytest.raises(ConfigError, match="patch_size"):
        parse_config({"seg": {"task": "multitask", "patch_size": 32}})
    with pytest.raises(ConfigError, match="Did you mean 'clahe'"):
        parse_config({"seg": {"clahe_": True}})
