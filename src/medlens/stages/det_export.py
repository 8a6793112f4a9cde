"""``det_export``: the detector ensemble as ONNX with parity, its Triton repository and card; ``det/export/``."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.detection.export import export_detector
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Export the detectors with the QC limits and an OOD gate."""
    export_detector(run_dir, cfg)


STAGE = Stage("det_export", run, when=lambda cfg: cfg.task == "detection",
              sections=("trust.ood_fit_images", "trust.ood_pass_rate"),
              reads=("det/metrics.json", "qc_thresholds.json"),
              writes=("det/export/export.json", "sections/det_export/section.json"))
