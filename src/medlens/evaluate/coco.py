"""COCO mAP of predicted lesion boxes, computed by pycocotools.

Boxes follow :mod:`medlens.evaluate.boxes` (``x0, y0, x1, y1``, exclusive ends), which
map to COCO's ``[x, y, width, height]`` exactly; one category (lesion).
"""

from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np


def _xywh(b: np.ndarray) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def coco_map(gt: Sequence[np.ndarray], pred: Sequence[tuple[np.ndarray, np.ndarray]], *, max_dets: int = 100) -> dict:
    """COCO mAP@[.50:.95] and mAP@0.50 of one-class box predictions.

    Parameters
    ----------
    gt : sequence of ndarray of shape (G_i, 4)
        Lesion boxes per image.
    pred : sequence of (boxes (P_i, 4), scores (P_i,))
        Predictions of the same images, in the same order.
    max_dets : int
        Detections per image that count (COCO's last ``maxDets``).

    Returns
    -------
    dict
        ``map`` (AP averaged over IoU 0.50:0.05:0.95), ``map_50``, ``n_images``, ``n_lesions``.
        With no prediction at all both are 0.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(gt) != len(pred):
        raise ValueError(f"{len(gt)} images of lesions but {len(pred)} of predictions")
    anns, dets = [], []
    for i, (g, (b, s)) in enumerate(zip(gt, pred), start=1):
        for box in np.asarray(g, float).reshape(-1, 4):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": _xywh(box),
                         "area": float(w * h), "iscrowd": 0})
        for box, score in zip(np.asarray(b, float).reshape(-1, 4), np.asarray(s, float)):
            dets.append({"image_id": i, "category_id": 1, "bbox": _xywh(box), "score": float(score)})
    out = {"n_images": len(gt), "n_lesions": len(anns)}
    if not dets or not anns:
        return {"map": 0.0, "map_50": 0.0, **out}
    truth = COCO()
    truth.dataset = {"images": [{"id": i} for i in range(1, len(gt) + 1)], "annotations": anns,
                     "categories": [{"id": 1, "name": "lesion"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        ev = COCOeval(truth, truth.loadRes(dets), iouType="bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": float(ev.stats[0]), "map_50": float(ev.stats[1]), **out}
