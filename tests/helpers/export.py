"""A run directory with untrained fold models, for export and service tests (no training: fast)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path


def fake_run(root: Path, *, model: str = "resnet18", folds: int = 2, n_patients: int = 24, image_size: int = 32,
             evaluate: bool = False) -> Path:
    """config.yaml, manifest, splits, fold_k/model.safetensors (random init) and a metrics.json threshold."""
    import torch
    from safetensors.torch import save_file

    from medlens.config import StudyConfig, dump_config
    from medlens.data.manifest import save_manifest
    from medlens.data.sources import read_synthetic
    from medlens.data.splits import make_splits, save_splits
    from medlens.data.synthetic import generate
    from medlens.models import create_model

    cfg = StudyConfig.model_validate({"run_dir": str(root), "name": "x", "model": {"name": model},
                                      "split": {"folds": folds}, "train": {"image_size": image_size},
                                      "evaluate": {"n_bootstrap": 200}})
    run = cfg.out
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    generate(run / "data", n_patients=n_patients, seed=0, image_size=64)
    manifest = read_synthetic(run / "data")
    save_manifest(manifest, run / "manifest.parquet")
    save_splits(make_splits(manifest, seed=0, **cfg.split.model_dump()), run / "splits.json")
    for k in range(folds):
        torch.manual_seed(k)
        m = create_model(model, num_classes=2, in_chans=3)
        (run / f"fold_{k}").mkdir()
        save_file({n: t.contiguous() for n, t in m.state_dict().items()}, str(run / f"fold_{k}" / "model.safetensors"))
    if evaluate:
        _evaluate(run, cfg, folds)
    else:
        (run / "metrics.json").write_text(json.dumps({"operating_point": {"method": "youden", "threshold": 0.5}}))
    return run


def _evaluate(run: Path, cfg, folds: int) -> None:
    """Fold predictions of the untrained models, then the real evaluate stage (metrics.json with CIs)."""
    import pandas as pd
    from safetensors.torch import load_file

    from medlens.data.arrays import load_tensor
    from medlens.data.manifest import load_manifest
    from medlens.data.splits import load_splits
    from medlens.evaluate.study import evaluate_run
    from medlens.models import create_model
    from medlens.train.loop import predict_proba

    manifest, splits = load_manifest(run / "manifest.parquet"), load_splits(run / "splits.json")
    by_id = manifest.set_index("sample_id")
    for k in range(folds):
        model = create_model(cfg.model.name, num_classes=2, in_chans=3)
        model.load_state_dict(load_file(str(run / f"fold_{k}" / "model.safetensors")))
        frames = []
        for part, ids in (("val", splits["folds"][k]["val"]), ("test", splits["test"]), ("external", splits["external"])):
            rows = by_id.loc[ids].reset_index()
            p = predict_proba(model, load_tensor(rows, size=cfg.train.image_size, in_chans=3))
            frames.append(pd.DataFrame({"sample_id": ids, "part": part, "fold": k, "label": rows["label"].to_numpy(int),
                                        "p0": p[:, 0], "p1": p[:, 1]}))
        pd.concat(frames).to_parquet(run / f"fold_{k}" / "predictions.parquet", index=False)
    with warnings.catch_warnings():  # untrained models: undefined NPV etc. are expected
        warnings.simplefilter("ignore")
        evaluate_run(run, cfg)
