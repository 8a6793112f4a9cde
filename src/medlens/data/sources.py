"""Readers that each turn an input into a Manifest (see :mod:`medlens.data.manifest`).

- :func:`read_synthetic`: a folder written by ``medlens synth``.
- :func:`read_medmnist`: a MedMNIST ``.npz`` (local path only). MedMNIST has no patient
  IDs, so every image is its own patient; the official split goes into ``split``.
- :func:`read_imagefolder`: one sub-folder per class.
- :func:`read_csv`: a user's CSV table, columns mapped by :class:`~medlens.config.CsvColumns`.
- :func:`read_dicom`: a folder of DICOM files that ``medlens deid`` has de-identified.

Image paths are stored absolute so the manifest does not depend on the working directory.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from medlens.config import CsvColumns, DataConfig
from medlens.data.images import NPZ_SEP
from medlens.data.manifest import validate_manifest
from medlens.errors import DataError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
NO_PATIENT_IDS = "none: one patient per image"


def read_synthetic(folder: str | Path) -> pd.DataFrame:
    """Read a phantom folder (``manifest.csv`` + ``images/`` + ``masks/``)."""
    folder = Path(folder).resolve()
    table = folder / "manifest.csv"
    if not table.is_file():
        raise DataError(f"{table}: not found; create it with `medlens synth --out {folder}`")
    df = pd.read_csv(table, dtype={"sample_id": str, "patient_id": str, "site": str, "qc_defect": str}, keep_default_na=True)
    df["qc_defect"] = df["qc_defect"].fillna("")
    df["image"] = [str(folder / p) for p in df["image"]]
    df["mask"] = [str(folder / p) for p in df["mask"]]
    df["patient_id_source"] = "synthetic"
    for col in [c for c in df.columns if c.startswith("label") or c == "severity"]:
        df[col] = pd.array(df[col], dtype="Int64")
    return validate_manifest(df, source=str(table))


def read_medmnist(path: str | Path) -> pd.DataFrame:
    """Read a MedMNIST v2 ``.npz`` with its official train/val/test split.

    Binary and multi-class files give ``label`` = the class index; multi-label files
    (several label columns) are rejected with a clear message for now.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DataError(f"{path}: MedMNIST file not found (medlens never downloads data; pass a local .npz)")
    try:
        with np.load(path) as z:
            labels = {s: z[f"{s}_labels"] for s in ("train", "val", "test")}
            shapes = {s: z[f"{s}_images"].shape for s in ("train", "val", "test")}
    except (KeyError, ValueError, OSError) as err:
        raise DataError(f"{path}: not a MedMNIST .npz (need train/val/test _images and _labels; {err})") from None
    if labels["train"].ndim == 2 and labels["train"].shape[1] > 1:
        raise DataError(f"{path}: multi-label MedMNIST files are not supported yet ({labels['train'].shape[1]} labels)")
    frames = []
    for split, y in labels.items():
        n = shapes[split][0]
        ids = [f"{split}_{i:06d}" for i in range(n)]
        frames.append(
            pd.DataFrame(
                {
                    "sample_id": ids,
                    "patient_id": ids,
                    "site": "medmnist",
                    "label": y.reshape(n).astype(np.int64),
                    "image": [f"{path}{NPZ_SEP}{split}_images/{i}" for i in range(n)],
                    "split": split,
                    "patient_id_source": NO_PATIENT_IDS,
                }
            )
        )
    return validate_manifest(pd.concat(frames, ignore_index=True), source=str(path))


def _check_image(path: Path, on_error: str) -> bool:
    """True if the file decodes as an image; otherwise raise or log and skip."""
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        if on_error == "raise":
            raise DataError(f"{path}: not a readable image ({err}); set data.on_error: skip to skip such files") from None
        log.warning("skipping %s: not a readable image (%s)", path, err)
        return False


