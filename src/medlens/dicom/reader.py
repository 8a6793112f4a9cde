"""Read one DICOM file, whatever its name, without letting pydicom log its values (PHI).

The reader every DICOM path shares: de-identification (:mod:`medlens.dicom.tree`), its
verification (:mod:`medlens.dicom.verify`), ingest (:mod:`medlens.dicom.ingest`) and the
service's upload decoder (:mod:`medlens.serve.decode`).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom import config
from pydicom.dataset import Dataset

from medlens.errors import DataError

__all__ = ["quiet_pydicom", "read_dicom_file"]


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value validation and logger, whose messages quote values and file names (PHI)."""
    old = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    pydicom_log = logging.getLogger("pydicom")
    was_disabled = pydicom_log.disabled
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    pydicom_log.disabled = True  # its warnings may name files or quote values
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = old
        pydicom_log.disabled = was_disabled


def read_dicom_file(path: Path, *, stop_before_pixels: bool = False, data: bytes | None = None) -> Dataset:
    """Read ``path`` if it is DICOM, whatever its name.

    A file with the ``DICM`` preamble is read normally; one without is parsed leniently and
    accepted only if it holds a SOP Class UID or a Study/Series Instance UID.

    Parameters
    ----------
    path : Path
    stop_before_pixels : bool, default=False
    data : bytes, optional
        The file's bytes when the caller has read them already (one read per file).

    Raises
    ------
    DataError
        When the file is not DICOM or cannot be parsed; the message gives the reason.
    """
    try:
        if data is None:
            with open(path, "rb") as fh:
                head = fh.read(132)
        else:
            head = data[:132]
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}") from None
    has_preamble = len(head) == 132 and head[128:132] == b"DICM"
    try:
        with quiet_pydicom():
            ds = _parse(path if data is None else io.BytesIO(data), has_preamble, stop_before_pixels)
    except DataError:
        raise
    except Exception as exc:  # pydicom raises many types on broken files
        raise DataError(f"unreadable DICOM ({type(exc).__name__}: {str(exc)[:120]})") from None
    return ds


def _parse(path: Path | io.BytesIO, has_preamble: bool, stop_before_pixels: bool) -> Dataset:
    ds = pydicom.dcmread(path, force=not has_preamble, stop_before_pixels=stop_before_pixels)
    if not has_preamble and not any(k in ds for k in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")):
        raise DataError("not DICOM (no preamble and no DICOM identifiers)")
    for raw in list(ds._dict.values()):  # a value shorter than its declared length: truncated file
        length, value = getattr(raw, "length", None), getattr(raw, "value", None)
        if isinstance(value, bytes) and length not in (None, 0xFFFFFFFF) and len(value) < length:
            raise DataError(f"truncated or corrupt: element ({raw.tag >> 16:04X},{raw.tag & 0xFFFF:04X}) "
                            f"holds {len(value)} of {length} bytes")
    for elem in ds.iterall():  # parse everything now so corruption surfaces here
        _ = elem.value
    _check_complete(ds, stop_before_pixels)
    return ds


def _check_complete(ds: Dataset, stop_before_pixels: bool) -> None:
    """Raise DataError for the usual signs of a truncated file (pydicom reads those silently)."""
    if stop_before_pixels or "PixelData" not in ds:
        return
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed:
        return
    try:
        frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
        n_pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * frames
        if str(ds.get("PhotometricInterpretation", "")).endswith("_422"):
            n_pixels = n_pixels * 2 // 3  # chroma subsampled: two samples per pixel
        expected = (n_pixels * int(ds.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return
    if len(ds.PixelData) < expected:
        raise DataError(f"truncated pixel data ({len(ds.PixelData)} of {expected} bytes)")
