"""Small-lesion detection: boxes from masks, FROC/CPM as LUNA16 reports it, COCO mAP through pycocotools.

This package so far holds the evaluation core (issue 19), which the segmentation stage uses
to score its components as detections; the detector, the ``task: detection`` stage, export
and the ``/v1/detect`` endpoint are not built yet.
"""

from medlens._lazy import lazy_exports

_WHERE = {"boxes_from_mask": "boxes", "boxes_from_probability": "boxes", "box_iou": "boxes", "FP_RATES": "froc", "Froc": "froc", "match": "froc",
          "froc": "froc", "sensitivity_at": "froc", "cpm": "froc", "froc_with_ci": "froc", "coco_map": "coco"}
__getattr__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