def read_imagefolder(folder: str | Path, *, on_error: str = "raise") -> pd.DataFrame:
    """Read ``folder/<class>/<image>``; classes are indexed in sorted order.

    There are no patient IDs in an image folder, so every image is its own patient.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{folder}: expected one sub-folder per class (at least 2), found {classes}")
    rows = []
    for k, name in enumerate(classes):
        for f in sorted((folder / name).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and _check_image(f, on_error):
                sid = f"{name}/{f.relative_to(folder / name).as_posix()}"
                rows.append({"sample_id": sid, "patient_id": sid, "site": "local", "label": k,
                             "label_name": name, "image": str(f), "patient_id_source": NO_PATIENT_IDS})
    return validate_manifest(pd.DataFrame(rows), source=str(folder))


def read_csv(path: str | Path, columns: CsvColumns = CsvColumns(), *, on_error: str = "raise") -> pd.DataFrame:
    """Read a CSV or Parquet manifest of the user's; paths are relative to the table's folder unless absolute.

    Besides image, label, patient and site: annotators' label columns (``label_<name>``),
    the expert's box (``roi_x0`` ... ``roi_y1``), mask and field-of-view mask paths,
    severity, acquisition date and metadata columns, as ``columns`` maps them. Every
    problem names the table, the row (as a spreadsheet numbers it) and the column.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DataError(f"{path}: table not found")
    try:
        raw = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable table ({err})") from None
    extra = [*(columns.annotators or []), *(columns.roi or []), columns.mask, columns.fov_mask, columns.second_mask,
             columns.severity, columns.date, *columns.metadata]
    need = [c for c in (columns.image, columns.label, columns.patient_id, columns.site, *extra) if c]
    missing = [c for c in dict.fromkeys(need) if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: column(s) {missing} not found; have {list(raw.columns)} (map them in data.csv_columns)")
    raw = raw.reset_index(drop=True)
    row = lambda i, col: f"{path}: row {i + 2}, column '{col}'"  # noqa: E731 - header is row 1
    images = [Path(p) if Path(p).is_absolute() else path.parent / p for p in raw[columns.image].astype(str)]
    keep = [_image_ok(f, on_error, row(i, columns.image)) for i, f in enumerate(images)]
    raw, images = raw[keep].reset_index(drop=True), [f for f, k in zip(images, keep) if k]
    label_cols = [columns.label, *(c for c in columns.annotators or [] if c != columns.label)]
    values = pd.concat([raw[c] for c in label_cols]).dropna()
    names = None
    if not pd.api.types.is_integer_dtype(values) and not values.map(lambda v: float(v).is_integer()
                                                                    if isinstance(v, (int, float)) else False).all():
        names = sorted(values.astype(str).unique())

    def encode(col: str) -> pd.Series:
        v = raw[col]
        return v.map(lambda x: pd.NA if pd.isna(x) else (names.index(str(x)) if names else int(x))).astype("Int64")

    sample_ids = [f.relative_to(path.parent).as_posix() if f.is_relative_to(path.parent) else str(f) for f in images]
    df = pd.DataFrame({
        "sample_id": sample_ids,
        "patient_id": raw[columns.patient_id].astype(str).values if columns.patient_id else sample_ids,
        "site": raw[columns.site].astype(str).values if columns.site else "local",
        "label": encode(columns.label).values,
        "image": [str(f) for f in images],
        "patient_id_source": "manifest" if columns.patient_id else NO_PATIENT_IDS,
    })
    if names is not None:
        df["label_name"] = [names[i] if pd.notna(i) else None for i in df["label"]]
    for col in columns.annotators or []:
        df[f"label_{re.sub(r'[^0-9A-Za-z]+', '_', col).strip('_')}"] = encode(col).values
    if columns.roi:
        for name, col in zip(("roi_x0", "roi_y0", "roi_x1", "roi_y1"), columns.roi):
            df[name] = pd.to_numeric(raw[col], errors="coerce").values
    for key, col in (("mask", columns.mask), ("fov_mask", columns.fov_mask), ("mask_2", columns.second_mask)):
        if col:
            df[key] = [_mask_path(raw[col].iloc[i], path, images[i], row(i, col), on_error) for i in range(len(raw))]
    if columns.severity:
        df["severity"] = pd.to_numeric(raw[columns.severity], errors="coerce").values
    if columns.date:
        df["acquired"] = pd.to_datetime(raw[columns.date], errors="coerce").values
    for col in columns.metadata:
        if col in df.columns:
            raise DataError(f"{path}: metadata column '{col}' clashes with a manifest column; rename it")
        df[col] = raw[col].values
    return validate_manifest(df, source=str(path))


def _mask_path(value, table: Path, image: Path, where: str, on_error: str) -> str:
    """A mask path of the table, checked to exist and to match its image's size ('' when the cell is empty)."""
    if pd.isna(value) or str(value).strip() == "":
        return ""
    mask = Path(str(value)) if Path(str(value)).is_absolute() else table.parent / str(value)
    try:
        with Image.open(mask) as m, Image.open(image) as im:
            if m.size != im.size:
                raise DataError(f"{where}: mask {mask} is {m.size[0]}x{m.size[1]} but its image is "
                                f"{im.size[0]}x{im.size[1]}; masks must have the image's size")
    except (OSError, UnidentifiedImageError) as err:
        if on_error == "raise":
            raise DataError(f"{where}: mask {mask} not readable ({err})") from None
        log.warning("%s: mask %s not readable; row kept without it", where, mask)
        return ""
    return str(mask)


def _image_ok(f: Path, on_error: str, where: str) -> bool:
    """A listed file exists and decodes; otherwise raise or log and skip, per ``on_error``.

    ``where`` names the table, row (as a spreadsheet numbers it, header = row 1) and column.
    """
    if f.is_file():
        return _check_image(f, on_error)
    if on_error == "raise":
        raise DataError(f"{where}: image file {f} not found; fix the path (relative paths are read from the table's "
                        "folder) or set data.on_error: skip to skip such rows")
    log.warning("skipping %s: image file %s not found", where, f)
    return False


def read_dicom(folder: str | Path) -> pd.DataFrame:
    """Read a de-identified DICOM folder (one row per frame; labels empty).

    De-identification is mandatory before anything else touches the data: a file whose
    Patient Identity Removed (0012,0062) is not YES stops the ingest with a pointer to
    ``medlens deid``. Unreadable and non-image files are skipped and logged.
    """
    import pydicom

    from medlens.dicom import read_dicom_tree

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError(f"{folder}: DICOM folder not found")
    df, skipped = read_dicom_tree(folder)
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    for path in df["image"].unique():
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[(0x0012, 0x0062)])
        if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
            raise DataError(f"{path}: not de-identified (Patient Identity Removed is not YES); "
                            f"run `medlens deid {folder} OUT --secret-file KEY` and ingest OUT")
    df["image"] = [f"{p}{NPZ_SEP}frame/{int(f)}" for p, f in zip(df["image"], df["frame"])]
    df["patient_id_source"] = "dicom (pseudonymised)"
    return validate_manifest(df, source=str(folder))


def read_source(data: DataConfig, path: str | Path) -> pd.DataFrame:
    """Read the source that ``data`` names from ``path`` (a folder or file) into a Manifest."""
    if data.source == "synthetic":
        return read_synthetic(path)
    if data.source == "medmnist":
        return read_medmnist(path)
    if data.source == "imagefolder":
        return read_imagefolder(path, on_error=data.on_error)
    return read_csv(path, data.csv_columns, on_error=data.on_error)
