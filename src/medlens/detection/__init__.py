"""Small-lesion detection (``task: detection``): boxes, the detector, FROC/CPM as LUNA16 reports it, COCO mAP.

Layers, each importing only those before it::

    boxes, froc, coco, summary    evaluation: boxes from masks, FROC/CPM, mAP (pycocotools), the figures with CIs
    data                          images and boxes through the preprocessing contract (settings: medlens.config.detection)
    model, train                  DetNet (CenterNet head on the U-Net decoder), decoding, training (resume, DDP)
    stage, export, report         ``medlens run``: folds, evaluation, detection by segmentation, ONNX/Triton, HTML

The segmentation stage scores its components with :func:`summary.detection_summary` too.
"""

from medlens._lazy import lazy_exports

_WHERE = {"boxes_from_mask": "boxes", "boxes_from_probability": "boxes", "box_iou": "boxes", "FP_RATES": "froc",
          "Froc": "froc", "match": "froc", "froc": "froc", "sensitivity_at": "froc", "cpm": "froc",
          "froc_with_ci": "froc", "coco_map": "coco", "detection_summary": "summary", "best_f1_threshold": "summary",
          "DetNet": "model", "Detector": "model", "decode": "model"}
__getattr__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
