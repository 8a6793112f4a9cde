"""``trust``: uncertainty, the OOD gate, the label and annotator audit; ``trust/summary.json``."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.stages.protocol import Stage
from medlens.trust.stage import trust_stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Audit the finished run."""
    trust_stage(run_dir, cfg)


STAGE = Stage("trust", run, sections=("trust", "engine.preprocess", "seed", "evaluate.local_fraction",
                                      "evaluate.new_site_rule", "evaluate.target_sensitivity",
                                      "evaluate.target_specificity"),
              when=lambda cfg: cfg.engine.task == "classification",
              reads=("predictions.parquet", "operating_point.json", "manifest.parquet",
                     "fold_{fold}/model.safetensors",
                     "fold_{fold}/calibration.json"),
              writes=("trust/summary.json", "trust/ood.safetensors", "sections/trust/section.json"))
