"""``det_train``: the lesion detector per fold (and, where masks exist, the U-Net it is compared with).

Each fold is a resumable unit: a finished fold is not trained again, a killed one
continues from its ``last.pt``, which is deleted once the fold is recorded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medlens.config import StudyConfig
from medlens.detection.stage import compares_segmentation, detection_folds, study_rows, train_fold, train_seg_fold
from medlens.progress import progress_bar
from medlens.stages.protocol import Stage, config_value, digest, fold_count, run_unit, stage_key
from medlens.train.checkpoint import LAST


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Train every fold whose model is missing or out of date (64-px networks: one thread)."""
    by_id, splits = study_rows(run_dir)
    key = stage_key(STAGE, run_dir, cfg)
    seg_key = {**key, "config:seg": digest(config_value(cfg, "seg"))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is as fast as two here, and far faster on a shared machine
    try:
        with progress_bar() as progress:
            folds = range(detection_folds(cfg, len(splits["folds"])))
            for k in folds:
                run_unit(run_dir, f"det_fold_{k}", {**key, "fold": str(k)},
                         [run_dir / "det" / f"fold_{k}" / "model.safetensors"],
                         lambda k=k: train_fold(cfg, run_dir, k, progress=progress), label=f"stage det_train: fold {k}")
                (run_dir / "det" / f"fold_{k}" / LAST).unlink(missing_ok=True)
            if compares_segmentation(cfg, by_id):
                for k in folds:
                    run_unit(run_dir, f"det_seg_fold_{k}", {**seg_key, "fold": str(k)},
                             [run_dir / "det" / f"fold_{k}" / "seg" / "model.safetensors"],
                             lambda k=k: train_seg_fold(cfg, run_dir, k, progress=progress),
                             label=f"stage det_train: segmentation fold {k}")
    finally:
        torch.set_num_threads(threads)


def _boxes(cfg: StudyConfig) -> tuple[str, ...]:
    return ("data/boxes.parquet",) if cfg.detection.boxes else ()


STAGE = Stage("det_train", run, when=lambda cfg: cfg.task == "detection",
              sections=("detection", "train", "model", "engine", "seed"),
              reads=lambda cfg: ("manifest.parquet", "splits.json", "qc.parquet", *_boxes(cfg)),
              writes=("det/fold_{fold}/model.safetensors",),
              folds=lambda run_dir, cfg: detection_folds(cfg, fold_count(run_dir)))
