"""``split``: patient-grouped folds, test, external and temporal sets of the images that passed QC.

A study's split is made once. When its inputs or settings change, the split is made again
and compared with ``splits.json``: the same split is kept, a different one is an error
(nnU-Net verifies its splits the same way): the models, calibration and metrics already
in the run belong to the old one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.data.splits import check_leakage, load_splits, make_splits, save_splits
from medlens.errors import DataError
from medlens.stages.protocol import Stage


def passed_qc(manifest: pd.DataFrame, qc_path: Path) -> pd.DataFrame:
    """Rows whose image passed the quality gate (rejected ones are listed with reasons in qc.parquet)."""
    qc = pd.read_parquet(qc_path)
    ok = set(qc.loc[qc["passed"], "sample_id"])
    return manifest[manifest["sample_id"].isin(ok)]


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Write ``splits.json``, or verify that the existing one is the split these settings make.

    Raises
    ------
    DataError
        When ``splits.json`` exists and differs from the split made now.
    LeakageError
        When a patient would appear in two parts.
    """
    manifest = load_manifest(run_dir / "manifest.parquet")
    fresh = make_splits(passed_qc(manifest, run_dir / "qc.parquet"), seed=cfg.seed,
                        classify=cfg.task == "classification", **cfg.split.model_dump())
    path = run_dir / "splits.json"
    if path.is_file() and load_splits(path) != fresh:
        raise DataError(f"{path} holds a different split from the one the split settings (split:, seed) and the "
                        "images that passed QC (data:, qc:) make now; the models and metrics in this run belong to "
                        f"the old split. To keep them, undo the change; to start a new study, give it a new `name:` "
                        f"(or delete {run_dir})")
    check_leakage(manifest, fresh)
    save_splits(fresh, path)


STAGE = Stage("split", run, sections=("split", "seed", "task"), reads=("manifest.parquet", "qc.parquet"),
              writes=("splits.json",))
