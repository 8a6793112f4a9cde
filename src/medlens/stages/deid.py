"""``deid``: DICOM files de-identified into ``run/dicom/out`` with an audit log (DICOM sources only)."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.data.dicom_study import deid_stage, study_secret
from medlens.stages.protocol import Stage, file_digest


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """De-identify ``data.path`` (PS3.15 Annex E) with the study's secret."""
    deid_stage(cfg.data, run_dir / "dicom", study_secret(cfg.data))


def check(cfg: StudyConfig) -> None:
    """No secret, no run: refuse before anything is written."""
    study_secret(cfg.data)


STAGE = Stage("deid", run, sections=("data",), writes=("dicom/deid_audit.jsonl",),
              when=lambda cfg: cfg.data.source == "dicom",
              extra_key=lambda cfg: {"input": file_digest(Path(cfg.data.path))}, check=check)
