"""FROC: lesion sensitivity against false positives per image, and the CPM, as LUNA16 reports them.

Hit rule (LUNA16's, with boxes): a predicted box hits a lesion when its centre lies inside
the lesion's box (``criterion="centre"``; small, fuzzy lesions) or their IoU is at least
``iou`` (``criterion="iou"``). A lesion's score is the highest score of the predictions that
hit it (0 when none does); a prediction that hits no lesion is a false positive, and extra
hits on a lesion are neither. At threshold ``t``: sensitivity = lesions scoring ≥ t / lesions,
FP per image = false positives scoring ≥ t / images. The CPM (competition performance metric)
is the mean sensitivity at :data:`FP_RATES`, read off the curve by linear interpolation as
LUNA16's evaluation script and MONAI's ``compute_froc_score`` do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from medlens.evaluate.boxes import box_iou

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per image at which the CPM averages sensitivity (LUNA16)."""


@dataclass(frozen=True)
class Froc:
    """A FROC curve: thresholds descending from ``inf`` (nothing kept), with the counts behind it."""

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_image: np.ndarray
    n_lesions: int
    n_images: int


def _hits(gt: np.ndarray, boxes: np.ndarray, criterion: str, iou: float) -> np.ndarray:
    """Boolean (P, G): prediction p hits lesion g."""
    if criterion == "centre":
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        return ((cx[:, None] >= gt[None, :, 0]) & (cx[:, None] < gt[None, :, 2])
                & (cy[:, None] >= gt[None, :, 1]) & (cy[:, None] < gt[None, :, 3]))
    if criterion == "iou":
        return box_iou(boxes, gt) >= iou
    raise ValueError(f"criterion must be 'centre' or 'iou', got {criterion!r}")


