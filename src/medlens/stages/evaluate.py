"""``evaluate``: per-fold calibration, the pooled ``predictions.parquet`` and ``metrics.json`` with 95% CIs."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.evaluate.study import evaluate_run
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Calibrate each fold on its validation patients, pool, and score every part."""
    evaluate_run(run_dir, cfg)


def classifies(cfg: StudyConfig) -> bool:
    """The stages after training score classification; regression and multilabel engines stop at the folds."""
    return cfg.engine.task == "classification"


STAGE = Stage("evaluate", run, sections=("evaluate", "seed"), when=classifies,
              reads=("manifest.parquet", "splits.json", "fold_{fold}/predictions.parquet"),
              writes=("predictions.parquet", "metrics.json", "operating_point.json", "fold_{fold}/calibration.json",
                      "sections/evaluate/section.json"))
