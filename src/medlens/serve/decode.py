"""Validate and decode an upload (PNG, JPEG or DICOM) into a float32 ``C×H×W`` image in [0, 1].

Guards, in order: empty body, declared content type vs the file's magic bytes, image
header dimensions (a decompression bomb is refused before any pixel is decoded), a
complete decode (truncated files fail), and a minimum size.

A DICOM upload is bounded the same way before any pixel is decoded: a deflated dataset
is inflated in chunks and refused once it passes :func:`dicom_inflate_limit`; a DICOMDIR
or an object without pixel data (a structured report) is refused; the declared frames ×
rows × columns must fit ``max_pixels``, with samples per pixel and bits allocated the
service can decode; and the pixel data element must hold the bytes those dimensions
need. Those checks read structural attributes only; the dataset is then de-identified
(PS3.15 Annex E, with a per-process random key) before anything else reads it, and only
the first frame is decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from medlens.errors import MedlensError

ImageFile.LOAD_TRUNCATED_IMAGES = False
_DEID_SECRET = os.urandom(32)
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"
CONTENT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "application/dicom": "dicom",
                 "application/octet-stream": None}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"
DICOM_SAMPLES_PER_PIXEL, DICOM_BITS_ALLOCATED = (1, 3), (1, 8, 16, 32)
_INFLATE_BYTES_PER_PIXEL, _INFLATE_METADATA_BYTES, _INFLATE_CHUNK = 4, 8 << 20, 1 << 20


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


def dicom_inflate_limit(max_pixels: int) -> int:
    """Largest size, in bytes, that a deflated DICOM dataset may inflate to.

    Room for ``max_pixels`` at 4 bytes each (16-bit grey, 8-bit colour) plus 8 MiB of
    attributes; at the default 25,000,000 pixels that is 108,388,608 bytes.
    """
    return _INFLATE_BYTES_PER_PIXEL * max_pixels + _INFLATE_METADATA_BYTES


def _dicom(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """Check the header, de-identify, then decode the first frame; the hash is of that de-identified image."""
    from medlens.dicom import DeidOptions, dataset_to_image, deidentify_dataset
    from medlens.dicom.reader import quiet_pydicom

    ds = _read_dicom(data, dicom_inflate_limit(max_pixels))
    with quiet_pydicom():
        _refuse_non_image(ds)
        _check_pixel_length(ds, _declared_pixel_bytes(ds, max_pixels))
    try:
        deidentify_dataset(ds, DeidOptions(), _DEID_SECRET)
    except Exception as err:
        raise UploadError(422, f"DICOM could not be de-identified ({type(err).__name__}); refused") from None
    try:
        image = dataset_to_image(ds, frame=0)
    except MedlensError as err:
        raise UploadError(422, f"DICOM pixel data: {err}") from None
    return image, hashlib.sha256(image.tobytes()).hexdigest()


def _read_dicom(data: bytes, max_inflated: int):
    """Parse the upload as DICOM, or 422; a deflated dataset may inflate to ``max_inflated`` bytes (413 beyond)."""
    from medlens.dicom.reader import quiet_pydicom

    try:
        with quiet_pydicom():
            return _parse_dicom(data, max_inflated)
    except UploadError:
        raise
    except Exception as err:  # pydicom and zlib raise many types on broken files
        raise UploadError(422, f"unreadable DICOM ({type(err).__name__})") from None


def _parse_dicom(data: bytes, max_inflated: int):
    """Read the File Meta (Explicit VR Little Endian, PS3.10) first; inflate a deflated dataset ourselves, bounded.

    Every File Meta element is decoded here, so pydicom's own read of a non-deflated file
    (``dcmread``) parses the same meta and sees the same transfer syntax; pydicom would
    inflate a deflated one whole.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filereader import read_dataset, read_preamble

    fp = io.BytesIO(data)
    preamble = read_preamble(fp, force=False)
    meta = FileMetaDataset(read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                                        stop_when=lambda tag, vr, length: tag >> 16 != 2))
    list(meta)  # decode every element now: a meta that is not Explicit VR Little Endian fails here
    if meta.get("TransferSyntaxUID") != DEFLATED_TRANSFER_SYNTAX:
        return pydicom.dcmread(io.BytesIO(data))
    body = _inflate(memoryview(data)[fp.tell():], max_inflated)
    dataset = read_dataset(io.BytesIO(body), is_implicit_VR=False, is_little_endian=True)
    return FileDataset("upload", dataset, preamble=preamble, file_meta=meta, is_implicit_VR=False,
                       is_little_endian=True)


