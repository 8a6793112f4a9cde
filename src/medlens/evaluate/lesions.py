"""One detection summary for any detector: FROC/CPM, COCO mAP, and the figures at an operating point.

The detector stage and detection by segmentation (the seg stage's components) both call
:func:`detection_summary`, so the two rows of the comparison come from the same code on the
same images. Every figure has a 95% patient-level bootstrap interval: a replicate draws
patients with replacement and keeps all their images.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from medlens.evaluate.froc import bootstrap_estimates, froc_with_ci, match

__all__ = ["best_f1_threshold", "detection_summary"]

MAP_BOOTSTRAP = 200
"""Replicates for the mAP intervals (pycocotools takes ~50 ms a call; the other intervals use ``n_boot``)."""


def best_f1_threshold(gt: Sequence[np.ndarray], pred: Sequence[tuple[np.ndarray, np.ndarray]], *,
                      criterion: str = "centre", iou: float = 0.3) -> float:
    """The score threshold that maximises lesion-level F1 (``2 TP / (2 TP + FP + FN)``) on these images.

    Call it on validation images only; the test images are then read at this threshold.
    Ties go to the higher threshold (fewer boxes to review). 0.0 when there is no lesion.
    """
    lesions, fps = match(gt, pred, criterion=criterion, iou=iou)
    les, fp = np.concatenate(lesions or [np.zeros(0)]), np.concatenate(fps or [np.zeros(0)])
    cands = np.unique(np.concatenate([les[les > 0], fp]))[::-1]
    if les.size == 0 or cands.size == 0:
        return 0.0
    tp = (les[None, :] >= cands[:, None]).sum(1)
    f = (fp[None, :] >= cands[:, None]).sum(1)
    f1 = 2 * tp / (2 * tp + f + (les.size - tp))
    return float(cands[int(np.argmax(f1))])


def _areas(gt: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Box areas (px²) of each image's lesions."""
    boxes = [np.asarray(g, float).reshape(-1, 4) for g in gt]
    return [(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes]


def _bin_names(edges: Sequence[int]) -> list[str]:
    e = list(edges)
    return ([f"< {e[0]}"] if e else []) + [f"{a}-{b}" for a, b in zip(e, e[1:])] + ([f">= {e[-1]}"] if e else ["all"])


def detection_summary(gt: Sequence[np.ndarray], pred: Sequence[tuple[np.ndarray, np.ndarray]], patients: Sequence, *,
                      threshold: float, size_bins: Sequence[int] = (16, 36, 64), criterion: str = "centre",
                      iou: float = 0.3, n_boot: int = 2000, seed: int = 0) -> dict:
    """Every detection figure of one set of images, each with a 95% patient-bootstrap CI.

    Parameters
    ----------
    gt : sequence of ndarray of shape (G_i, 4)
        Lesion boxes per image.
    pred : sequence of (boxes (P_i, 4), scores (P_i,))
        Candidates of the same images (all of them: the FROC sweeps their scores).
    patients : sequence
        Each image's patient id.
    threshold : float
        The operating point (chosen on validation): boxes scoring ≥ it are shown to the reader.
    size_bins : sequence of int
        Lesion box-area edges (px²) for per-size sensitivity at the operating point.
    criterion, iou
        The hit rule of :func:`medlens.evaluate.froc.match`.

    Returns
    -------
    dict
        ``cpm`` and ``sensitivity_at`` (FROC, :func:`froc_with_ci`); ``map`` and ``map_50``
        (pycocotools); ``operating_point``: ``threshold``, ``sensitivity``, ``fp_per_image``,
        ``precision``, ``count_error`` (mean |predicted − true| lesions per image), and
        ``by_size``: per area bin ``n_lesions`` and ``sensitivity``.
    """
    from medlens.evaluate.coco import coco_map

    patients = np.asarray(patients)
    n_lesions = int(sum(len(np.asarray(g).reshape(-1, 4)) for g in gt))
    if n_lesions == 0:
        return {"n_lesions": 0, "n_images": len(gt)}
    out = froc_with_ci(gt, pred, patients, criterion=criterion, iou=iou, n_boot=n_boot, seed=seed)
    lesions, fps = match(gt, pred, criterion=criterion, iou=iou)
    areas = _areas(gt)
    bins = [np.digitize(a, list(size_bins)) for a in areas]
    names = _bin_names(size_bins)
    shown = [int((np.asarray(s) >= threshold).sum()) for _, s in pred]
    true_n = [len(np.asarray(g).reshape(-1, 4)) for g in gt]

    def at_threshold(images: np.ndarray) -> dict:
        les = np.concatenate([lesions[i] for i in images])
        fp = sum(int((fps[i] >= threshold).sum()) for i in images)
        tp = int((les >= threshold).sum())
        b = np.concatenate([bins[i] for i in images])
        res = {"sensitivity": tp / les.size if les.size else np.nan, "fp_per_image": fp / len(images),
               "precision": tp / (tp + fp) if tp + fp else np.nan,
               "count_error": float(np.mean([abs(shown[i] - true_n[i]) for i in images]))}
        for k, name in enumerate(names):
            sel = b == k
            res[f"size {name}"] = float((les[sel] >= threshold).mean()) if sel.any() else np.nan
        return res

    op = bootstrap_estimates(at_threshold, patients, n_boot, seed)
    all_bins = np.concatenate(bins)
    op_out = {"threshold": float(threshold), **{k: v for k, v in op.items() if not k.startswith("size ")},
              "by_size": [{"bin": name, "n_lesions": int((all_bins == k).sum()), "sensitivity": op[f"size {name}"]}
                          for k, name in enumerate(names)]}

    def coco(images: np.ndarray) -> dict:
        m = coco_map([gt[i] for i in images], [pred[i] for i in images])
        return {"map": m["map"], "map_50": m["map_50"]}

    maps = bootstrap_estimates(coco, patients, min(n_boot, MAP_BOOTSTRAP), seed)
    return {**out, **maps, "operating_point": op_out, "hit_rule": criterion if criterion == "centre" else f"iou >= {iou}"}
