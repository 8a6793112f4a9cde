"""Lesion segmentation, multi-task learning and severity regression.

- :mod:`medlens.seg.metrics`: Dice, IoU, HD95, ASD, per-lesion matching (functional core).
- :mod:`medlens.seg.summary`: per-image statistics and patient-level bootstrap CIs.
- :mod:`medlens.seg.models`: a MONAI BasicUNet with optional classification/severity heads.
- :mod:`medlens.seg.losses`, :mod:`medlens.seg.train`: losses and the training loop.
- :mod:`medlens.seg.stage`: ``seg_stage(run, cfg)``, run by the ``seg`` stage (:mod:`medlens.stages.seg`).
- :mod:`medlens.seg.report`: ``write_seg_section(run)``, the report's section with mask overlays.

The ``seg:`` section of a study config is :class:`medlens.config.SegConfig`.
"""
