"""The training report section: learning curves and best epoch per fold."""

from __future__ import annotations

import pandas as pd

from medlens.sections import read_section
from medlens.train.report import write_training_section


def report_section(run):
    """The training section as the report reads it (``run/sections/train/section.json``)."""
    path = write_training_section(run)
    return None if path is None else read_section(path)


def test_report_section(tmp_path):
    assert report_section(tmp_path) is None
    for k in range(2):
        (tmp_path / f"fold_{k}").mkdir()
        pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.7, 0.5, 0.3], "val_loss": [0.7, 0.6, 0.65],
                      "val_auc": [0.6, 0.8 + k / 10, 0.75], "lr": [1e-3] * 3}).to_csv(
            tmp_path / f"fold_{k}" / "history.csv", index=False)
    sec = report_section(tmp_path)
    assert sec["title"] == "Training" and sec["figures"]["learning_curves"]["path"].read_bytes()[:4] == b"\x89PNG"
    assert [r["best epoch"] for r in sec["tables"]["folds"]["rows"]] == [1, 1]
    assert sec["tables"]["folds"]["rows"][1]["validation AUC"] == 0.9 and "validation" in sec["summary"]


def test_the_kept_epoch_follows_the_monitor(tmp_path):
    """The table names the epoch training kept: lowest validation loss by default, not the highest AUC."""
    (tmp_path / "fold_0").mkdir()
    h = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.7, 0.5, 0.3], "val_loss": [0.7, 0.6, 0.65],
                      "val_auc": [0.9, 0.8, 0.75], "lr": [1e-3] * 3, "monitor": ["loss"] * 3})
    h.to_csv(tmp_path / "fold_0" / "history.csv", index=False)
    sec = report_section(tmp_path)
    assert sec["tables"]["folds"]["rows"][0]["best epoch"] == 1 and "lowest validation loss" in sec["summary"]
    h.assign(monitor="auc").to_csv(tmp_path / "fold_0" / "history.csv", index=False)
    sec = report_section(tmp_path)
    assert sec["tables"]["folds"]["rows"][0]["best epoch"] == 0 and "highest validation AUC" in sec["summary"]
