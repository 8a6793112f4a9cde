"""MedMNIST v2 reference data: the file names' data set flags and the paper's published rows.

MedMNIST v2 (Yang et al., Scientific Data 2023) Table 3 ships beside the checkout as
``../shared/reference/medmnist_v2.csv``; :func:`paper_rows` reads a data set's rows and
:func:`paper_baselines` turns them into ``evaluate.baselines`` entries of a study config.
Scoring a run the way the MedMNIST evaluator does, and the comparison with these rows, is
:mod:`medlens.evaluate.medmnist`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medlens.config import Baseline
from medlens.errors import DataError

REFERENCE_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "medmnist_v2.csv"
"""The paper's Table 3 rows shipped beside the checkout (``../shared/reference``)."""


def dataset_name(path: str | Path) -> str:
    """The MedMNIST flag of a file (``pneumoniamnist`` for ``…/pneumoniamnist.npz``; ``_64`` etc. dropped)."""
    stem = Path(path).stem.lower()
    return stem.split("_")[0]


def paper_rows(dataset: str, csv_path: str | Path = REFERENCE_CSV) -> list[dict]:
    """The paper's rows for ``dataset``: ``[{method, test_auc, test_acc, source}, …]`` (empty if absent).

    Parameters
    ----------
    dataset : str
        MedMNIST flag, e.g. ``"retinamnist"``.
    csv_path : path
        ``medmnist_v2.csv`` with columns dataset, method, test_auc, test_acc, source.

    Raises
    ------
    DataError
        The CSV is missing or lacks a column.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: MedMNIST v2 reference table not found")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"dataset", "method", "test_auc", "test_acc", "source"}
    if rows and not need <= set(rows[0]):
        raise DataError(f"{csv_path}: expected columns {sorted(need)}, got {sorted(rows[0])}")
    return [{"method": r["method"], "test_auc": float(r["test_auc"]), "test_acc": float(r["test_acc"]),
             "source": r["source"]} for r in rows if r["dataset"].strip().lower() == dataset.lower()]


def paper_baselines(dataset: str, csv_path: str | Path = REFERENCE_CSV) -> list[Baseline]:
    """The paper's rows as :class:`~medlens.config.Baseline` entries for ``evaluate.baselines``."""
    return [Baseline(name=r["method"], auc=r["test_auc"], acc=r["test_acc"], source=r["source"])
            for r in paper_rows(dataset, csv_path)]
