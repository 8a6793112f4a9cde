"""``medlens init``: look at a user's data, write a study YAML that ``medlens run`` accepts as it is.

Recognised: a folder with one sub-folder of images per class (``imagefolder``), a CSV or
Parquet table with an image column (``csv``; label, patient and site columns found by
name), a MedMNIST ``.npz`` (``medmnist``). The summary says what was found, including
whether patient IDs exist: without them every image counts as its own patient, and
images of one patient could land in train and test. The run pseudonymises what it reads
(:mod:`medlens.data.pseudonyms`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medlens.errors import DataError

_LABEL = ("label", "labels", "class", "diagnosis", "target", "y", "grade")
_PATIENT = ("patient_id", "patientid", "patient", "subject", "subject_id", "mrn", "pid")
_SITE = ("site", "hospital", "centre", "center", "institution", "scanner")
_IMAGE = ("image", "image_path", "path", "file", "filename", "img")


def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    low = {c.lower(): c for c in columns}
    return next((low[n] for n in names if n in low), None)


def _image_column(table: pd.DataFrame) -> str | None:
    named = _pick(list(table.columns), _IMAGE)
    if named:
        return named
    from medlens.data.sources import IMAGE_SUFFIXES

    for col in table.columns:
        values = table[col].dropna().astype(str).head(20)
        if len(values) and values.map(lambda v: Path(v).suffix.lower() in IMAGE_SUFFIXES | {".dcm"}).all():
            return col
    return None


def detect(path: Path) -> tuple[dict, pd.DataFrame]:
    """Return ``(data section of a study config, manifest)`` for ``path``.

    Raises
    ------
    DataError
        When the path is none of the recognised layouts; the message says what each needs.
    """
    from medlens.data import sources
    from medlens.config import CsvColumns

    path = Path(path).resolve()
    if not path.exists():
        raise DataError(f"{path} does not exist; give a folder of class sub-folders, a CSV/Parquet table or a .npz")
    if path.is_dir():
        subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) >= 2:
            return {"source": "imagefolder", "path": str(path)}, sources.read_imagefolder(path)
        if any(p.suffix.lower() == ".dcm" for p in path.rglob("*")):
            raise DataError(f"{path} holds DICOM files: de-identify them first (`medlens deid {path} OUT "
                            "--secret-file KEY`), then use a CSV with the image paths and labels")
        raise DataError(f"{path}: expected one sub-folder of images per class (at least 2), found "
                        f"{[p.name for p in subdirs]}")
    if path.suffix.lower() == ".npz":
        return {"source": "medmnist", "path": str(path)}, sources.read_medmnist(path)
    if path.suffix.lower() in (".csv", ".parquet"):
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
        cols = list(table.columns)
        mapping = {"image": _image_column(table), "label": _pick(cols, _LABEL),
                   "patient_id": _pick(cols, _PATIENT), "site": _pick(cols, _SITE)}
        for key in ("image", "label"):
            if mapping[key] is None:
                raise DataError(f"{path}: no {key} column found among {cols}; name it '{key}' or write "
                                f"data.csv_columns.{key} in the study YAML by hand")
        data = {"source": "csv", "path": str(path), "csv_columns": mapping}
        return data, sources.read_csv(path, CsvColumns(**mapping))
    raise DataError(f"{path}: not a folder, CSV, Parquet or .npz file")


def summarise(manifest: pd.DataFrame) -> dict:
    """Images, patients, classes (with counts), sites and images per patient of a manifest."""
    labelled = manifest[manifest["label"].notna()]
    names = (labelled.groupby("label")["label_name"].first().to_dict() if "label_name" in labelled.columns
             else {k: str(k) for k in labelled["label"].unique()})
    per_patient = manifest.groupby("patient_id").size()
    no_ids = "patient_id_source" in manifest.columns and manifest["patient_id_source"].astype(str).str.startswith("none").all()
    return {
        "images": len(manifest), "patients": int(manifest["patient_id"].nunique()),
        "classes": {str(names[k]): int(n) for k, n in labelled["label"].value_counts().sort_index().items()},
        "sites": {str(s): int(n) for s, n in manifest["site"].value_counts().items()},
        "images_per_patient": {"min": int(per_patient.min()), "median": float(per_patient.median()),
                               "max": int(per_patient.max())},
        "patient_ids": "none in the data: every image counts as its own patient" if no_ids else "from the data",
    }


FUNDUS_PREPROCESS = {"roi_crop": True, "clahe": "lab"}
"""``engine.preprocess`` that ``medlens init`` writes for fundus-like sources: the practitioners' crop to the
field of view and CLAHE on L of LAB (declared from domain knowledge, as for the demo)."""


def _fundus_like_image(img) -> bool:
    """A colour image with a bright centre inside a dark surround: the circular field of view of a fundus camera."""
    import numpy as np

    if img.shape[0] < 3 or np.allclose(img[0], img[1], atol=1 / 255) and np.allclose(img[1], img[2], atol=1 / 255):
        return False
    lum = img[:3].mean(0)
    h, w = lum.shape
    ref = float(np.percentile(lum, 99))
    c = max(1, round(0.06 * min(h, w)))
    corners = [lum[:c, :c], lum[:c, -c:], lum[-c:, :c], lum[-c:, -c:]]
    centre = lum[h // 2 - h // 6:h // 2 + h // 6, w // 2 - w // 6:w // 2 + w // 6]
    return ref > 0 and all(float(k.mean()) < 0.1 * ref for k in corners) and float(centre.mean()) > 0.3 * ref


def fundus_like(manifest: pd.DataFrame, *, sample: int = 12) -> bool:
    """Whether a source looks like fundus photographs: at least 3 in 4 of up to ``sample`` images, evenly spaced."""
    import numpy as np

    from medlens.data.images import load_image

    refs = manifest["image"].tolist()
    if not refs:
        return False
    picks = [refs[i] for i in np.unique(np.linspace(0, len(refs) - 1, min(sample, len(refs))).round().astype(int))]
    return sum(_fundus_like_image(load_image(r)) for r in picks) >= 0.75 * len(picks)


def study_yaml(path: Path, name: str | None = None) -> tuple[str, dict]:
    """The YAML text of a study on ``path`` and the summary printed beside it (with the study ``name``)."""
    import yaml

    from medlens.config import parse_config

    data, manifest = detect(path)
    summary = summarise(manifest)
    summary["name"] = name = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or "study"
    sites = list(summary["sites"])
    study = {"name": name, "data": data, "split": {"external_site": None}}
    summary["fundus_like"] = fundus_like(manifest)
    if summary["fundus_like"]:
        study["engine"] = {"preprocess": dict(FUNDUS_PREPROCESS)}
    parse_config(study, source="medlens init")  # what is written is what `medlens run` accepts
    lines = [f"# Written by `medlens init {path}`: {summary['images']} images, {summary['patients']} patients.",
             f"# Classes (label index order): {', '.join(f'{k} ({v})' for k, v in summary['classes'].items())}.",
             f"# Sites: {', '.join(f'{k} ({v})' for k, v in summary['sites'].items())}."
             + (f" Hold one out as external validation, e.g. split.external_site: {sites[-1]!r}." if len(sites) > 1 else ""),
             f"# Patient IDs: {summary['patient_ids']}."]
    if summary["patient_ids"].startswith("none"):
        lines.append("#   If patients have several images, give a CSV with a patient_id column instead, or splits leak.")
    summary["privacy"] = (f"`medlens run` replaces file names and patient IDs by keyed pseudonyms and copies the "
                          f"pixels under them; the secret and the map back are kept in runs/.medlens/, outside "
                          f"runs/{name}")
    lines.append(f"# Privacy: {summary['privacy']}.")
    if summary["fundus_like"]:
        lines.append("# The images look like fundus photographs (a bright field of view in a dark surround), so the "
                     "study crops to the field of view and applies CLAHE on L of LAB, as fundus studies do.")
    lines.append("# Everything else takes its default; see configs/demo.yaml for every field.")
    return "\n".join(lines) + "\n" + yaml.safe_dump(study, sort_keys=False), summary
