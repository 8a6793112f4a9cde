"""Keyed pseudonyms for image folders, tables and MedMNIST: nothing identifying enters a run.

A hospital's folder and file names carry patient names, record numbers and dates
(``KIM_JH_00123456_20241103.png``), and its tables carry record numbers. At ingest every
``sample_id`` and ``patient_id`` is replaced by a keyed hash (HMAC-SHA256 with the study's
secret, as :class:`medlens.dicom.deid.DeidContext` does for DICOM), and every image and mask
is copied into the run directory under its pseudonym (pixels only: no file metadata), so
no later stage, log or report can see an original name. Dates move by the patient's keyed
offset (the DICOM date-shift rule) and keep their order in ``acquired_order``; ages are
binned. The map back to the originals is written outside the run directory, mode 0600.

The same secret gives the same pseudonyms, so a re-run study is comparable; without a
configured secret one is made once per project (:func:`project_secret`).
"""

from __future__ import annotations

import logging
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medlens.data.images import NPZ_SEP
from medlens.data.manifest import validate_manifest
from medlens.dicom.deid import DeidContext
from medlens.data.dicom_study import read_secret
from medlens.dicom.tree import write_private
from medlens.errors import ConfigError, DataError

log = logging.getLogger(__name__)
PRIVATE_DIR = ".medlens"
DATE_SHIFT_MAX_DAYS = 3650
"""As :class:`medlens.dicom.deid.DeidOptions`: dates move back by 1..3650 days per patient."""
MASK_COLUMNS = ("mask", "fov_mask", "mask_2")
STAGED_BOXES = Path("data") / "boxes.parquet"
"""A detection study's lesion-box table in the run directory, its images under pseudonyms."""
AGE_BINS = (40, 60, 75)
"""Default edges of the age bins (years): <40, 40-59, 60-74, >=75."""


def project_secret(secret_file: Path | None, private: Path) -> tuple[bytes, Path | None]:
    """The study's secret, and the file it was made in when medlens made it.

    ``secret_file`` or ``$MEDLENS_DEID_SECRET`` when given; otherwise ``private/secret``,
    made once (32 random bytes as hex, mode 0600) and reused by every later run of the
    project, so re-running a study gives the same pseudonyms.
    """
    given = read_secret(secret_file)
    if given is not None:
        return given, None
    path = private / "secret"
    if not path.is_file():
        private.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_hex(32) + "\n")
        log.warning("made the study's pseudonymisation secret %s (mode 0600); keep it with the pseudonym map, "
                    "outside the run directory: the same secret gives the same pseudonyms", path)
    return path.read_bytes().strip(), path


def age_levels(ages: pd.Series, edges: tuple[int, ...] = AGE_BINS) -> pd.Series:
    """Ages in years as bins: ``'<40'``, ``'40-59'``, ``'60-74'``, ``'>=75'`` for edges (40, 60, 75).

    Values that are not numbers are kept as they are (already binned, or missing).
    """
    numeric = pd.to_numeric(ages, errors="coerce")
    labels = [f"<{edges[0]}", *(f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])), f">={edges[-1]}"]
    binned = pd.cut(numeric, [-np.inf, *edges, np.inf], right=False, labels=labels).astype(object)
    return binned.where(numeric.notna(), ages.where(ages.isna(), ages.astype(str)))


