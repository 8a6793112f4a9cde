"""Validate and decode an upload (PNG, JPEG or DICOM) into a float32 ``C×H×W`` image in [0, 1].

Guards, in order: empty body, declared content type vs the file's magic bytes, image
header dimensions (a decompression bomb is refused before any pixel is decoded), a
complete decode (truncated files fail), and a minimum size. DICOM files are de-identified
(PS3.15 Annex E, with a per-process random key) before anything else reads them.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from medlens.errors import MedlensError

ImageFile.LOAD_TRUNCATED_IMAGES = False
_DEID_SECRET = os.urandom(32)
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
CONTENT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "application/dicom": "dicom",
                 "application/octet-stream": None}


class UploadError(MedlensError):
    """An upload the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Decoded:
    """A decoded upload: the image, its format, and a hash that identifies it without holding pixels."""

    image: np.ndarray
    kind: str
    input_sha256: str


def sniff(data: bytes) -> str | None:
    """``png``, ``jpeg`` or ``dicom`` from the magic bytes, else None."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    return None


def decode_upload(data: bytes, content_type: str | None, *, max_pixels: int = 25_000_000, min_side: int = 16) -> Decoded:
    """Decode an upload or raise :class:`UploadError` (415, 413 or 422) with a message.

    Parameters
    ----------
    data : bytes
    content_type : str or None
        The part's (or body's) declared media type; must agree with the content.
    max_pixels : int, default=25_000_000
        Larger images (by their header) are refused as 413 before decoding.
    min_side : int, default=16
        Smaller images are refused as 422 (too little to judge).
    """
    if not data:
        raise UploadError(422, "empty upload: send a PNG, JPEG or DICOM file")
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared and declared not in CONTENT_TYPES:
        raise UploadError(415, f"unsupported content type {declared!r}; send image/png, image/jpeg or application/dicom")
    kind = sniff(data)
    if kind is None:
        raise UploadError(415, "the file is not a PNG, JPEG or DICOM image (unrecognised content)")
    expected = CONTENT_TYPES.get(declared)
    if expected is not None and expected != kind:
        raise UploadError(415, f"declared {declared} but the content is {kind.upper()}")
    if kind == "dicom":
        image, digest = _dicom(data, max_pixels)
    else:
        image = _raster(data, kind, max_pixels)
        digest = hashlib.sha256(data).hexdigest()
    h, w = image.shape[1:]
    if min(h, w) < min_side:
        raise UploadError(422, f"image is {w}×{h} px; at least {min_side}×{min_side} px is needed")
    return Decoded(image, kind, digest)


def _check_dims(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise UploadError(413, f"image header declares {w}×{h} px ({w * h:,} pixels), above the limit of "
                               f"{max_pixels:,}; downsample before sending")


def _raster(data: bytes, kind: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                _check_dims(*im.size, max_pixels)
                im.load()
                im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
                arr = np.asarray(im)
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UploadError(413, f"image refused as a decompression bomb ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise UploadError(422, f"{kind.upper()} could not be decoded (truncated or corrupt: {str(err)[:80]})") from None
    arr = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def _dicom(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """De-identify first, then decode; the hash is of the de-identified pixel data."""
    import pydicom

    from medlens.dicom import DeidOptions, dataset_to_image, deidentify_dataset
    from medlens.dicom.tree import quiet_pydicom

    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as err:  # pydicom raises many types on broken files
        raise UploadError(422, f"unreadable DICOM ({type(err).__name__})") from None
    try:
        deidentify_dataset(ds, DeidOptions(), _DEID_SECRET)
    except Exception as err:
        raise UploadError(422, f"DICOM could not be de-identified ({type(err).__name__}); refused") from None
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_dims(cols, rows, max_pixels)
    try:
        image = dataset_to_image(ds)
    except MedlensError as err:
        raise UploadError(422, f"DICOM pixel data: {err}") from None
    return image, hashlib.sha256(image.tobytes()).hexdigest()
