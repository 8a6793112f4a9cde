"""``seg``: the segmentation study (``task: segmentation``): U-Nets per fold, pixel and lesion metrics; ``seg/``."""

from __future__ import annotations

from pathlib import Path

import torch

from medlens.config import StudyConfig
from medlens.progress import progress_bar
from medlens.seg.stage import seg_stage
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Train and evaluate the segmentation networks.

    Whole-image networks at 64 px are small: one thread is as fast as two on an idle 2-core
    machine, and 20x faster than two when other jobs share the cores. Full-resolution
    patches (``seg.resample`` native / fov) are big enough to use every core.
    """
    threads = torch.get_num_threads()
    if cfg.seg.resample == "square":
        torch.set_num_threads(1)
    try:
        with progress_bar() as progress:
            seg_stage(run_dir, cfg, progress=progress)
    finally:
        torch.set_num_threads(threads)


STAGE = Stage("seg", run, when=lambda cfg: cfg.task == "segmentation",
              sections=("seg", "train", "model", "evaluate", "seed"),
              reads=("manifest.parquet", "splits.json", "qc.parquet"),
              writes=("seg/metrics.json", "sections/seg/section.json"))
