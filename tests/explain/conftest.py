"""Fixtures: small run directories trained on the phantom (plain and with the shortcut marker).

Each run is built the way ``medlens run`` lays it out (config.yaml, manifest.parquet,
fold_0/model.safetensors, predictions.parquet), plus a metrics.json holding the validation operating point,
but only fold 0 is trained, with the
demo's training loop, on a tiny timm ResNet (``test_resnet``) at 64 px, to keep the
suite fast on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_curve

from medlens.config import StudyConfig, dump_config
from medlens.data.arrays import load_tensor
from medlens.data.manifest import save_manifest
from medlens.data.sources import read_synthetic
from medlens.data.splits import make_splits, save_splits
from medlens.data.synthetic import generate
from medlens.models import create_model
from medlens.train.loop import fit, predict_proba


def build_run(root: Path, name: str, *, shortcut: bool, n_patients: int, epochs: int) -> Path:
    """Train fold 0 of a phantom study and write a run directory the explain stage can read."""
    cfg = StudyConfig.model_validate({
        "run_dir": str(root), "name": name, "seed": 0,
        "data": {"synthetic": {"n_patients": n_patients, "image_size": 64, "shortcut": shortcut}},
        "split": {"folds": 10, "external_site": None, "test_fraction": 0.2},
        "model": {"name": "test_resnet"},
        "train": {"epochs": epochs, "image_size": 64},
        "evaluate": {"n_bootstrap": 200},
        "explain": {"faithfulness_images": 8, "sanity_images": 6, "max_images": 96, "road": True},
    })
    run = cfg.out
    generate(run / "data", n_patients=n_patients, seed=1, image_size=64, shortcut=shortcut)
    manifest = read_synthetic(run / "data")
    save_manifest(manifest, run / "manifest.parquet")
    (run / "config.yaml").write_text(dump_config(cfg))
    splits = make_splits(manifest, folds=10, test_fraction=0.2, external_site=None, seed=0)
    save_splits(splits, run / "splits.json")
    by_id = manifest.set_index("sample_id")

    def tensor(ids):
        rows = by_id.loc[ids].reset_index()
        return load_tensor(rows, size=64, in_chans=3), rows["label"].to_numpy(int)

    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=2, in_chans=3)
    (run / "fold_0").mkdir(parents=True)
    fit(model, tensor(splits["folds"][0]["train"]), tensor(splits["folds"][0]["val"]), cfg.train,
        num_classes=2, seed=0, out_dir=run / "fold_0")
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(run / "fold_0" / "model.safetensors")))
    (run / "fold_0" / "calibration.json").write_text(json.dumps({"fold": 0, "method": "none"}))  # one fold, as trained
    xv, yv = tensor(splits["folds"][0]["val"])  # operating point on validation data, as the evaluate stage does
    fpr, tpr, thr = roc_curve(yv, predict_proba(model, xv)[:, 1])
    threshold = float(min(1.0, thr[int(np.argmax(tpr - fpr))]))
    (run / "metrics.json").write_text(json.dumps({"operating_point": {"method": "youden", "threshold": threshold}}))
    x, y = tensor(splits["test"])
    proba = predict_proba(model, x)
    pred = pd.DataFrame({"sample_id": splits["test"], "part": "test", "patient_id": by_id.loc[splits["test"], "patient_id"].values,
                         "label": y, "p0": proba[:, 0], "p1": proba[:, 1]})
    pred.to_parquet(run / "predictions.parquet", index=False)
    return run


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning threads per process cost far more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory) -> Path:
    """A phantom run whose model learned the lesions (test AUC 0.91 on this seed)."""
    return build_run(tmp_path_factory.mktemp("explain"), "plain", shortcut=False, n_patients=150, epochs=8)


@pytest.fixture(scope="session")
def shortcut_run(tmp_path_factory) -> Path:
    """A phantom run where a corner marker on 90% of positives gives the model a shortcut."""
    return build_run(tmp_path_factory.mktemp("explain"), "shortcut", shortcut=True, n_patients=100, epochs=3)

