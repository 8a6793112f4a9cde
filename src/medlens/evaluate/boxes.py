"""Lesion boxes from a mask: one box per connected component.

Boxes are ``float`` arrays of shape ``(K, 4)``, ``x0, y0, x1, y1`` in pixel coordinates with
``x1, y1`` exclusive: the pixels ``x0 … x1 − 1`` (a one-pixel lesion at column 3 spans 3–4),
which is COCO's ``[x, y, width, height]`` after ``width = x1 − x0``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def boxes_from_mask(mask: np.ndarray, *, connectivity: int = 8, min_pixels: int = 1) -> np.ndarray:
    """One box per connected lesion component of a 2-D mask.

    Parameters
    ----------
    mask : ndarray of shape (H, W)
        Non-zero on lesion pixels.
    connectivity : {4, 8}
        Pixel neighbourhood of a component (8, as the segmentation stage counts lesions).
    min_pixels : int
        Components smaller than this are dropped.

    Returns
    -------
    ndarray of shape (K, 4), float64
        ``x0, y0, x1, y1`` (exclusive ends), in label order (row-major first pixel).
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    labels, n, boxes = _components(mask != 0, connectivity)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return boxes[sizes >= min_pixels]


def _components(binary: np.ndarray, connectivity: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Label image, component count and one box per component (label order) of a 2-D boolean array."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    structure = np.ones((3, 3), bool) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(binary, structure=structure)
    boxes = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop) for sl in ndimage.find_objects(labels)]
    return labels, n, np.asarray(boxes, np.float64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (M, 4) with every box of ``b`` (N, 4): shape (M, N)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def boxes_from_probability(prob: np.ndarray, threshold: float, *, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Detections from a segmentation map: one box per component of ``prob >= threshold``.

    Parameters
    ----------
    prob : ndarray of shape (H, W)
        Lesion probability per pixel.
    threshold : float
        The segmentation threshold.
    connectivity : {4, 8}

    Returns
    -------
    boxes : ndarray of shape (K, 4)
        As :func:`boxes_from_mask`.
    scores : ndarray of shape (K,)
        The highest probability inside each component.
    """
    if prob.ndim != 2:
        raise ValueError(f"prob must be 2-D (H, W), got shape {prob.shape}")
    labels, n, boxes = _components(prob >= threshold, connectivity)
    scores = np.asarray(ndimage.maximum(prob, labels, index=np.arange(1, n + 1)), np.float64).reshape(-1)
    return boxes, scores