def _inflate(stream: memoryview, limit: int) -> bytes:
    """Inflate a raw deflate stream, refusing it (413) as soon as its output passes ``limit`` bytes.

    The first pass counts the output one chunk at a time and holds nothing else; only a
    stream within the limit is inflated a second time into memory.
    """
    size = 0
    for chunk in _inflated_chunks(stream):
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"deflated DICOM data of {len(stream):,} bytes inflates beyond the limit of "
                                   f"{limit:,} bytes; refused as a decompression bomb")
    return b"".join(_inflated_chunks(stream))


def _inflated_chunks(stream: memoryview) -> Iterator[bytes]:
    """The inflated output of a raw deflate stream, at most ``_INFLATE_CHUNK`` bytes at a time."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending: bytes | memoryview = stream
    while not inflater.eof:
        chunk = inflater.decompress(pending, _INFLATE_CHUNK)
        pending = inflater.unconsumed_tail
        if not chunk and not pending:
            raise UploadError(422, "deflated DICOM data ends early (truncated upload)")
        yield chunk


def _refuse_non_image(ds) -> None:
    """422 for a DICOMDIR and for an object without pixel data (a structured report, say)."""
    meta = getattr(ds, "file_meta", None) or {}
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", "") or "")
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise UploadError(422, "the upload is a DICOMDIR (a media directory that lists files, with no image); "
                               "send one DICOM image file")
    if "PixelData" not in ds:
        raise UploadError(422, f"the DICOM object{_sop_class_name(sop_class)} holds no pixel data (e.g. a structured "
                               "report or a presentation state); send a DICOM image")


def _sop_class_name(uid: str) -> str:
    """`` (Basic Text SR Storage)`` for a registered SOP class UID; nothing for an unknown (maybe private) one."""
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return f" ({name})" if name and name != uid else ""


def _declared(ds, keyword: str, default: int | None = None) -> int:
    """A positive integer attribute of the header, or 422."""
    value = ds.get(keyword, None)
    try:
        number = default if value in (None, "") and default is not None else int(value)
    except (TypeError, ValueError):
        raise UploadError(422, f"DICOM {keyword} is missing or not one number") from None
    if number < 1:
        raise UploadError(422, f"DICOM {keyword} is {number}; it must be at least 1")
    return number


def _declared_pixel_bytes(ds, max_pixels: int) -> int:
    """Bytes of pixel data the header declares; 413 above ``max_pixels`` (all frames), 422 if undecodable.

    Frames, rows, columns, samples per pixel and bits allocated are checked before any
    pixel is read.
    """
    frames, rows, cols = _declared(ds, "NumberOfFrames", 1), _declared(ds, "Rows"), _declared(ds, "Columns")
    samples, bits = _declared(ds, "SamplesPerPixel", 1), _declared(ds, "BitsAllocated")
    if samples not in DICOM_SAMPLES_PER_PIXEL or bits not in DICOM_BITS_ALLOCATED:
        raise UploadError(422, f"DICOM with {samples} samples per pixel and {bits} bits allocated is not supported "
                               f"(samples {DICOM_SAMPLES_PER_PIXEL}, bits {DICOM_BITS_ALLOCATED})")
    pixels = frames * rows * cols
    if pixels > max_pixels:
        raise UploadError(413, f"DICOM header declares {frames:,} frame(s) of {cols}×{rows} px ({pixels:,} pixels), "
                               f"above the limit of {max_pixels:,}; send fewer or smaller frames")
    values = pixels * samples
    if str(ds.get("PhotometricInterpretation", "")).endswith("_422"):
        values = values * 2 // 3  # chroma subsampled: two samples per pixel
    return (values * bits + 7) // 8


def _check_pixel_length(ds, needed: int) -> None:
    """422 when the pixel data element holds fewer bytes than it declares, or (uncompressed) than the header needs."""
    raw = ds.get_item("PixelData")
    held = len(raw.value or b"")
    declared = getattr(raw, "length", 0xFFFFFFFF)
    if declared != 0xFFFFFFFF and held < declared:
        raise UploadError(422, f"truncated DICOM: the pixel data element holds {held:,} of its {declared:,} bytes")
    if _is_native(ds) and held < needed:
        raise UploadError(422, f"truncated DICOM pixel data: {held:,} bytes where the header's frames, rows, columns, "
                               f"samples and bits need {needed:,}")


def _is_native(ds) -> bool:
    """Whether the pixel data is stored uncompressed (its length then follows from the header).

    Without a transfer syntax pydicom reads the dataset as uncompressed little endian.
    """
    from pydicom.uid import ImplicitVRLittleEndian, UncompressedTransferSyntaxes

    return ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian) in UncompressedTransferSyntaxes