def pseudonymise(manifest: pd.DataFrame, secret: bytes, stage: Path, *, age_bins: tuple[int, ...] = AGE_BINS,
                 progress: Callable[[Iterable], Iterable] = lambda it: it) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace identifiers by keyed pseudonyms and copy the pixels into ``stage``.

    Parameters
    ----------
    manifest : DataFrame
        A source's manifest with its original IDs and absolute image paths
        (:mod:`medlens.data.sources`).
    secret : bytes
        The study's secret (>= 16 bytes).
    stage : path
        Folder in the run directory that receives ``images/<pseudonym>.png``,
        ``masks/<pseudonym>_<column>.png`` and ``arrays/<hash>.npz``; emptied first.
    age_bins : tuple of int, default=(40, 60, 75)
        Edges of the bins an ``age`` column (any case) is kept as (:func:`age_levels`).
    progress : callable
        Wraps the row iterator (a progress bar).

    Returns
    -------
    manifest : DataFrame
        The same rows with pseudonymous ``sample_id`` (``IM`` + 12 hex digits) and
        ``patient_id`` (``ML`` + 12, as DICOM's), images and masks under ``stage``, dates
        shifted, ``acquired_order`` (the original dates' rank) and ages binned.
    key : DataFrame
        The map back: ``sample_id``, ``patient_id`` (pseudonyms), ``original_sample_id``,
        ``original_patient_id``, ``original_image``, ``date_shift_days``. It must not be
        written inside the run directory.
    """
    ctx = DeidContext(secret)
    out = manifest.copy()
    sid = ["IM" + ctx.join_key("sample", s)[:12].upper() for s in out["sample_id"]]
    if len(set(sid)) != len(sid):
        raise DataError("two images got the same pseudonym; report this (it should not happen)")
    patients = [ctx.patient(p, DATE_SHIFT_MAX_DAYS) for p in out["patient_id"]]
    key = pd.DataFrame({"sample_id": sid, "patient_id": [p for p, _ in patients],
                        "original_sample_id": out["sample_id"].values, "original_patient_id": out["patient_id"].values,
                        "original_image": out["image"].values, "date_shift_days": [d for _, d in patients]})
    if stage.exists():
        shutil.rmtree(stage)
    for sub in ("images", "masks", "arrays"):
        (stage / sub).mkdir(parents=True)
    arrays: dict[str, str] = {}
    images, masks = [], {c: [] for c in MASK_COLUMNS if c in out.columns}
    for i, ref in enumerate(progress(out["image"].tolist())):
        images.append(_stage_image(ref, stage, sid[i], ctx, arrays))
        for col, staged in masks.items():
            value = out[col].iloc[i]
            staged.append(_stage_mask(value, stage / "masks" / f"{sid[i]}_{col}.png") if _given(value) else "")
    out["sample_id"], out["patient_id"], out["image"] = sid, key["patient_id"].values, images
    for col, staged in masks.items():
        out[col] = staged
    if "acquired" in out.columns:
        when = pd.to_datetime(out["acquired"], errors="coerce")
        out["acquired_order"] = when.rank(method="dense").astype("Int64")
        out["acquired"] = when + pd.to_timedelta(key["date_shift_days"].values, unit="D")
    for col in [c for c in out.columns if c.lower() == "age"]:
        out[col] = age_levels(out[col], age_bins)
    return validate_manifest(out, source="pseudonymised manifest"), key


def _given(value) -> bool:
    return not (value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "")


def _stage_image(ref: str, stage: Path, pseudonym: str, ctx: DeidContext, arrays: dict[str, str]) -> str:
    """Copy one image's pixels under its pseudonym; return the new reference.

    Files are re-encoded as PNG in the mode :func:`~medlens.data.images.load_image`
    reads them in, so they load to the same array without the original's metadata.
    Array references (``file.npz::key/i``) copy their file once, under a keyed name.
    """
    if NPZ_SEP in ref:
        file, inner = ref.split(NPZ_SEP, 1)
        if file not in arrays:
            target = stage / "arrays" / f"{ctx.join_key('file', file)[:12]}.npz"
            shutil.copyfile(file, target)
            arrays[file] = str(target)
        return f"{arrays[file]}{NPZ_SEP}{inner}"
    target = stage / "images" / f"{pseudonym}.png"
    try:
        with Image.open(ref) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            im.save(target, format="PNG", compress_level=1)
    except OSError as err:
        raise DataError(f"{ref}: not a readable image ({err})") from None
    return str(target)


def _stage_mask(ref: str, target: Path) -> str:
    """Copy a mask's pixels (as the grey levels :func:`~medlens.data.images.load_mask` reads)."""
    with Image.open(str(ref)) as im:
        im.convert("L").save(target, format="PNG", compress_level=1)
    return str(target)


def check_outside(path: Path, run: Path) -> None:
    """Raise ConfigError when the pseudonym map ``path`` would lie inside the run directory ``run``."""
    if Path(path).resolve().is_relative_to(Path(run).resolve()):
        raise ConfigError(f"data.pseudonym_map {path} lies inside the run directory, which must hold no original "
                          "identifier; put it outside (e.g. beside the secret); the run did not start")


def save_key(key: pd.DataFrame, path: Path, run: Path) -> None:
    """Write the pseudonym map (mode 0600) outside the run directory, merged with an earlier one."""
    check_outside(path, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        key = pd.concat([pd.read_csv(path, dtype=str), key.astype(str)]).drop_duplicates("sample_id", keep="last")
    write_private(path, key.to_csv(index=False))


def stage_box_table(path: Path, manifest: pd.DataFrame, key: pd.DataFrame, target: Path) -> None:
    """Write a lesion-box table with its images named by their staged, pseudonymous copies.

    ``path``'s ``image`` column is resolved against its folder and matched to the original
    image of each row of ``key``; only ``image, x0, y0, x1, y1`` (and ``class``) are kept.

    Raises
    ------
    DataError
        The table is unreadable, lacks ``image``, or names an image that is not in the study
        (the message names the row, and goes to the terminal only).
    """
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - any unreadable table is the user's to fix
        raise DataError(f"detection.boxes: cannot read {path} ({type(err).__name__})") from None
    if "image" not in table.columns:
        raise DataError(f"detection.boxes: {path} lacks column image (has {', '.join(map(str, table.columns))})")
    staged = dict(zip(key["sample_id"], manifest.set_index("sample_id").loc[key["sample_id"], "image"]))
    by_original = {str(Path(o).resolve()): staged[s] for o, s in zip(key["original_image"], key["sample_id"])}
    refs = [str((Path(v) if Path(str(v)).is_absolute() else path.parent / str(v)).resolve()) for v in table["image"]]
    unknown = [i for i, r in enumerate(refs) if r not in by_original]
    if unknown:
        raise DataError(f"detection.boxes: {path} row {unknown[0] + 2}: image {table['image'].iloc[unknown[0]]!r} "
                        "is not in the study's manifest (paths are resolved against the table's folder)")
    keep = [c for c in ("x0", "y0", "x1", "y1", "class") if c in table.columns]
    table[keep].assign(image=[by_original[r] for r in refs])[["image", *keep]].to_parquet(target, index=False)

