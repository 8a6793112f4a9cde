"""``det_evaluate``: the fold detectors on test and external images: FROC/CPM, mAP, per-lesion results; ``det/``."""

from __future__ import annotations

from pathlib import Path

import torch

from medlens.config import StudyConfig
from medlens.detection.stage import det_stage, detection_folds
from medlens.stages.protocol import Stage, fold_count


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Evaluate the detectors (and detection by segmentation beside them, where trained)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        det_stage(run_dir, cfg)
    finally:
        torch.set_num_threads(threads)


STAGE = Stage("det_evaluate", run, when=lambda cfg: cfg.task == "detection",
              sections=("detection", "evaluate", "seed"),
              reads=("manifest.parquet", "splits.json", "det/fold_{fold}/model.safetensors",
                     "det/fold_{fold}/seg/model.safetensors?"),
              writes=("det/metrics.json", "det/predictions.parquet", "sections/det/section.json"),
              folds=lambda run_dir, cfg: detection_folds(cfg, fold_count(run_dir)))
