"""A segmentation fold killed after an epoch resumes from its ``last.pt`` to the uninterrupted result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medlens.config import StudyConfig
from medlens.train.checkpoint import LAST, load_last

pytestmark = pytest.mark.slow


class Killed(Exception):
    pass


def _fold(root):
    """The tiny phantom study's fold 0 (multi-task, learned task weights), prepared under ``root``."""
    from medlens.seg.stage import seg_arrays
    from medlens.stages.runner import prepare_study

    cfg = StudyConfig.model_validate({
        "run_dir": str(root), "name": "t", "task": "segmentation",
        "data": {"synthetic": {"n_patients": 24, "image_size": 64}},
        "split": {"folds": 2}, "train": {"epochs": 3, "image_size": 32, "batch_size": 8},
        "evaluate": {"n_bootstrap": 200},
        "seg": {"features": [4, 8, 16, 16, 32, 4], "task": "multitask", "loss_weighting": "uncertainty"}})
    manifest, splits = prepare_study(cfg)
    fold = splits["folds"][0]
    by_id = manifest.set_index("sample_id")
    train, val = (seg_arrays(cfg, by_id.loc[fold[part]].reset_index()) for part in ("train", "val"))
    return cfg, train, val


def test_a_fold_killed_after_its_first_epoch_resumes_to_the_same_weights(tmp_path):
    from medlens.seg.stage import TRAINED, train_segnet
    from medlens.seg.train import predict

    cfg, train, val = _fold(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    net_a = train_segnet(cfg, "multitask", train, val, whole, 7, None)

    def kill(epoch: int) -> None:
        if epoch == 0:
            raise Killed

    with pytest.raises(Killed):
        train_segnet(cfg, "multitask", train, val, killed, 7, None, on_epoch_end=kill)
    state = load_last(killed / LAST)
    assert state["epoch"] == 0 and "loss_weights" in state  # the learned task weights are resumed too
    assert not (killed / TRAINED).exists()
    net_b = train_segnet(cfg, "multitask", train, val, killed, 7, None)  # resumes from the matching last.pt

    a, b = (load_file(str(d / "model.safetensors")) for d in (whole, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "history.csv").read_bytes() == (killed / "history.csv").read_bytes()
    pa, pb = predict(net_a, val.images), predict(net_b, val.images)
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert json.loads((killed / TRAINED).read_text()) == json.loads((whole / TRAINED).read_text())
    assert not (whole / LAST).exists() and not (killed / LAST).exists()  # deleted once trained.json is written
