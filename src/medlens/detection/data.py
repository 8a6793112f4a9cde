"""Images and lesion boxes of a manifest, through the study's one preprocessing contract.

Each image is prepared by :class:`medlens.data.preprocess.Preprocess` (as in training,
evaluation, export and the service); its boxes, given in original pixels, are mapped with
the same crop and scale (:meth:`Preprocess.box_to_output`), so boxes stay on their lesions
whatever ROI crop or resize is configured. Boxes come from a box table
(``detection.boxes``) or, without one, one per connected component of the lesion mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medlens.data.images import load_image, load_mask
from medlens.data.preprocess import Preprocess
from medlens.evaluate.boxes import boxes_from_mask
from medlens.errors import DataError

__all__ = ["DetArrays", "load_box_table", "load_det_arrays"]

BOX_COLUMNS = ("image", "x0", "y0", "x1", "y1")


@dataclass
class DetArrays:
    """One part of the data (fold train/val, test, external) as the network sees it."""

    images: torch.Tensor
    """uint8 ``N×C×S×S`` (the preprocessing contract's output)."""
    boxes: list[np.ndarray]
    """Per image ``(K_i, 4)`` float lesion boxes ``x0, y0, x1, y1`` in output pixels (exclusive ends)."""
    patients: np.ndarray
    """Patient id of each image (for the patient-level bootstrap)."""

    def __len__(self) -> int:
        return len(self.boxes)


def _key(ref: str, base: Path) -> str:
    p = Path(ref)
    return str((p if p.is_absolute() else base / p).resolve())


def load_box_table(path: Path, manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boxes of a box table per manifest ``sample_id`` (``(K, 4)`` float, original pixels).

    The table's ``image`` is matched to the manifest's ``image`` after resolving both
    (relative table paths against the table's folder). Images without rows have no lesion.

    Raises
    ------
    DataError
        Unreadable table, missing columns, non-numeric or empty boxes, more than one class,
        or an image that is not in the manifest (naming the first such row).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"detection.boxes: {path} not found")
    try:
        table = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as err:
        raise DataError(f"detection.boxes: cannot read {path} ({type(err).__name__}); give a CSV or Parquet "
                        f"table with columns {', '.join(BOX_COLUMNS)}[, class]") from None
    missing = [c for c in BOX_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"detection.boxes: {path} lacks column(s) {', '.join(missing)} (has {', '.join(map(str, table.columns))})")
    coords = table[list(BOX_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    bad = np.flatnonzero(coords.isna().any(axis=1).to_numpy() | ~((coords["x1"] > coords["x0"])
                                                                  & (coords["y1"] > coords["y0"])).to_numpy())
    if bad.size:
        raise DataError(f"detection.boxes: {path} row {int(bad[0]) + 2}: x0, y0, x1, y1 must be numbers with "
                        "x1 > x0 and y1 > y0 (pixels, exclusive ends)")
    if "class" in table.columns and table["class"].nunique() > 1:
        raise DataError(f"detection.boxes: {path} has {table['class'].nunique()} classes; the detector finds one "
                        "lesion class: split the table by class and run one study per class")
    by_image = {_key(str(v), Path.cwd()): sid for v, sid in zip(manifest["image"], manifest["sample_id"])}
    keys = [_key(str(v), path.parent) for v in table["image"]]
    unknown = [i for i, k in enumerate(keys) if k not in by_image]
    if unknown:
        raise DataError(f"detection.boxes: {path} row {unknown[0] + 2}: image {table['image'].iloc[unknown[0]]!r} "
                        "is not in the study's manifest (paths are resolved against the table's folder)")
    out: dict[str, list] = {}
    for k, row in zip(keys, coords.to_numpy(float)):
        out.setdefault(by_image[k], []).append(row)
    return {sid: np.asarray(v, float).reshape(-1, 4) for sid, v in out.items()}


def load_det_arrays(rows: pd.DataFrame, prep: Preprocess, table: dict[str, np.ndarray] | None) -> DetArrays:
    """Prepare the images of ``rows`` (in row order) and map their lesion boxes to output pixels.

    Parameters
    ----------
    rows : DataFrame
        Manifest rows (``sample_id``, ``patient_id``, ``image`` and, without a box table, ``mask``).
    prep : Preprocess
        The study's preprocessing contract.
    table : dict or None
        :func:`load_box_table` output; None: boxes from the ``mask`` column's components.
    """
    if table is None and "mask" not in rows.columns:
        raise DataError("task detection needs lesion boxes: set detection.boxes to a box table (image, x0, y0, x1, "
                        "y1), or map a mask column in data.csv_columns (one box per connected component)")
    images = np.empty((len(rows), prep.in_chans, prep.size, prep.size), np.uint8)
    boxes = []
    for i, (sid, ref) in enumerate(zip(rows["sample_id"], rows["image"])):
        img = load_image(ref)
        crop = prep.crop(img)
        images[i] = prep(img)
        if table is not None:
            orig = table.get(sid, np.zeros((0, 4)))
        else:
            mref = rows["mask"].iloc[i]
            orig = boxes_from_mask(load_mask(mref)) if isinstance(mref, str) and mref else np.zeros((0, 4))
        mapped = [prep.box_to_output(tuple(b), img.shape[1:], crop) for b in orig]
        boxes.append(np.clip(np.asarray(mapped, float).reshape(-1, 4), 0, prep.size))
    return DetArrays(torch.from_numpy(images), boxes, rows["patient_id"].astype(str).to_numpy())
