"""Train one cross-validation fold of a study and write its predictions.

Reads the Manifest and splits of the run directory, prepares the images once (ROI crop,
CLAHE, resize, channels), builds the network, runs :func:`medlens.train.loop.fit` and,
on rank 0, writes ``fold_<k>/predictions.parquet`` for the validation, test and external
parts with the best epoch's weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from safetensors.torch import load_file

from medlens.config import StudyConfig
from medlens.data.cache import ImageCache, build_cache
from medlens.data.preprocess import Preprocess
from medlens.errors import DataError
from medlens.models import create_model, num_outputs
from medlens.train.distributed import is_main
from medlens.train.loop import FitResult, fit, predict_proba, seed_everything

log = logging.getLogger(__name__)


def target_columns(cfg: StudyConfig) -> list[str]:
    """The manifest column(s) the task learns."""
    t = cfg.engine.target
    return [t] if isinstance(t, str) else list(t)


def task_classes(cfg: StudyConfig, manifest: pd.DataFrame) -> int:
    """Classes (classification: largest label + 1, at least 2), label columns (multilabel) or 1 (regression)."""
    cols = target_columns(cfg)
    if cfg.engine.task == "classification":
        return max(2, int(manifest[cols[0]].max()) + 1)
    return len(cols) if cfg.engine.task == "multilabel" else 1


def targets(cfg: StudyConfig, rows: pd.DataFrame) -> np.ndarray:
    """Training targets of ``rows``: int classes, a 0/1 matrix or float values."""
    cols = target_columns(cfg)
    missing = [c for c in cols if c not in rows.columns]
    if missing:
        raise DataError(f"engine.target: manifest has no column {', '.join(missing)} "
                        f"(columns: {', '.join(map(str, rows.columns))})")
    try:
        if cfg.engine.task == "classification":
            return rows[cols[0]].to_numpy(int)
        if cfg.engine.task == "multilabel":
            return rows[cols].to_numpy(np.float32)
        return rows[cols[0]].to_numpy(np.float32)
    except (TypeError, ValueError):
        raise DataError(f"engine.target: column(s) {', '.join(cols)} must be numeric for a {cfg.engine.task} task "
                        f"(0/1 per label for multilabel)") from None


class FoldData:
    """Images of a manifest prepared by the study's contract, read from the run's image cache."""

    def __init__(self, cfg: StudyConfig, manifest: pd.DataFrame) -> None:
        self.cfg, self.by_id, self.pre = cfg, manifest.set_index("sample_id"), Preprocess.from_config(cfg)

    def __call__(self, ids: list[str]) -> tuple[ImageCache, np.ndarray]:
        """The images of ``ids`` (prepared now where the cache lacks them) and their targets."""
        rows = self.by_id.loc[ids].reset_index()
        return build_cache(self.cfg.out, rows["image"].tolist(), self.pre), targets(self.cfg, rows)


def build_model(cfg: StudyConfig, classes: int) -> torch.nn.Module:
    """The study's network with the head its task needs."""
    return create_model(cfg.model.name, num_classes=num_outputs(cfg.engine.task, classes), in_chans=cfg.model.in_chans,
                        pretrained=cfg.model.pretrained, image_size=cfg.train.image_size, drop_rate=cfg.model.drop_rate)


def fold_dir(run: Path, k: int, repeat: int = 0) -> Path:
    """``run/fold_k`` (the shipped models: repeat 0), or ``run/repeat_r/fold_k`` for a further repeat."""
    return Path(run) / (f"repeat_{repeat}" if repeat else "") / f"fold_{k}"


def train_fold(cfg: StudyConfig, manifest: pd.DataFrame, splits: dict, k: int, progress: Progress | None = None,
               *, resume: bool | str = "auto", repeat: int = 0) -> FitResult:
    """Train fold ``k``; write model, history, ``last.pt`` and predictions (val, test, external).

    Parameters
    ----------
    resume : {'auto', True, False}
        'auto' continues from a ``fold_k/last.pt`` written with the same settings (so
        ``medlens run`` after a kill picks up mid-fold); True requires one.
    repeat : int
        The repeat of a repeated cross-validation (``splits`` are that repeat's): its
        models go to :func:`fold_dir` and start from other initial weights.
    """
    out_dir = fold_dir(cfg.out, k, repeat)
    if is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    data = FoldData(cfg, manifest)
    parts = {"val": splits["folds"][k]["val"], "test": splits["test"], "external": splits["external"]}
    classes = task_classes(cfg, manifest)
    seed = cfg.seed * 1000 + k + 1_000_000 * repeat
    seed_everything(seed)  # the initial weights depend on the fold's seed only, not on what ran before
    model = build_model(cfg, classes)
    val = data(parts["val"])
    result = fit(model, data(splits["folds"][k]["train"]), val, cfg.train, num_classes=classes, seed=seed,
                 out_dir=out_dir, progress=progress, engine=cfg.engine, resume=resume)
    if is_main():
        write_predictions(model, data, parts, k, out_dir, cfg, cache={"val": val})
    return result


def write_predictions(model: torch.nn.Module, data: FoldData, parts: dict, k: int, fold_dir: Path, cfg: StudyConfig,
                      *, cache: dict | None = None) -> Path:
    """Scores of the best epoch for every part: ``sample_id, part, fold, label, p0..pK`` (or ``pred``)."""
    device = next(model.parameters()).device
    model.load_state_dict({key: v.to(device) for key, v in load_file(str(fold_dir / "model.safetensors")).items()})
    frames = []
    for part, ids in parts.items():
        if not ids:
            continue
        x, y = (cache or {}).get(part) or data(ids)
        proba = predict_proba(model, x, task=cfg.engine.task)
        frame = pd.DataFrame({"sample_id": ids, "part": part, "fold": k})
        if cfg.engine.task == "regression":
            frame["label"], frame["pred"] = y, proba[:, 0]
        elif cfg.engine.task == "multilabel":
            for j, col in enumerate(target_columns(cfg)):
                frame[col], frame[f"p{j}"] = y[:, j], proba[:, j]
        else:
            frame["label"] = y
            for c in range(proba.shape[1]):
                frame[f"p{c}"] = proba[:, c]
        frames.append(frame)
    path = fold_dir / "predictions.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return path
