"""Settings of the lesion-detection study (``detection:`` in the study YAML, with ``task: detection``).

Image size, epochs, batch size, learning rate and augmentation come from ``train:``; the
images go through the study's preprocessing contract (``engine.preprocess``); the data,
the patient-grouped splits and the seed come from the rest of the study config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DetectionConfig(BaseModel):
    """A CenterNet-style detector on the U-Net's full-resolution decoder, and its evaluation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boxes: Path | None = Field(
        None, description="A box table (CSV or Parquet: image, x0, y0, x1, y1[, class]; pixels of the original "
        "image, x1/y1 exclusive; `image` as in the data manifest). null: one box per connected component of the "
        "manifest's lesion mask (the phantom's masks, or a mask column mapped in data.csv_columns).")
    features: tuple[int, int, int, int, int, int] = Field(
        (8, 16, 32, 64, 128, 16), description="MONAI BasicUNet channel widths (encoder x5, last decoder).")
    norm: Literal["instance", "batch"] = Field("batch", description="Normalisation layers of the U-Net.")
    max_detections: int = Field(20, ge=1, le=1000, description="Peaks of the heat map kept per image (the "
                                "exported graph returns exactly this many, with their scores).")
    min_score: float = Field(0.01, ge=0, lt=1, description="Peaks scoring below this are not candidates.")
    sigma_scale: float = Field(0.25, gt=0, description="Gaussian of each centre in the target heat map: sigma = "
                               "sigma_scale x the box side (at least 0.5 px).")
    size_weight: float = Field(1.0, ge=0, description="Weight of the box offset/size L1 loss beside the heat-map "
                               "focal loss.")
    hit: Literal["centre", "iou"] = Field(
        "centre", description="FROC hit rule: the predicted box's centre inside the lesion box (LUNA16, small "
        "fuzzy lesions), or IoU >= hit_iou.")
    hit_iou: float = Field(0.3, gt=0, le=1)
    size_bins: tuple[int, ...] = Field(
        (16, 36, 64), description="Lesion box-area bin edges in pixels at train size, for per-size sensitivity.")
    compare_segmentation: bool = Field(
        True, description="Also train the segmentation U-Net (seg: settings) on the same folds and score its "
        "connected components with the same FROC code: detection by segmentation.")
    folds: int | None = Field(None, ge=1, description="How many of the split's folds to train; null: all of "
                              "them (test predictions average the fold models' outputs before decoding).")

    @model_validator(mode="after")
    def _consistent(self) -> "DetectionConfig":
        if list(self.size_bins) != sorted(set(self.size_bins)) or (self.size_bins and self.size_bins[0] < 1):
            raise ValueError("detection.size_bins must be increasing positive pixel areas, e.g. [16, 36, 64]")
        return self
