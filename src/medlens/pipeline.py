"""The main job, staged through files in the run directory (nnU-Net style).

Each stage reads named inputs and writes named outputs. A stage is skipped when the
hash of its config section, its input files and the medlens version matches what it
recorded last time and its outputs still exist, so ``medlens run`` after a crash or an
edit continues where it has to and never recomputes what did not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import medlens
from medlens.config import StudyConfig, dump_config
from medlens.data import sources
from medlens.data.arrays import load_tensor
from medlens.data.manifest import load_manifest, save_manifest
from medlens.data.splits import check_leakage, load_splits, make_splits, save_splits
from medlens.data.synthetic import generate
from medlens.models import create_model
from medlens.train.loop import fit, predict_proba

log = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's listing (relative path, size, mtime)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def run_stage(run: Path, name: str, key: dict, outputs: list[Path], fn: Callable[[], None]) -> bool:
    """Run ``fn`` unless its recorded key matches and all ``outputs`` exist.

    Returns True if the stage ran. The key is recorded only after ``fn`` returns, so an
    interrupted stage reruns next time.
    """
    state = run / ".stages" / f"{name}.json"
    digest = hashlib.sha256(json.dumps({"v": medlens.__version__, **key}, sort_keys=True, default=str).encode()).hexdigest()
    if state.is_file() and json.loads(state.read_text()).get("key") == digest and all(p.exists() for p in outputs):
        log.info("stage %s: up to date, skipped", name)
        return False
    state.parent.mkdir(parents=True, exist_ok=True)
    state.unlink(missing_ok=True)
    t0 = time.perf_counter()
    fn()
    state.write_text(json.dumps({"key": digest, "seconds": round(time.perf_counter() - t0, 3)}))
    log.info("stage %s: done in %.1f s", name, time.perf_counter() - t0)
    return True


def progress_bar() -> Progress:
    """The progress display used by every long stage."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True)


def source_path(cfg: StudyConfig) -> Path:
    """The folder or file the ingest stage reads."""
    return cfg.out / "data" if cfg.data.source == "synthetic" else Path(cfg.data.path)


def ingest(cfg: StudyConfig) -> pd.DataFrame:
    """Read the configured source into a Manifest."""
    d = cfg.data
    if d.source == "synthetic":
        return sources.read_synthetic(source_path(cfg))
    if d.source == "medmnist":
        return sources.read_medmnist(d.path)
    if d.source == "imagefolder":
        return sources.read_imagefolder(d.path, on_error=d.on_error)
    return sources.read_csv(d.path, d.csv_columns, on_error=d.on_error)


def num_classes(manifest: pd.DataFrame) -> int:
    """Number of classes: the largest label index + 1 (at least 2)."""
    return max(2, int(manifest["label"].max()) + 1)


def train_fold(cfg: StudyConfig, manifest: pd.DataFrame, splits: dict, k: int, progress: Progress) -> None:
    """Train fold ``k`` and write its model, history and predictions (val, test, external)."""
    fold_dir = cfg.out / f"fold_{k}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    by_id = manifest.set_index("sample_id")
    parts = {"val": splits["folds"][k]["val"], "test": splits["test"], "external": splits["external"]}
    train_ids = splits["folds"][k]["train"]
    size, chans = cfg.train.image_size, cfg.model.in_chans

    def tensor(ids: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        rows = by_id.loc[ids].reset_index()
        return load_tensor(rows, size=size, in_chans=chans), rows["label"].to_numpy(int)

    k_classes = num_classes(manifest)
    model = create_model(cfg.model.name, num_classes=k_classes, in_chans=chans, pretrained=cfg.model.pretrained)
    fit(model, tensor(train_ids), tensor(parts["val"]), cfg.train, num_classes=k_classes,
        seed=cfg.seed * 1000 + k, out_dir=fold_dir, progress=progress)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(fold_dir / "model.safetensors")))
    frames = []
    for part, ids in parts.items():
        if not ids:
            continue
        x, y = tensor(ids)
        proba = predict_proba(model, x)
        frame = pd.DataFrame({"sample_id": ids, "part": part, "fold": k, "label": y})
        for c in range(proba.shape[1]):
            frame[f"p{c}"] = proba[:, c]
        frames.append(frame)
    pd.concat(frames, ignore_index=True).to_parquet(fold_dir / "predictions.parquet", index=False)


def run_study(cfg: StudyConfig) -> Path:
    """Run every stage of the study and return the run directory.

    Stages: synth (synthetic source only) → ingest → split (+ leakage check) → train
    each fold → evaluate → report.
    """
    run = cfg.out
    run.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cfg_key = cfg.model_dump(mode="json")
    (run / "config.yaml").write_text(dump_config(cfg) + f"# versions: medlens {medlens.__version__}, torch {torch.__version__}\n")

    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        run_stage(run, "synth", {"synthetic": cfg_key["data"]["synthetic"], "seed": cfg.seed},
                  [run / "data" / "manifest.csv"],
                  lambda: generate(run / "data", seed=cfg.seed, **s.model_dump()))
    manifest_path = run / "manifest.parquet"
    run_stage(run, "ingest", {"data": cfg_key["data"], "source": file_digest(source_path(cfg))}, [manifest_path],
              lambda: save_manifest(ingest(cfg), manifest_path))
    splits_path = run / "splits.json"
    run_stage(run, "split", {"split": cfg_key["split"], "seed": cfg.seed, "manifest": file_digest(manifest_path)},
              [splits_path], lambda: save_splits(make_splits(load_manifest(manifest_path), seed=cfg.seed,
                                                                 **cfg.split.model_dump()), splits_path))
    manifest, splits = load_manifest(manifest_path), load_splits(splits_path)
    check_leakage(manifest, splits)

    train_key = {"model": cfg_key["model"], "train": cfg_key["train"], "seed": cfg.seed,
                 "manifest": file_digest(manifest_path), "splits": file_digest(splits_path)}
    with progress_bar() as progress:
        for k in range(len(splits["folds"])):
            out = run / f"fold_{k}"
            run_stage(run, f"train_fold_{k}", {**train_key, "fold": k},
                      [out / "model.safetensors", out / "predictions.parquet"],
                      lambda k=k: train_fold(cfg, manifest, splits, k, progress))
    from medlens.evaluate.study import evaluate_run
    from medlens.report import write_report

    preds = [run / f"fold_{k}" / "predictions.parquet" for k in range(len(splits["folds"]))]
    pred_key = {"predictions": [file_digest(p) for p in preds], "manifest": file_digest(manifest_path)}
    run_stage(run, "evaluate", {**pred_key, "evaluate": cfg_key["evaluate"], "seed": cfg.seed}, [run / "metrics.json"],
              lambda: evaluate_run(run, cfg))
    run_stage(run, "report", {**pred_key, "metrics": file_digest(run / "metrics.json"), "config": cfg_key},
              [run / "report.html"], lambda: write_report(run, cfg))
    return run
