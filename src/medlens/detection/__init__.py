"""Small-lesion detection (``task: detection``): boxes, the detector, its training, export and report section.

Layers, each importing only those before it::

    data                          images and boxes through the preprocessing contract (settings: medlens.config.detection)
    model, train                  DetNet (CenterNet head on the U-Net decoder), decoding, training (resume, DDP)
    stage, export, report         the run directory: folds, evaluation, detection by segmentation, ONNX/Triton, section

Lesion matching, FROC/CPM as LUNA16 reports it, COCO mAP and the figures with their CIs are
evaluation code shared with segmentation: :mod:`medlens.evaluate.boxes`, :mod:`medlens.evaluate.froc`,
:mod:`medlens.evaluate.coco` and :mod:`medlens.evaluate.lesions`.
"""

from medlens._lazy import lazy_exports

_WHERE = {"DetNet": "model", "Detector": "model", "decode": "model"}
__getattr__ = lazy_exports(__name__, _WHERE)
__all__ = sorted(_WHERE)
