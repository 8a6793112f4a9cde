"""Fixtures for the training engine: tiny tensors and a prepared (not yet trained) study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_tensors():
    """40 train and 16 validation uint8 images (3×32×32) whose class shows in the mean brightness."""
    g = torch.Generator().manual_seed(1)
    y = np.array([0, 1] * 28)
    x = (torch.rand(56, 3, 32, 32, generator=g) * 180).to(torch.uint8) + torch.from_numpy(y * 60).to(torch.uint8)[
        :, None, None, None]
    return (x[:40], y[:40]), (x[40:], y[40:])


@pytest.fixture(scope="session")
def prepared_study(tmp_path_factory):
    """``make(name) -> config path``: a study whose run directory holds manifest.parquet and splits.json.

    20 phantom patients at 48 px, 2 folds, 1 epoch at 32 px, resnet18; no stage has trained.
    """
    from medlens.config import StudyConfig, dump_config
    from medlens.data.manifest import save_manifest
    from medlens.data.sources import read_synthetic
    from medlens.data.splits import make_splits, save_splits
    from medlens.data.synthetic import generate

    root = tmp_path_factory.mktemp("train_runs")
    generate(root / "data", n_patients=20, seed=0, image_size=48)
    manifest = read_synthetic(root / "data")
    base = {"run_dir": str(root), "data": {"synthetic": {"n_patients": 20, "image_size": 48}},
            "split": {"folds": 2}, "train": {"epochs": 1, "image_size": 32, "batch_size": 8},
            "evaluate": {"n_bootstrap": 200}}
    splits = make_splits(manifest, seed=0, **StudyConfig.model_validate(base).split.model_dump())

    def make(name: str, **sections) -> Path:
        d = {**base, "name": name}
        for key, value in sections.items():
            d[key] = {**d.get(key, {}), **value}
        cfg = StudyConfig.model_validate(d)
        cfg.out.mkdir(parents=True, exist_ok=True)
        save_manifest(manifest, cfg.out / "manifest.parquet")
        save_splits(splits, cfg.out / "splits.json")
        path = root / f"{name}.yaml"
        path.write_text(dump_config(cfg))
        return path

    return make

