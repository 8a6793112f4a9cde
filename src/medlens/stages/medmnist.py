"""``medmnist``: a MedMNIST study scored as the MedMNIST v2 evaluator does, beside the published rows."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.evaluate.medmnist import OUT, medmnist_stage
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Write ``medmnist/summary.json`` and the report's comparison section."""
    medmnist_stage(run_dir, cfg)


STAGE = Stage("medmnist", run,
              when=lambda cfg: cfg.data.source == "medmnist" and cfg.engine.task == "classification",
              sections=("data.path", "evaluate.baselines", "evaluate.n_bootstrap", "model.name", "train", "name",
                        "seed"),
              reads=("predictions.parquet",), writes=(f"{OUT}/summary.json",))
"""Its report section is written only when the run has a test part, so it is not a declared output."""
