"""A fundus vessel data set laid out like DRIVE, as a manifest table a segmentation study reads.

The layout (Staal et al. 2004; CHASE_DB1 and HRF copies are often rearranged this way)::

    ROOT/training/images/21_training.tif    ROOT/training/1st_manual/21_manual1.gif
    ROOT/training/mask/21_training_mask.gif
    ROOT/testing/images/01_test.tif         ROOT/testing/1st_manual/01_manual1.gif
    ROOT/testing/mask/01_test_mask.gif      ROOT/testing/2nd_manual/01_manual2.gif   (optional)
    ROOT/patients.csv                       (optional: columns file, patient_id)

Files are matched by the number before the first underscore; any image format Pillow reads
and any image size work. Without ``patients.csv`` each image is its own patient.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlens.errors import DataError

__all__ = ["COLUMNS", "drive_table"]

COLUMNS = {"image": "image", "label": "label", "patient_id": "patient_id", "site": None, "mask": "vessels",
           "fov_mask": "fov", "second_mask": "observer2", "metadata": ["split"]}
"""``data.csv_columns`` of a study that reads :func:`drive_table` (as ``configs/drive.yaml`` does)."""

_PARTS = {"training": "train", "testing": "test"}


def _by_key(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".")]
    return {f.name.split("_")[0]: f for f in files}


def drive_table(root: str | Path) -> pd.DataFrame:
    """One row per image of a DRIVE-layout folder.

    Returns
    -------
    pandas.DataFrame
        Columns ``image, vessels, fov, observer2`` (absolute paths; ``observer2`` empty
        where there is no second observer), ``patient_id``, ``split`` (train / test, the
        official split) and ``label`` (1: every image shows vessels).

    Raises
    ------
    DataError
        A folder is missing, or an image lacks its vessel or FOV mask; the message names it.
    """
    root = Path(root).resolve()
    patients = {}
    if (root / "patients.csv").is_file():
        table = pd.read_csv(root / "patients.csv", dtype=str)
        if not {"file", "patient_id"} <= set(table.columns):
            raise DataError(f"{root / 'patients.csv'}: needs columns file, patient_id; has {list(table.columns)}")
        patients = {Path(f).name: p for f, p in zip(table["file"], table["patient_id"])}
    rows = []
    for part, split in _PARTS.items():
        images = _by_key(root / part / "images")
        if not images:
            raise DataError(f"{root / part / 'images'}: no images; expected the DRIVE layout "
                            "training/{images,1st_manual,mask} and testing/{images,1st_manual,mask}")
        manual, fov, second = (_by_key(root / part / d) for d in ("1st_manual", "mask", "2nd_manual"))
        for key, img in images.items():
            for name, found in (("1st_manual", manual), ("mask", fov)):
                if key not in found:
                    raise DataError(f"{img}: no {root / part / name}/{key}_* file; every image needs its vessel "
                                    "annotation (1st_manual) and field-of-view mask (mask)")
            rows.append({"image": str(img), "vessels": str(manual[key]), "fov": str(fov[key]),
                         "observer2": str(second[key]) if key in second else "",
                         "patient_id": patients.get(img.name, f"{split}-{key}"), "split": split, "label": 1})
    return pd.DataFrame(rows)
