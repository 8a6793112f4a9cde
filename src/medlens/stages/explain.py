"""``explain``: heat maps of the test images scored against the expert's region; ``explain/summary.json``."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.explain.stage import explain_stage
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Explain the test images and score the maps."""
    explain_stage(run_dir, cfg)


STAGE = Stage("explain", run, sections=("explain", "evaluate.n_bootstrap", "engine.preprocess", "seed"),
              when=lambda cfg: cfg.engine.task == "classification",
              reads=("predictions.parquet", "operating_point.json", "manifest.parquet",
                     "fold_{fold}/model.safetensors",
                     "fold_{fold}/calibration.json"),
              writes=("explain/summary.json", "sections/explain/section.json"))
