"""``export``: ONNX with parity from the raw files, the Triton repository and the cards; ``export/``."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.export.stage import export_stage
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Export the k-fold ensemble with everything the service needs."""
    export_stage(run_dir, cfg)


STAGE = Stage("export", run, when=lambda cfg: cfg.engine.task == "classification",
              sections=("explain", "trust.ood_fit_images", "trust.ood_pass_rate", "engine.preprocess", "seed"),
              reads=("predictions.parquet", "metrics.json", "manifest.parquet", "qc_thresholds.json",
                     "fold_{fold}/model.safetensors", "fold_{fold}/calibration.json"),
              writes=("export/model.onnx", "export/export.json", "export/model_repository", "export/cam.safetensors",
                      "sections/export/section.json"))
