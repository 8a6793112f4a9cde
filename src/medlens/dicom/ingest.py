"""DICOM ingest: walk a folder into manifest rows and turn pixel data into float images.

Images follow the medlens contract: ``float32`` C×H×W in [0, 1]. Grey images go through
the modality LUT (rescale slope/intercept), then the VOI LUT or the first window, then
MONOCHROME1 inversion; colour images are scaled by their bit depth.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medlens.dicom.reader import quiet_pydicom, read_dicom_file
from medlens.errors import DataError

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["sample_id", "patient_id", "site", "label", "image", "frame", "study_uid", "series_uid", "modality"]


def _str(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _site(ds: Dataset) -> str:
    """Clinical Trial Site ID, else Institution Name unless de-identified, else "unknown"."""
    for keyword in ("ClinicalTrialSiteID", "InstitutionName"):
        value = _str(ds, keyword)
        if value and value != "ANONYMIZED":
            return value
    return "unknown"


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _window(arr: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Apply the first Window Center/Width (linear, PS3.3 C.11.2.1.2) mapped to [0, 1]."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if isinstance(center, (MultiValue, list, tuple)) else center)
        w = float(width[0] if isinstance(width, (MultiValue, list, tuple)) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if w < 1:
        return None
    return np.clip((arr - (c - 0.5)) / max(w - 1.0, 1.0) + 0.5, 0.0, 1.0)


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)


def dataset_to_image(ds: Dataset, frame: int = 0) -> np.ndarray:
    """Convert one frame of ``ds`` to ``float32`` C×H×W in [0, 1].

    Raises
    ------
    DataError
        No pixel data, a frame out of range, or pixel data pydicom cannot decode here.
    """
    if "PixelData" not in ds:
        raise DataError("no pixel data")
    n = _frames(ds)
    if not 0 <= frame < n:
        raise DataError(f"frame {frame} out of range; the file has {n} frame(s)")
    try:
        with quiet_pydicom():
            ds.pixel_array_options(index=frame)  # decode this frame only, not all of them
            arr = ds.pixel_array
    except Exception as exc:
        raise DataError(f"cannot decode pixel data ({type(exc).__name__}: {str(exc)[:100]})") from None
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp > 1:  # colour (pydicom returns RGB for YBR inputs)
        bits = int(ds.get("BitsStored", 8) or 8)
        img = arr.astype(np.float32) / float((1 << bits) - 1)
        return np.ascontiguousarray(np.clip(img, 0, 1).transpose(2, 0, 1), dtype=np.float32)
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        with quiet_pydicom():
            img = _minmax(np.asarray(apply_voi_lut(values, ds), dtype=np.float64))
    else:
        windowed = _window(values, ds)
        img = windowed if windowed is not None else _minmax(values)
    if _str(ds, "PhotometricInterpretation") == "MONOCHROME1":
        img = 1.0 - img
    return np.ascontiguousarray(img[None], dtype=np.float32)


def load_dicom_image(path: Path | str, frame: int = 0) -> np.ndarray:
    """Read one frame of a DICOM file as ``float32`` C×H×W in [0, 1].

    Parameters
    ----------
    path : path
        A DICOM file (its name is not trusted; the content is checked).
    frame : int, default=0
        Frame of a multi-frame image.

    Returns
    -------
    ndarray of shape (C, H, W), float32
        C is 1 for grey images and 3 for colour.
    """
    return dataset_to_image(read_dicom_file(Path(path)), frame)


def read_dicom_tree(root: Path | str, *, site: str | None = None, check_pixels: bool = True) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Walk ``root`` and return one manifest row per image frame, plus the files skipped.

    Parameters
    ----------
    root : path
        Folder searched recursively; every file is sniffed, whatever its name.
    site : str, optional
        Site recorded on every row; default Clinical Trial Site ID, else Institution Name,
        else ``"unknown"``.
    check_pixels : bool, default=True
        Decode the first frame of each file so undecodable ones are skipped now, not
        during training.

    Returns
    -------
    manifest : pandas.DataFrame
        Columns :data:`MANIFEST_COLUMNS`, sorted by patient, study, series, instance and
        frame; ``label`` is missing (``pd.NA``).
    skipped : list of (str, str)
        ``(path, reason)`` for non-DICOM, unreadable and image-less files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the folder that holds the DICOM files")
    rows, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = read_dicom_file(path)
            if "PixelData" not in ds:
                raise DataError("no pixel data (not an image)")
            if check_pixels:
                dataset_to_image(ds, 0)
        except DataError as exc:
            skipped.append((str(path), str(exc)))
            continue
        sop = _str(ds, "SOPInstanceUID") or hashlib.sha256(path.read_bytes()).hexdigest()
        key = hashlib.sha1(f"{sop}|{path.relative_to(root).as_posix()}".encode()).hexdigest()[:12]
        try:
            instance = int(ds.get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            instance = 0
        for frame in range(_frames(ds)):
            rows.append({
                "sample_id": f"dcm-{key}-f{frame}",
                "patient_id": _str(ds, "PatientID"),
                "site": site or _site(ds),
                "label": pd.NA,
                "image": str(path),
                "frame": frame,
                "study_uid": _str(ds, "StudyInstanceUID"),
                "series_uid": _str(ds, "SeriesInstanceUID"),
                "modality": _str(ds, "Modality"),
                "_instance": instance,
            })
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + ["_instance"])
    frame = frame.sort_values(["patient_id", "study_uid", "series_uid", "_instance", "image", "frame"], kind="stable")
    frame = frame.drop(columns="_instance").reset_index(drop=True)
    frame["label"] = frame["label"].astype("Int64")
    frame["frame"] = frame["frame"].astype("int64")
    log.info("ingested %d frames from %d files; %d files skipped", len(frame), frame["image"].nunique(), len(skipped))
    return frame, skipped
