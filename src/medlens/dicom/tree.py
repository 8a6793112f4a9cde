"""De-identify a folder of DICOM files, write the audit log and pseudonym map, verify the result.

File names are never trusted: every file is sniffed (preamble, then a parse) and outputs
are named from the replaced UIDs, so no input name (which may hold a patient's name)
reaches the output.

Exit codes used by ``medlens deid``: 0 every DICOM file de-identified and written; 1 the run
finished but needs attention (files skipped as unreadable or non-DICOM, files quarantined
for burned-in text, or ``--verify`` found problems); 2 bad input (missing folder, short
secret, map file inside the output).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from medlens.dicom.deid import (
    DeidContext,
    DeidOptions,
    burned_in_reason,
    deidentify_dataset,
    mask_pixels,
)
from medlens.dicom.reader import quiet_pydicom, read_dicom_file
from medlens.dicom.verify import identifying_values
from medlens.errors import DataError

log = logging.getLogger(__name__)
_DICOMDIR = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_REFERENCED_FILE_ID = 0x00041500


@dataclass
class DeidSummary:
    """What :func:`deidentify_tree` did; paths of inputs are the caller's own."""

    written: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    no_pixel_data: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    out_dir: str = ""
    quarantine_dir: str = ""
    map_path: str = ""
    audit_path: str = ""

    @property
    def exit_code(self) -> int:
        """0 when every file was written to the output, else 1."""
        return 1 if (self.skipped or self.quarantined) else 0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pixel_hash(ds: Dataset) -> str | None:
    if "PixelData" not in ds:
        return None
    value = ds["PixelData"].value
    return _sha256(value if isinstance(value, bytes) else bytes(value))


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    with quiet_pydicom():
        try:
            ds.save_as(buf, enforce_file_format=True)
        except Exception:  # odd inputs (no meta, unusual syntax): write them as they came
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0o600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def deidentify_tree(
    in_dir: Path | str,
    out_dir: Path | str,
    *,
    options: DeidOptions,
    secret: bytes,
    map_path: Path | str | None,
    audit_path: Path | str,
    quarantine_dir: Path | str | None = None,
    workers: int | None = None,
    join_on: str | None = None,
) -> DeidSummary:
    """De-identify every DICOM file under ``in_dir`` into ``out_dir``.

    Parameters
    ----------
    in_dir : path
        Folder walked recursively; non-DICOM and broken files are skipped and listed.
    out_dir : path
        Receives ``<pseudonym>/<new SOP Instance UID>.dcm``.
    options : DeidOptions
    secret : bytes
        Key of the UID, pseudonym and date-shift hashes (>= 16 bytes); same secret, same output.
    map_path : path or None
        ``pseudonyms.csv`` (patient_id, pseudonym, date_shift_days), mode 0o600; must lie
        outside ``out_dir``. Rows already there are kept. None: no map is written (the
        pseudonyms can be re-derived from the original IDs with the secret).
    audit_path : path
        JSONL, one record per input file: hashes, status, options, the changed tags and
        keyed hashes of the input's identifying values (for ``--verify``; never a value).
    quarantine_dir : path, optional
        Where files flagged for burned-in text go (de-identified header, pixels untouched);
        default ``<out_dir>/../quarantine``.
    workers : int, optional
        Processes de-identifying files in parallel (default: the CPU count, one process
        below 64 files). The output does not depend on it.
    join_on : str, optional
        A header keyword (e.g. ``"AccessionNumber"``) whose original value is recorded in
        the audit as a keyed hash (``join_key``, :meth:`DeidContext.join_key`), so a label
        table keyed by it can be joined after de-identification.

    Returns
    -------
    DeidSummary
    """
    in_dir, out_dir, audit_path = Path(in_dir), Path(out_dir), Path(audit_path)
    map_path = Path(map_path) if map_path is not None else None
    quarantine = Path(quarantine_dir) if quarantine_dir else out_dir.parent / "quarantine"
    if not in_dir.is_dir():
        raise DataError(f"input folder {in_dir} does not exist; pass the folder that holds the DICOM files")
    if map_path is not None and (_inside(map_path, out_dir) or _inside(map_path, quarantine)):
        raise DataError(f"the pseudonym map {map_path} must lie outside the de-identified output {out_dir}")
    if _inside(out_dir, in_dir) and out_dir.resolve() != in_dir.resolve():
        raise DataError(f"output {out_dir} lies inside input {in_dir}; choose a separate folder")
    DeidContext(secret)  # checks the secret before any work
    summary = DeidSummary(out_dir=str(out_dir), quarantine_dir=str(quarantine), map_path=str(map_path or ""),
                          audit_path=str(audit_path))
    paths = sorted(p for p in in_dir.rglob("*") if p.is_file())
    workers = workers or (os.cpu_count() or 1)
    if workers > 1 and len(paths) >= 64:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                 initargs=(options, secret, join_on)) as pool:
            results = list(pool.map(_one_file, paths, chunksize=32))
    else:
        _start_worker(options, secret, join_on)
        results = [_one_file(path) for path in paths]
    pseudonyms: dict[str, tuple[str, int]] = {}
    used: set[Path] = set()
    records = []
    for path, (record, data, folder, pseudonym) in zip(paths, results):
        if pseudonym:
            pseudonyms.update(pseudonym)
        if data is None:
            summary.skipped.append((str(path), record["reason"]))
            records.append(record)
            continue
        quarantined = record["status"] == "quarantined"
        root = quarantine if quarantined else out_dir
        target = root / folder / f"{record.pop('sop')}.dcm"
        if target in used:
            target = target.with_name(f"{target.stem}_{record['input_sha256'][:12]}.dcm")
        used.add(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        record["output"] = target.relative_to(root).as_posix()
        if record["pixel_sha256_in"] is None:
            summary.no_pixel_data.append(str(path))
        if quarantined:
            summary.quarantined.append((str(path), record["reason"] or ""))
        else:
            summary.written.append(record["output"])
            if record["status"] == "masked":
                summary.masked.append(record["output"])
        records.append(record)
    audit_path.parent.mkdir(parents=True, exist_ok=True)
    audit_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    if map_path is not None:
        _write_map(map_path, pseudonyms)
    log.info("de-identified %d files (%d quarantined, %d skipped)", len(summary.written),
             len(summary.quarantined), len(summary.skipped))
    return summary


_WORKER: dict = {}


def _start_worker(options: DeidOptions, secret: bytes, join_on: str | None = None) -> None:
    """Per-process state of :func:`_one_file` (a pool initializer)."""
    _WORKER.update(options=options, ctx=DeidContext(secret), secret=secret, join_on=join_on,
                   opts=options.model_dump(mode="json"))


def _one_file(path: Path) -> tuple[dict, bytes | None, str, dict]:
    """De-identify one file: ``(audit record, output bytes or None if skipped, folder, pseudonym entry)``.

    The record carries ``sop`` (the output's name stem), removed by the caller, which
    also picks the final name so that duplicates never overwrite each other.
    """
    options, ctx = _WORKER["options"], _WORKER["ctx"]
    raw = path.read_bytes()
    record = {"input_sha256": _sha256(raw), "options": _WORKER["opts"]}
    try:
        ds = read_dicom_file(path, data=raw)
    except DataError as exc:
        return {**record, "status": "skipped", "reason": str(exc)}, None, "", {}
    meta = getattr(ds, "file_meta", None)
    emptied = []
    if str(getattr(meta, "MediaStorageSOPClassUID", "") or "") == _DICOMDIR:
        # its records name the input's folders and files (often patient IDs), which the output no longer has
        for elem in ds.iterall():
            if elem.tag == _REFERENCED_FILE_ID and elem.value:
                elem.value = ""
                emptied.append({"path": "", "tag": "(0004,1500)", "keyword": "ReferencedFileID", "action": "Z",
                                "rule": "DICOMDIR file reference (input folder names)"})
    pixel_in = _pixel_hash(ds)
    reason = burned_in_reason(ds, options)
    masked = False
    if reason and options.mask_regions:
        try:
            mask_pixels(ds, options.mask_regions)
            masked = True
        except DataError as exc:
            reason = f"{reason}; {exc}"
    originals = identifying_values(ds, options)
    join_on = _WORKER["join_on"]
    if join_on:
        value = str(ds.get(join_on, "") or "").strip()
        record["join_key"] = ctx.join_key(join_on, value) if value else None
    ctx.pseudonyms.clear()
    with quiet_pydicom():
        ds, rows = deidentify_dataset(ds, options, _WORKER["secret"], ctx, pixels_cleaned=masked)
    data = _to_bytes(ds)
    status = "quarantined" if (reason and not masked) else ("masked" if masked else "ok")
    sop = str(ds.get("SOPInstanceUID", "") or "") or record["input_sha256"][:32]
    record.update(status=status, reason=reason, sop=sop, output_sha256=_sha256(data), pixel_sha256_in=pixel_in,
                  pixel_sha256_out=_pixel_hash(ds), changes=emptied + rows,
                  value_hashes=sorted({ctx.value_hash(v) for v in originals}))
    return record, data, str(ds.PatientID), dict(ctx.pseudonyms)


def _write_map(map_path: Path, pseudonyms: dict[str, tuple[str, int]]) -> None:
    rows = {}
    if map_path.exists():
        with open(map_path, newline="", encoding="utf-8") as fh:
            rows = {r["patient_id"]: (r["pseudonym"], int(r["date_shift_days"])) for r in csv.DictReader(fh)}
    rows.update(pseudonyms)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["patient_id", "pseudonym", "date_shift_days"])
    for key in sorted(rows):
        writer.writerow([key, *rows[key]])
    write_private(map_path, out.getvalue())
