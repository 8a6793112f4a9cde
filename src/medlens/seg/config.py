"""Settings of the segmentation / multi-task / severity study (``seg:`` in the study YAML).

Image size, epochs, batch size, learning rate and augmentation come from ``train:``;
the data, the patient-grouped splits and the seed from the rest of the study config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SegConfig(BaseModel):
    """Lesion segmentation, optionally multi-task (classification and severity heads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["segmentation", "multitask"] = Field(
        "multitask", description="segmentation: U-Net only; multitask: U-Net + classification (+ severity) heads.")
    features: tuple[int, int, int, int, int, int] = Field(
        (8, 16, 32, 64, 128, 8), description="MONAI BasicUNet channel widths (encoder x5, last decoder).")
    loss: Literal["dice_bce", "dice_focal"] = Field("dice_bce", description="Segmentation loss for tiny foregrounds.")
    severity: Literal["none", "regression", "ordinal"] = Field(
        "regression", description="Severity head (multitask only): none, a scalar regression or ordinal (CORAL).")
    loss_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed", description="fixed: the weights below; uncertainty: learned homoscedastic weights (Kendall 2018).")
    seg_weight: float = Field(1.0, ge=0)
    cls_weight: float = Field(0.5, ge=0)
    severity_weight: float = Field(0.2, ge=0)
    clahe: bool = Field(True, description="Contrast-limited adaptive histogram equalisation of the L channel.")
    clahe_clip_limit: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(4, ge=1, le=64)
    patch_size: int | None = Field(
        None, ge=16, description="Train on random patches and infer with a sliding window (segmentation task only).")
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability above which a pixel is lesion.")
    size_bins: tuple[int, ...] = Field(
        (8, 16, 32), description="Lesion area bin edges in pixels at train size, for per-size sensitivity.")
    compare_classifier: bool = Field(
        True, description="Also train the same encoder as a classifier only, and report both AUCs.")
    folds: int = Field(1, ge=1, description="How many of the split's folds to train (test predictions are averaged).")

    @model_validator(mode="after")
    def _consistent(self) -> "SegConfig":
        if self.patch_size is not None and self.task != "segmentation":
            raise ValueError("seg.patch_size needs seg.task 'segmentation' (the heads see whole images)")
        if list(self.size_bins) != sorted(set(self.size_bins)) or (self.size_bins and self.size_bins[0] < 1):
            raise ValueError("seg.size_bins must be increasing positive pixel areas, e.g. [8, 16, 32]")
        return self
