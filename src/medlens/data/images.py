"""Image decoding: one manifest ``image`` reference -> float32 ``C×H×W`` in [0, 1], and mask PNGs.

A reference is a file path (relative to a base folder or absolute), an array reference
``/path/file.npz::<key>/<index>``, or a DICOM frame ``/path/file.dcm::frame/<k>``
(:data:`NPZ_SEP` separates the file from its inner part). Kept apart from the manifest
table (:mod:`medlens.data.manifest`) so that what prepares an image for the network
(:mod:`medlens.data.preprocess`, and the service through it) needs nothing but the decoder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medlens.errors import DataError

__all__ = ["NPZ_SEP", "load_image", "load_mask"]

NPZ_SEP = "::"
"""Separates a file from the array (``key/index``) or DICOM frame (``frame/k``) inside it."""


@lru_cache(maxsize=4)
def _npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def load_image(ref: str, base: str | Path = ".") -> np.ndarray:
    """Load one image as float32 ``C×H×W`` in [0, 1].

    Parameters
    ----------
    ref : str
        File path (relative to ``base`` unless absolute), ``file.npz::key/index`` or
        ``file.dcm::frame/k``.
    base : path
        Folder that relative references are resolved against.

    Raises
    ------
    DataError
        The file is missing, unreadable or not an image; the message names it.
    """
    if NPZ_SEP in ref:
        file, inner = ref.split(NPZ_SEP, 1)
        key, index = inner.rsplit("/", 1)
        if key == "frame":
            from medlens.dicom import load_dicom_image

            return load_dicom_image(Path(base) / file, frame=int(index))
        arr = _npz(str(Path(base) / file))[key][int(index)]
    else:
        path = Path(base) / ref
        try:
            with Image.open(path) as im:
                im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
                arr = np.asarray(im)
        except FileNotFoundError:
            raise DataError(f"{path}: image file not found") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DataError(f"{path}: not a readable image ({err})") from None
    arr = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_mask(ref: str, base: str | Path = ".") -> np.ndarray:
    """Load a mask PNG as uint8 ``H×W`` with values {0, 1}."""
    path = Path(base) / ref
    try:
        with Image.open(path) as im:
            return (np.asarray(im.convert("L")) > 127).astype(np.uint8)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable mask ({err})") from None
