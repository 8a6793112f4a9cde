"""``ingest``: the manifest of the study's images, under pseudonyms for every source but the phantom.

An image folder, table or MedMNIST file is read here only: its pixels are copied into
``run/data/`` under keyed pseudonyms and the map back is written outside the run directory
(mode 0600). DICOM arrives de-identified by the ``deid`` stage; the phantom is synthetic.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medlens.config import StudyConfig
from medlens.data import sources
from medlens.data.manifest import save_manifest
from medlens.data.pseudonyms import (PRIVATE_DIR, STAGED_BOXES, check_outside, project_secret, pseudonymise,
                                     save_key, stage_box_table)
from medlens.dicom.deid import DeidContext
from medlens.progress import track
from medlens.stages.protocol import Stage, file_digest

log = logging.getLogger(__name__)


def pseudonym_map_path(cfg: StudyConfig) -> Path:
    """Where the map from pseudonyms back to the originals goes: ``data.pseudonym_map``, else beside the secret."""
    return Path(cfg.data.pseudonym_map or cfg.out.parent / PRIVATE_DIR / f"{cfg.out.name}-pseudonyms.csv")


def _secret(cfg: StudyConfig) -> bytes:
    return project_secret(cfg.data.secret_file, cfg.out.parent / PRIVATE_DIR)[0]


def _boxes(cfg: StudyConfig) -> Path | None:
    return Path(cfg.detection.boxes) if cfg.task == "detection" and cfg.detection.boxes else None


def pseudonymised(cfg: StudyConfig) -> None:
    """Read an image folder, table or MedMNIST file; write the pseudonymised manifest and the staged pixels."""
    run = cfg.out
    original = sources.read_source(cfg.data, Path(cfg.data.path))
    key_path = pseudonym_map_path(cfg)
    manifest, key = pseudonymise(original, _secret(cfg), run.resolve() / "data", age_bins=cfg.data.age_bins,
                                 progress=lambda it: track(it, total=len(original),
                                                           description="ingest: pseudonymising"))
    save_key(key, key_path, run)
    boxes = _boxes(cfg)
    if boxes is not None:  # its image column names the originals
        from medlens.detection.data import load_box_table

        load_box_table(boxes, original)  # every check, naming the user's table and row
        stage_box_table(boxes, manifest, key, run / STAGED_BOXES)
    save_manifest(manifest, run / "manifest.parquet")
    log.info("ingest: %d images of %d patients under pseudonyms; the map back is %s", len(manifest),
             manifest["patient_id"].nunique(), key_path)


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Write ``manifest.parquet`` (and, for a detection study with a box table, ``data/boxes.parquet``)."""
    if cfg.data.source == "synthetic":
        save_manifest(sources.read_source(cfg.data, run_dir / "data"), run_dir / "manifest.parquet")
    elif cfg.data.source == "dicom":
        from medlens.data.dicom_study import read_labelled, study_secret

        save_manifest(read_labelled(cfg.data, run_dir / "dicom", study_secret(cfg.data)), run_dir / "manifest.parquet")
    else:
        pseudonymised(cfg)


def _reads(cfg: StudyConfig) -> tuple[str, ...]:
    if cfg.data.source == "synthetic":
        return ("data/manifest.csv", "data")
    return ("dicom/deid_audit.jsonl",) if cfg.data.source == "dicom" else ()


def _writes(cfg: StudyConfig) -> tuple[str, ...]:
    if cfg.data.source in ("synthetic", "dicom"):
        return ("manifest.parquet",)
    return ("manifest.parquet", "data/images")


def _extra(cfg: StudyConfig) -> dict:
    if cfg.data.source == "synthetic":
        return {}
    if cfg.data.source == "dicom":
        return {"labels": file_digest(Path(cfg.data.labels))}
    boxes = _boxes(cfg)
    return {"source": file_digest(Path(cfg.data.path)),
            "secret": DeidContext(_secret(cfg)).join_key("secret-check", ""),
            "boxes": file_digest(boxes) if boxes else None}


def _check(cfg: StudyConfig) -> None:
    """Refuse a map inside the run and make (or read) the secret before anything is written."""
    if cfg.data.source not in ("synthetic", "dicom"):
        check_outside(pseudonym_map_path(cfg), cfg.out)
        _secret(cfg)


STAGE = Stage("ingest", run, sections=("data", "task"), reads=_reads, writes=_writes, extra_key=_extra,
              check=_check)