def match(gt: Sequence[np.ndarray], pred: Sequence[tuple[np.ndarray, np.ndarray]], *, criterion: str = "centre",
          iou: float = 0.3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image: each lesion's score (0 if missed) and the scores of the false positives.

    Parameters
    ----------
    gt : sequence of ndarray of shape (G_i, 4)
        Lesion boxes of each image (``G_i`` may be 0).
    pred : sequence of (boxes (P_i, 4), scores (P_i,))
        Predicted boxes and scores in (0, 1] of the same images, in the same order.
    criterion, iou
        The hit rule (module docstring).
    """
    if len(gt) != len(pred):
        raise ValueError(f"{len(gt)} images of lesions but {len(pred)} of predictions")
    lesion_scores, fp_scores = [], []
    for g, (b, s) in zip(gt, pred):
        g, b, s = np.asarray(g, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4), np.asarray(s, float)
        if len(b) != len(s):
            raise ValueError(f"{len(b)} predicted boxes but {len(s)} scores in one image")
        hit = _hits(g, b, criterion, iou)
        lesion_scores.append(np.where(hit, s[:, None], 0.0).max(axis=0) if len(b) else np.zeros(len(g)))
        fp_scores.append(s[~hit.any(axis=1)])
    return lesion_scores, fp_scores


def froc(gt: Sequence[np.ndarray], pred: Sequence[tuple[np.ndarray, np.ndarray]], *, criterion: str = "centre",
         iou: float = 0.3) -> Froc:
    """The FROC curve of predictions against lesion boxes (arguments as :func:`match`)."""
    lesion_scores, fp_scores = match(gt, pred, criterion=criterion, iou=iou)
    return _curve(np.concatenate(lesion_scores or [np.zeros(0)]), np.concatenate(fp_scores or [np.zeros(0)]),
                  len(gt))


def _curve(lesions: np.ndarray, fps: np.ndarray, n_images: int) -> Froc:
    if lesions.size == 0:
        raise ValueError("no lesions: sensitivity is undefined")
    t = np.unique(np.concatenate([lesions[lesions > 0], fps]))[::-1]
    t = np.concatenate([[np.inf], t])
    sens = (lesions[None, :] >= t[:, None]).sum(1) / lesions.size
    fp = (fps[None, :] >= t[:, None]).sum(1) / n_images
    return Froc(t, sens, fp, int(lesions.size), int(n_images))


def sensitivity_at(curve: Froc, rates: Sequence[float] = FP_RATES) -> np.ndarray:
    """Sensitivity at each FP-per-image rate, linearly interpolated along the curve.

    Where the curve rises at one FP rate (a lesion found without a new false positive), the
    highest sensitivity at that rate counts; beyond the curve's last point its sensitivity holds.
    """
    fp, first = np.unique(curve.fp_per_image, return_index=True)
    best = np.maximum.reduceat(curve.sensitivity, first) if fp.size else curve.sensitivity
    return np.interp(np.asarray(rates, float), fp, best)


def cpm(curve: Froc, rates: Sequence[float] = FP_RATES) -> float:
    """Mean sensitivity at ``rates`` false positives per image."""
    return float(sensitivity_at(curve, rates).mean())


def estimate(value: float, replicates: np.ndarray) -> dict:
    """``{"value", "low", "high"}``: a point estimate with the 2.5/97.5 percentiles of its finite replicates."""
    reps = np.asarray(replicates, float)
    reps = reps[np.isfinite(reps)]
    lo, hi = np.percentile(reps, [2.5, 97.5]) if reps.size else (np.nan, np.nan)
    return {"value": float(value), "low": float(lo), "high": float(hi)}


def patient_bootstrap(stat: Callable[[np.ndarray], dict], patients: Sequence, n_boot: int,
                      seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Point values and patient-bootstrap replicates of ``stat(image_indices) -> {name: float}``.

    A replicate draws patients with replacement and keeps all their images; a statistic a
    replicate leaves undefined is NaN there. Returns ``(point, {name: replicates})``.
    """
    ids, inverse = np.unique(np.asarray(patients), return_inverse=True)
    by_patient = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    point = stat(np.arange(len(inverse)))
    rng = np.random.default_rng(seed)
    reps: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        images = np.concatenate([by_patient[k] for k in rng.integers(0, len(ids), len(ids))])
        for k, v in stat(images).items():
            reps[k].append(v)
    return point, {k: np.asarray(v, float) for k, v in reps.items()}


def bootstrap_estimates(stat: Callable[[np.ndarray], dict], patients: Sequence, n_boot: int, seed: int) -> dict:
    """``{name: estimate}`` of ``stat`` with 95% patient-bootstrap intervals (:func:`patient_bootstrap`)."""
    point, reps = patient_bootstrap(stat, patients, n_boot, seed)
    return {k: estimate(v, reps[k]) for k, v in point.items()}


def froc_with_ci(gt: Sequence[np.ndarray], pred: Sequence[tuple[np.ndarray, np.ndarray]], patients: Sequence,
                 *, criterion: str = "centre", iou: float = 0.3, n_boot: int = 2000, seed: int = 0) -> dict:
    """CPM and sensitivity at each rate of :data:`FP_RATES`, with 95% patient-bootstrap intervals.

    ``patients`` gives each image's patient (:func:`patient_bootstrap`). Replicates without a
    lesion are left out (``n_boot_used``).
    """
    lesion_scores, fp_scores = match(gt, pred, criterion=criterion, iou=iou)
    if len(patients) != len(gt):
        raise ValueError(f"{len(patients)} patient ids for {len(gt)} images")
    curve = _curve(np.concatenate(lesion_scores), np.concatenate(fp_scores), len(gt))  # raises without lesions

    def stat(images: np.ndarray) -> dict:
        les = np.concatenate([lesion_scores[i] for i in images])
        if not les.size:
            return {str(r): np.nan for r in FP_RATES}
        sens = sensitivity_at(_curve(les, np.concatenate([fp_scores[i] for i in images]), len(images)))
        return {str(r): float(v) for r, v in zip(FP_RATES, sens)}

    point, reps = patient_bootstrap(stat, patients, n_boot, seed)
    sens = np.stack([reps[str(r)] for r in FP_RATES], 1)
    used = np.isfinite(sens).all(1)
    return {"cpm": estimate(np.mean(list(point.values())), sens[used].mean(axis=1)),
            "sensitivity_at": {str(r): estimate(point[str(r)], reps[str(r)]) for r in FP_RATES},
            "n_lesions": curve.n_lesions, "n_images": curve.n_images, "n_patients": len(np.unique(patients)),
            "n_boot_used": int(used.sum())}
