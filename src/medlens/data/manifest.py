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
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from medlens.errors import DataError, StageInputMissing

REQUIRED = ("sample_id", "patient_id", "site", "label", "image")
NPZ_SEP = "::"


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


@lru_cache(maxsize=4)
def _npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_image(ref: str, base: str | Path = ".") -> np.ndarray:
    """Load one image as float32 ``C×H×W`` in [0, 1].

    Parameters
    ----------
    ref : str
        File path (relative to ``base`` unless absolute), ``file.npz::key/index`` or
        ``file.dcm::frame/k``.
    base : path
        Folder that relative references are resolved against.

    Raises
    ------
    DataError
        The file is missing, unreadable or not an image; the message names it.
    """
    if NPZ_SEP in ref:
        file, inner = ref.split(NPZ_SEP, 1)
        key, index = inner.rsplit("/", 1)
        if key == "frame":
            from medlens.dicom import load_dicom_image

            return load_dicom_image(Path(base) / file, frame=int(index))
        arr = _npz(str(Path(base) / file))[key][int(index)]
    else:
        path = Path(base) / ref
        try:
            with Image.open(path) as im:
                im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
                arr = np.asarray(im)
        except FileNotFoundError:
            raise DataError(f"{path}: image file not found") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DataError(f"{path}: not a readable image ({err})") from None
    arr = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_mask(ref: str, base: str | Path = ".") -> np.ndarray:
    """Load a mask PNG as uint8 ``H×W`` with values {0, 1}."""
    path = Path(base) / ref
    try:
        with Image.open(path) as im:
            return (np.asarray(im.convert("L")) > 127).astype(np.uint8)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable mask ({err})") from None
