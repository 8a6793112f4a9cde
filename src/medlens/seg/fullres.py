"""Full-resolution segmentation images: the one preprocessing contract of ``seg.resample`` native / fov.

:func:`prepare` is what training, validation, test and any later inference apply to a
photograph: optional rescaling so that the field of view (FOV) has a fixed width (vessel
calibre scales with the FOV, whatever the camera's pixel count), the channel
(RGB, green or luminance), CLAHE, a gamma, a per-image standardisation over the FOV
pixels and zero outside the FOV. :func:`load_fullres` applies it to manifest rows and
keeps the original-resolution reference masks beside, because metrics are computed on
the original pixels (probabilities are resampled back, :func:`to_native`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from medlens.data.images import load_image, load_mask
from medlens.errors import DataError
from medlens.config.seg import SegConfig
from medlens.seg.data import clahe

__all__ = ["FullResImage", "fov_scale", "load_fullres", "prepare", "to_native"]

SCALE_TOLERANCE = 0.05
"""Scales within 5% of 1 are left alone: a 565-px DRIVE image is not resampled to fit a 540-px FOV."""


@dataclass
class FullResImage:
    """One image at working scale, and its references at the original scale."""

    image: np.ndarray
    """float32 ``C×h×w`` network input (standardised inside the FOV, 0 outside when fov_masking)."""
    mask: np.ndarray
    """uint8 ``h×w`` reference at working scale (training target)."""
    fov: np.ndarray
    """bool ``h×w`` field of view at working scale."""
    truth: np.ndarray
    """bool ``H×W`` reference at the original scale (what metrics compare with)."""
    fov_native: np.ndarray
    """bool ``H×W`` field of view at the original scale."""
    scale: float
    """working size / original size (1.0: not resampled)."""


def fov_scale(fov: np.ndarray, cfg: SegConfig) -> float:
    """The factor that brings the FOV's width (the larger side of its bounding box) to ``cfg.fov_diameter``.

    1.0 for ``resample: native``, and when the factor is within 5% of 1.
    """
    if cfg.resample != "fov":
        return 1.0
    ys, xs = np.nonzero(fov)
    if xs.size == 0:
        raise DataError("empty field-of-view mask: cannot scale the image to seg.fov_diameter")
    width = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    scale = cfg.fov_diameter / width
    return 1.0 if abs(scale - 1.0) <= SCALE_TOLERANCE else float(scale)


def _resize(a: np.ndarray, scale: float, interp: int) -> np.ndarray:
    if scale == 1.0:
        return a
    h, w = a.shape[:2]
    return cv2.resize(a, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)


def prepare(rgb: np.ndarray, fov: np.ndarray, cfg: SegConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Preprocess one photograph as the network sees it.

    Parameters
    ----------
    rgb : ndarray of shape (3, H, W) or (1, H, W), float in [0, 1]
        As :func:`medlens.data.images.load_image` returns it.
    fov : bool ndarray of shape (H, W)
        Field of view (all True when the data has none).
    cfg : SegConfig
        ``resample``, ``fov_diameter``, ``channels``, ``clahe*``, ``gamma``, ``fov_masking``.

    Returns
    -------
    image : float32 ndarray (C, h, w)
        C is 3 for ``channels: rgb`` of a colour image, else 1.
    fov : bool ndarray (h, w)
        The field of view at working scale.
    scale : float
        Working size over original size.
    """
    if rgb.ndim != 3 or rgb.shape[1:] != fov.shape:
        raise DataError(f"image {rgb.shape} and field of view {fov.shape} do not match")
    scale = fov_scale(fov, cfg)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    img = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    if img.shape[0] == 3 and cfg.channels == "green":
        img = img[1:2]
    elif img.shape[0] == 3 and cfg.channels == "luminance":
        img = cv2.cvtColor(np.ascontiguousarray(img.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)[None]
    f = _resize(fov.astype(np.uint8), scale, cv2.INTER_NEAREST).astype(bool)
    hwc = _resize(np.ascontiguousarray(img.transpose(1, 2, 0)), scale, interp)
    img = hwc.reshape(*f.shape, img.shape[0]).transpose(2, 0, 1)  # cv2 drops a single channel axis
    if cfg.clahe:
        img = clahe(np.ascontiguousarray(img), clip_limit=cfg.clahe_clip_limit, tiles=cfg.clahe_tiles)
    x = (img.astype(np.float32) / 255.0) ** cfg.gamma
    inside = x[:, f] if f.any() else x.reshape(x.shape[0], -1)
    x = (x - inside.mean(1)[:, None, None]) / (inside.std(1)[:, None, None] + 1e-6)
    if cfg.fov_masking:
        x = x * f
    return x.astype(np.float32), f, scale


def to_native(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample a working-scale probability map ``h×w`` back to the original ``H×W`` (bilinear)."""
    if prob.shape == tuple(shape):
        return prob
    return cv2.resize(prob.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def load_fullres(rows: pd.DataFrame, cfg: SegConfig, *, column: str = "mask") -> list[FullResImage]:
    """Load and prepare the manifest rows (in row order); ``column`` names the reference mask."""
    out = []
    for r in rows.itertuples(index=False):
        rgb = load_image(r.image)
        fov_ref = getattr(r, "fov_mask", "") if "fov_mask" in rows.columns else ""
        fov = load_mask(fov_ref).astype(bool) if isinstance(fov_ref, str) and fov_ref else \
            np.ones(rgb.shape[1:], bool)
        truth = load_mask(getattr(r, column)).astype(bool)
        if truth.shape != fov.shape or truth.shape != rgb.shape[1:]:
            raise DataError(f"{r.sample_id}: image {rgb.shape[1:]}, {column} {truth.shape} and field of view "
                            f"{fov.shape} must have one size")
        x, f, scale = prepare(rgb, fov, cfg)
        m = _resize(truth.astype(np.float32), scale, cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        out.append(FullResImage(x, (m > 0.5).astype(np.uint8), f, truth, fov, scale))
    return out
