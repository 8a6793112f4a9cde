"""``train``: one model per fold; ``fold_k/model.safetensors``, ``history.csv`` and ``predictions.parquet``.

Each fold is a resumable unit: a finished fold is not trained again, and a killed one
continues from its ``last.pt``. A finished fold's ``last.pt`` (three times the model's size)
is deleted once the fold is recorded, as nnU-Net drops its latest checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.data.splits import check_leakage, load_splits
from medlens.progress import progress_bar
from medlens.stages.protocol import Stage, run_unit, stage_key
from medlens.train.checkpoint import LAST
from medlens.train.fold import train_fold
from medlens.train.report import write_training_section

OUTPUTS = ("fold_{fold}/model.safetensors", "fold_{fold}/predictions.parquet")


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Train every fold whose outputs are missing or out of date; then the report's training section."""
    manifest, splits = load_manifest(run_dir / "manifest.parquet"), load_splits(run_dir / "splits.json")
    check_leakage(manifest, splits)
    key = stage_key(STAGE, run_dir, cfg)
    with progress_bar() as progress:
        for k in range(len(splits["folds"])):
            outputs = [run_dir / p.format(fold=k) for p in OUTPUTS]
            run_unit(run_dir, f"train_fold_{k}", {**key, "fold": str(k)}, outputs,
                     lambda k=k: train_fold(cfg, manifest, splits, k, progress, resume="auto"),
                     label=f"stage train: fold {k}")
            (run_dir / f"fold_{k}" / LAST).unlink(missing_ok=True)
    write_training_section(run_dir)


STAGE = Stage("train", run, sections=("model", "train", "engine", "seed"), reads=("manifest.parquet", "splits.json"),
              writes=(*OUTPUTS, "sections/train/section.json"))
