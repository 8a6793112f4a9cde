"""The Manifest: one row per image, saved as ``manifest.parquet`` in the run directory.

Required columns
----------------
sample_id : str, unique
patient_id : str (pseudonymous; a source without patient IDs uses one patient per image
    and says so in ``patient_id_source``)
site : str
label : integer class index, or <NA> for unlabeled rows
image : str, a file path relative to the manifest's base folder or absolute, an array
    reference ``/path/file.npz::<key>/<index>``, or a DICOM frame ``/path/file.dcm::frame/<k>``

Optional columns: ``label_name``, ``mask``, ``fov_mask``, ``mask_2`` (a second observer),
``roi_x0 roi_y0 roi_x1 roi_y1`` (expert box),
``label_<annotator>``, ``severity``, ``split`` (a source's predefined split),
``qc_defect``, ``is_ood``, ``label_true`` (phantom ground truth), ``patient_id_source``.

The images themselves are decoded by :mod:`medlens.data.images` (``load_image``, ``load_mask``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlens.errors import DataError, StageInputMissing

__all__ = ["REQUIRED", "load_manifest", "save_manifest", "validate_manifest"]

REQUIRED = ("sample_id", "patient_id", "site", "label", "image")


def validate_manifest(df: pd.DataFrame, *, source: str = "manifest") -> pd.DataFrame:
    """Check the required columns and types; return a copy with canonical dtypes."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; have {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{source}: no images found")
    dup = df["sample_id"][df["sample_id"].duplicated()]
    if len(dup):
        raise DataError(f"{source}: duplicate sample_id(s) {list(dup.head(5))}")
    out = df.copy()
    for col in ("sample_id", "patient_id", "site", "image"):
        out[col] = out[col].astype(str)
    try:
        out["label"] = pd.array(out["label"], dtype="Int64")
    except (TypeError, ValueError) as err:
        raise DataError(f"{source}: column 'label' must hold integer class indices ({err})") from None
    return out.reset_index(drop=True)


def save_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest as parquet (atomically: a crash leaves no half-written file)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    validate_manifest(df).to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def load_manifest(path: str | Path) -> pd.DataFrame:
    """Read ``manifest.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise StageInputMissing(f"{path} not found; run `medlens ingest` (or `medlens run`) first")
    return validate_manifest(pd.read_parquet(path), source=str(path))
