"""Images, masks and targets of a manifest as in-memory tensors for segmentation.

Images go through :func:`medlens.data.arrays.load_tensor` (decode, resize with padding,
channels) and optionally CLAHE; masks are resized the same way and thresholded at 0.5,
so image and mask stay aligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch

from medlens.data.arrays import load_tensor, resize
from medlens.data.images import load_mask
from medlens.errors import DataError

__all__ = ["SegArrays", "clahe", "load_masks", "load_seg_arrays"]


def clahe(img: np.ndarray, *, clip_limit: float = 2.0, tiles: int = 4) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a ``C×H×W`` uint8 image.

    RGB images are equalised on the L channel of CIE Lab (colour kept); grey images directly.

    Parameters
    ----------
    img : ndarray of shape (C, H, W), uint8, C in {1, 3}
    clip_limit : float, default=2.0
        OpenCV clip limit (higher: stronger contrast, more noise).
    tiles : int, default=4
        Tiles per side of the grid.

    Returns
    -------
    ndarray of shape (C, H, W), uint8
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[0] not in (1, 3):
        raise DataError(f"clahe expects a uint8 C×H×W image with 1 or 3 channels, got {img.dtype} {img.shape}")
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles)))
    if img.shape[0] == 1:
        return op.apply(np.ascontiguousarray(img[0]))[None]
    lab = cv2.cvtColor(np.ascontiguousarray(img.transpose(1, 2, 0)), cv2.COLOR_RGB2LAB)
    lab[..., 0] = op.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).transpose(2, 0, 1).copy()


def load_masks(manifest: pd.DataFrame, *, size: int, column: str = "mask") -> torch.Tensor:
    """Masks of the manifest rows at ``size``: uint8 tensor ``N×1×size×size`` in {0, 1}.

    ``column`` is ``mask`` (lesions) or ``fov_mask`` (field of view).
    """
    if column not in manifest.columns:
        raise DataError(f"the manifest has no '{column}' column; segmentation needs lesion masks "
                        "(map a mask column in data.csv_columns, or use the phantom: data.source synthetic)")
    empty = [i for i, ref in enumerate(manifest[column].tolist()) if not isinstance(ref, str) or not ref]
    if empty:
        raise DataError(f"{len(empty)} image(s) have no {column}, e.g. {manifest['sample_id'].iloc[empty[0]]}; "
                        "give one for every image or leave the column out")
    out = np.empty((len(manifest), 1, size, size), np.uint8)
    for i, ref in enumerate(manifest[column].tolist()):
        m = load_mask(ref).astype(np.float32)[None]
        out[i] = resize(m, size) > 0.5 if m.shape[1:] != (size, size) else m
    return torch.from_numpy(out)


@dataclass
class SegArrays:
    """Everything one part of the data needs for training or evaluation."""

    images: torch.Tensor
    """uint8 ``N×C×S×S`` (CLAHE applied if configured)."""
    masks: torch.Tensor
    """uint8 ``N×1×S×S`` in {0, 1}."""
    labels: np.ndarray
    """int image labels (1 = lesion present per the expert)."""
    severity: np.ndarray
    """float severity 0-4 (nan where unknown)."""
    fov: torch.Tensor | None = None
    """uint8 ``N×1×S×S`` field-of-view masks when the manifest has them (metrics are computed inside)."""

    def __len__(self) -> int:
        return len(self.labels)


def load_seg_arrays(manifest: pd.DataFrame, *, size: int, in_chans: int, use_clahe: bool,
                    clip_limit: float = 2.0, tiles: int = 4) -> SegArrays:
    """Load images, masks, labels and severity of the manifest rows (in row order)."""
    images = load_tensor(manifest, size=size, in_chans=in_chans)
    if use_clahe:
        arr = images.numpy()
        images = torch.from_numpy(np.stack([clahe(a, clip_limit=clip_limit, tiles=tiles) for a in arr]))
    sev = manifest["severity"] if "severity" in manifest.columns else pd.Series(np.nan, index=manifest.index)
    fov = load_masks(manifest, size=size, column="fov_mask") if "fov_mask" in manifest.columns else None
    return SegArrays(images=images, masks=load_masks(manifest, size=size),
                     labels=manifest["label"].to_numpy(dtype=float, na_value=0).astype(int),
                     severity=pd.to_numeric(sev, errors="coerce").to_numpy(dtype=float, na_value=np.nan), fov=fov)
