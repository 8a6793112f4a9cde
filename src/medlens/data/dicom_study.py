"""DICOM as a source of ``medlens run``: de-identify into the run directory, then join a labels table.

The first stage de-identifies ``data.path`` into ``<run>/dicom/out`` (PS3.15 Basic Profile,
safe-list mode); nothing reads the original files after it. Hospitals keep labels in a
table keyed by an identifier that de-identification removes or replaces (accession
number, SOP Instance UID, patient ID), so the de-identifier records a keyed hash of that
identifier per file (:meth:`~medlens.dicom.deid.DeidContext.join_key`), and the labels
table's keys are hashed with the same secret: labels follow images, and no original
identifier enters the run directory. The labels table is read, hashed and not copied.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from medlens.errors import ConfigError, DataError

log = logging.getLogger(__name__)
SECRET_ENV = "MEDLENS_DEID_SECRET"


def study_secret(data) -> bytes:
    """The de-identification secret of a DICOM study: ``data.secret_file``, else ``$MEDLENS_DEID_SECRET``.

    Raises
    ------
    ConfigError
        When neither is given or the secret is shorter than 16 bytes: the run refuses to start.
    """
    secret = read_secret(data.secret_file)
    if secret is None:
        raise ConfigError("data.source 'dicom' de-identifies the images before anything else and needs a secret: "
                          f"set data.secret_file (a file with >= 16 random bytes, kept outside the run directory) "
                          f"or the environment variable {SECRET_ENV}; the run did not start")
    return secret


def read_secret(secret_file: Path | None) -> bytes | None:
    """The secret in ``secret_file``, else ``$MEDLENS_DEID_SECRET``, else None (every source's study reads it so).

    Raises
    ------
    ConfigError
        The file is missing, or the secret is shorter than 16 bytes.
    """
    if secret_file is not None:
        if not Path(secret_file).is_file():
            raise ConfigError(f"data.secret_file {secret_file} not found; give the file that holds the "
                              "de-identification secret")
        secret = Path(secret_file).read_bytes().strip()
    elif os.environ.get(SECRET_ENV):
        secret = os.environ[SECRET_ENV].encode().strip()
    else:
        return None
    if len(secret) < 16:
        raise ConfigError(f"the de-identification secret must be at least 16 bytes, got {len(secret)}")
    return secret


def deid_stage(data, folder: Path, secret: bytes) -> None:
    """De-identify ``data.path`` into ``folder/out`` with an audit log ``folder/deid_audit.jsonl``."""
    from medlens.dicom.deid import DeidOptions
    from medlens.dicom.tree import deidentify_tree

    if data.pseudonym_map is not None and Path(data.pseudonym_map).resolve().is_relative_to(folder.parent.resolve()):
        raise ConfigError(f"data.pseudonym_map {data.pseudonym_map} lies inside the run directory, which must hold "
                          "no original identifier; put it elsewhere or set it to null")
    summary = deidentify_tree(data.path, folder / "out", options=DeidOptions(), secret=secret,
                              map_path=data.pseudonym_map, audit_path=folder / "deid_audit.jsonl",
                              quarantine_dir=folder / "quarantine", join_on=data.join_on)
    # counts only: input file names may hold patient names
    log.warning("de-identified %d DICOM files into %s; %d quarantined for burned-in text, %d skipped "
                "(listed by sha256 in deid_audit.jsonl)", len(summary.written), folder / "out",
                len(summary.quarantined), len(summary.skipped))
    if not summary.written:
        raise DataError(f"no DICOM image could be de-identified from {data.path} ({len(summary.skipped)} files "
                        f"skipped, {len(summary.quarantined)} quarantined); see {folder / 'deid_audit.jsonl'}")


def _read_table(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.labels {path} not found")
    try:
        return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype=str)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"data.labels {path}: not a readable table ({err})") from None


def read_labelled(data, folder: Path, secret: bytes) -> pd.DataFrame:
    """The manifest of the de-identified files under ``folder/out`` with labels joined from ``data.labels``.

    Images whose key is not in the table keep an empty label (they are not used for
    training or evaluation; the report counts them).

    Raises
    ------
    DataError
        When the table lacks the key or label column, or none of its keys matches an image.
    """
    from medlens.data.images import NPZ_SEP
    from medlens.data.sources import read_dicom
    from medlens.dicom.deid import DeidContext

    table = _read_table(data.labels)
    for column in (data.join_on, data.label_column):
        if column not in table.columns:
            raise DataError(f"data.labels {data.labels}: no column '{column}' (have {list(table.columns)}); "
                            f"name the key column {data.join_on!r} (data.join_on) and the label column "
                            f"{data.label_column!r} (data.label_column)")
    ctx = DeidContext(secret)
    table = table.dropna(subset=[data.join_on, data.label_column])
    keyed = {ctx.join_key(data.join_on, str(k)): v for k, v in zip(table[data.join_on], table[data.label_column])}
    records = [json.loads(line) for line in (folder / "deid_audit.jsonl").read_text().splitlines() if line.strip()]
    key_of = {r["output"]: r.get("join_key") for r in records if r.get("status") in ("ok", "masked")}
    manifest = read_dicom(folder / "out")
    out = (folder / "out").resolve()
    keys = [key_of.get(Path(str(p).split(NPZ_SEP)[0]).resolve().relative_to(out).as_posix()) for p in manifest["image"]]
    labels = pd.Series([keyed.get(k) if k else None for k in keys], index=manifest.index, dtype=object)
    if labels.notna().sum() == 0:
        raise DataError(f"data.labels {data.labels}: none of its {len(keyed)} {data.join_on} values matches any of "
                        f"the {len(manifest)} de-identified images ({sum(k is not None for k in keys)} carry a "
                        f"{data.join_on}); check data.join_on and the key column")
    names = sorted(labels.dropna().astype(str).unique())
    if all(n.lstrip("-").isdigit() for n in names):
        manifest["label"] = labels.map(lambda v: int(v) if v is not None else pd.NA).astype("Int64")
    else:
        index = {n: i for i, n in enumerate(names)}
        manifest["label"] = labels.map(lambda v: index[str(v)] if v is not None else pd.NA).astype("Int64")
        manifest["label_name"] = labels.astype(object).where(labels.notna(), None)
    log.warning("labels joined on %s: %d of %d images labelled", data.join_on, int(labels.notna().sum()), len(manifest))
    return manifest
