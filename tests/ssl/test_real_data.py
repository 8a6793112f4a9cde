"""SimCLR on real chest X-rays (PneumoniaMNIST, labels ignored) beats random initialisation with few labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlens.config import load_config, parse_config
from medlens.ssl import pretrain, probe
from medlens.stages.runner import build_pool

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "medmnist" / "pneumoniamnist.yaml"


@pytest.mark.slow
def test_simclr_linear_probe_beats_random_init_at_10_percent_labels(shared_path, tmp_path):
    npz = shared_path("data", "medmnist", "pneumoniamnist.npz")
    base = load_config(RECIPE).model_dump(mode="json")
    base.update(name="pneumonia-ssl", run_dir=str(tmp_path))
    base["data"]["path"] = str(npz)
    base["ssl"] = {"methods": ["simclr"], "epochs": 2, "image_size": 32, "batch_size": 256, "fractions": [0.1],
                   "probe_seeds": 2}
    cfg = parse_config(base)
    build_pool(cfg)
    pretrain(cfg, "simclr")
    summary = probe(cfg)
    auc = {enc: points[0]["auc"] for enc, points in summary["curves"].items()}
    print(f"PneumoniaMNIST, linear probe at 10% labels (test AUC, mean of 2 draws): {auc}")
    assert auc["simclr"] >= auc["random init"] + 0.05
