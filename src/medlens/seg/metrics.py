"""Segmentation metrics on one binary mask pair: overlap, surface distance, lesions.

Every function takes ``(y_true, y_pred)``: binary masks of the same shape ``H×W`` (any
integer or bool dtype; non-zero is lesion). Dice and IoU are MONAI's ``compute_dice``/
``compute_iou`` (``ignore_empty=False``), given a float64 one-hot ``[background, lesion]``
pair with ``include_background=False``: with those settings MONAI computes
``2|T∩P| / (|T|+|P|)`` and ``|T∩P| / |T∪P|`` in float64, bit for bit the textbook ratios
(a single-channel or bool input makes it compute in float32). MONAI is imported on the
first call, not with this module.

The surface distances (HD95, ASD) stay here: MONAI's ``compute_hausdorff_distance
(percentile=95)`` and ``compute_average_surface_distance(symmetric=True)`` cast the
masks, the distances and the result to float32 whatever the input dtype (relative
differences up to ~1e-6). The functions below compute the same definition (edges by XOR
with a binary erosion, Euclidean distances, linear-interpolation percentile) in float64
and agree with MONAI to 1e-6 wherever MONAI returns a finite number.

Empty-mask convention (tested explicitly in ``tests/seg/test_metrics.py``):

============================  ======  ======  ===============  ======================
case                          Dice    IoU     HD95 / ASD       lesion sens. / prec.
============================  ======  ======  ===============  ======================
no lesion, none predicted     1.0     1.0     0.0              not counted (0 of 0)
no lesion, some predicted     0.0     0.0     nan (undefined)  precision counts FPs
lesion, none predicted        0.0     0.0     nan (undefined)  sensitivity counts FNs
============================  ======  ======  ===============  ======================

MONAI gives ``inf`` surface distances when exactly one mask is empty; medlens gives
``nan`` so that a mean over images leaves such images out (they are already penalised
by Dice and by per-lesion sensitivity/precision) instead of becoming infinite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from medlens.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = [
    "LesionMatch",
    "average_surface_distance",
    "dice_score",
    "hd95_distance",
    "iou_score",
    "lesion_match",
    "surface_distances",
]

_EIGHT = np.ones((3, 3), bool)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 2 or t.shape != p.shape:
        raise DataError(f"masks must be two H×W arrays of the same shape, got {t.shape} and {p.shape}")
    return t != 0, p != 0


def _onehot(m: np.ndarray) -> torch.Tensor:
    # (1, 2, H, W) float64 [background, lesion]: MONAI then computes Dice and IoU in float64
    import torch

    return torch.from_numpy(np.stack([~m, m])[None].astype(np.float64))


def dice_score(y_true, y_pred) -> float:
    """Dice coefficient ``2|T∩P| / (|T|+|P|)``; 1.0 when both masks are empty (MONAI's ``compute_dice``).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (H, W)
        Binary masks (non-zero is lesion).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((4, 4), np.uint8); t[:2, :2] = 1
    >>> p = np.zeros((4, 4), np.uint8); p[:2, :1] = 1
    >>> round(dice_score(t, p), 4)
    0.6667
    """
    from monai.metrics import compute_dice

    t, p = _pair(y_true, y_pred)
    return float(compute_dice(_onehot(p), _onehot(t), include_background=False, ignore_empty=False))


def iou_score(y_true, y_pred) -> float:
    """Intersection over union (Jaccard); 1.0 when both masks are empty (MONAI's ``compute_iou``).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((4, 4), np.uint8); t[:2, :2] = 1
    >>> p = np.zeros((4, 4), np.uint8); p[:2, :1] = 1
    >>> iou_score(t, p)
    0.5
    """
    from monai.metrics import compute_iou

    t, p = _pair(y_true, y_pred)
    return float(compute_iou(_onehot(p), _onehot(t), include_background=False, ignore_empty=False))


def _edges(m: np.ndarray) -> np.ndarray:
    # MONAI (no spacing): XOR with a binary erosion, zero border outside the image
    return m ^ ndimage.binary_erosion(m)


def surface_distances(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances (pixels) from each predicted edge pixel to the true edge, and back.

    Returns
    -------
    pred_to_true, true_to_pred : ndarray
        Empty when the corresponding mask is empty; ``inf`` entries when the other mask is.
    """
    t, p = _pair(y_true, y_pred)
    et, ep = _edges(t), _edges(p)

    def to(edge_from: np.ndarray, edge_to: np.ndarray) -> np.ndarray:
        if not edge_from.any():
            return np.zeros(0)
        if not edge_to.any():
            return np.full(int(edge_from.sum()), np.inf)
        return ndimage.distance_transform_edt(~edge_to)[edge_from]

    return to(ep, et), to(et, ep)


def _surface(y_true, y_pred) -> tuple[np.ndarray, np.ndarray] | float:
    t, p = _pair(y_true, y_pred)
    if not t.any() and not p.any():
        return 0.0
    if not t.any() or not p.any():
        return float("nan")
    return surface_distances(t, p)


def hd95_distance(y_true, y_pred) -> float:
    """Symmetric 95th-percentile Hausdorff distance in pixels (lower is better).

    The larger of the two directed 95th percentiles (linear interpolation), as MONAI's
    ``compute_hausdorff_distance(percentile=95)``. 0.0 when both masks are empty, ``nan``
    when exactly one is.
    """
    d = _surface(y_true, y_pred)
    if isinstance(d, float):
        return d
    return float(max(np.percentile(d[0], 95), np.percentile(d[1], 95)))


def average_surface_distance(y_true, y_pred) -> float:
    """Symmetric average surface distance in pixels: the mean over both directions' distances.

    As MONAI's ``compute_average_surface_distance(symmetric=True)``. 0.0 when both masks
    are empty, ``nan`` when exactly one is.
    """
    d = _surface(y_true, y_pred)
    if isinstance(d, float):
        return d
    return float(np.concatenate(d).mean())


@dataclass(frozen=True)
class LesionMatch:
    """Connected-component matching of one image.

    Attributes
    ----------
    true_areas : ndarray of int
        Pixel area of each true lesion (8-connected component).
    true_detected : ndarray of bool
        Whether each true lesion overlaps at least one predicted component.
    n_pred : int
        Number of predicted components.
    pred_correct : int
        Predicted components that overlap at least one true lesion.
    """

    true_areas: np.ndarray
    true_detected: np.ndarray
    n_pred: int
    pred_correct: int


def lesion_match(y_true, y_pred) -> LesionMatch:
    """Match lesions by overlap of 8-connected components.

    A true lesion counts as detected when any predicted pixel falls on it; a predicted
    component is correct when it touches any true lesion. Per-lesion sensitivity is
    ``detected / true lesions``, precision ``correct / predicted components``, both
    pooled over images.
    """
    t, p = _pair(y_true, y_pred)
    lt, nt = ndimage.label(t, structure=_EIGHT)
    lp, n_pred = ndimage.label(p, structure=_EIGHT)
    if nt:
        areas = np.bincount(lt.ravel(), minlength=nt + 1)[1:]
        hit = np.bincount(lt[p].ravel(), minlength=nt + 1)[1:] > 0
    else:
        areas, hit = np.zeros(0, int), np.zeros(0, bool)
    correct = int(np.count_nonzero(np.bincount(lp[t].ravel(), minlength=n_pred + 1)[1:])) if n_pred else 0
    return LesionMatch(areas.astype(int), hit, int(n_pred), correct)
