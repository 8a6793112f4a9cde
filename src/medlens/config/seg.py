"""Settings of the segmentation / multi-task / severity study (``seg:`` in the study YAML).

Image size, epochs, batch size, learning rate and augmentation come from ``train:``;
the data, the patient-grouped splits and the seed from the rest of the study config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PublishedSeg(BaseModel):
    """A published segmentation result to show beside ours (pixel metrics inside the FOV)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    f1: float | None = Field(None, ge=0, le=1)
    auc: float | None = Field(None, ge=0, le=1)
    sensitivity: float | None = Field(None, ge=0, le=1)
    specificity: float | None = Field(None, ge=0, le=1)
    accuracy: float | None = Field(None, ge=0, le=1)
    source: str = ""


class SegConfig(BaseModel):
    """Lesion segmentation, optionally multi-task (classification and severity heads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["segmentation", "multitask"] = Field(
        "multitask", description="segmentation: U-Net only; multitask: U-Net + classification (+ severity) heads.")
    features: tuple[int, int, int, int, int, int] = Field(
        (8, 16, 32, 64, 128, 8), description="MONAI BasicUNet channel widths (encoder x5, last decoder).")
    loss: Literal["dice_bce", "dice_focal", "bce"] = Field(
        "dice_bce", description="Segmentation loss: Dice + BCE or Dice + focal for tiny lesions; BCE alone keeps "
        "probabilities graded (pixel AUC, thin vessels).")
    severity: Literal["none", "regression", "ordinal"] = Field(
        "regression", description="Severity head (multitask only): none, a scalar regression or ordinal (CORAL).")
    loss_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed", description="fixed: the weights below; uncertainty: learned homoscedastic weights (Kendall 2018).")
    seg_weight: float = Field(1.0, ge=0)
    cls_weight: float = Field(0.5, ge=0)
    severity_weight: float = Field(0.2, ge=0)
    clahe: bool = Field(True, description="Contrast-limited adaptive histogram equalisation (the L channel of RGB).")
    clahe_clip_limit: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(4, ge=1, le=64)
    channels: Literal["rgb", "green", "luminance"] = Field(
        "rgb", description="Network input: the RGB image, its green channel (vessels contrast best there) or its "
        "luminance; green and luminance give the network one channel.")
    gamma: float = Field(1.0, gt=0, description="Intensity exponent after CLAHE (x in [0, 1] -> x**gamma; "
                         ">1 darkens the background and lifts thin vessels).")
    resample: Literal["square", "native", "fov"] = Field(
        "square", description="square: every image resized and padded to train.image_size (whole-image training); "
        "native: no resizing, patch training and sliding-window inference at the image's own size; fov: each "
        "image rescaled so that its field of view is fov_diameter px across, then as native. Metrics are always "
        "computed on the original pixels.")
    fov_diameter: int = Field(540, ge=32, description="resample fov: the field-of-view width the images are "
                              "rescaled to (scales within 5% of it are left alone).")
    fov_masking: bool = Field(True, description="native/fov: zero the network input outside the field of view.")
    patch_size: int | None = Field(
        None, ge=16, description="Train on random patches and infer with a sliding window (segmentation task only; "
        "required by resample native/fov).")
    patches_per_image: int = Field(
        1, ge=1, description="Patches drawn from each training image per epoch (patch training).")
    foreground_fraction: float = Field(
        0.5, ge=0, le=1, description="Share of patches centred on a foreground (lesion / vessel) pixel; the others "
        "are centred anywhere in the field of view.")
    architecture: Literal["unet", "timm_unet"] = Field(
        "unet", description="unet: the small MONAI-block U-Net (features, norm); timm_unet: a U-Net decoder on a timm "
        "encoder (segmentation-models-pytorch, extra 'seg'; segmentation only, random initial weights).")
    encoder: str = Field("resnet18", description="timm_unet: the timm encoder, e.g. resnet18, efficientnet_b0.")
    norm: Literal["instance", "batch"] = Field(
        "instance", description="Normalisation layers of the U-Net (batch: faster, and window-size independent in "
        "sliding-window inference).")
    sw_overlap: float = Field(0.25, ge=0, lt=1, description="Overlap of the sliding windows of test predictions "
                              "(more overlap: more predictions averaged per pixel, slower; validation uses 0.25).")
    tta_flips: bool = Field(False, description="Average the predictions of the image and its horizontal, vertical "
                            "and double flips.")
    threshold: float | Literal["validation"] = Field(
        "validation", description="Probability above which a pixel is foreground: a number, or 'validation' (the "
        "threshold that maximises pooled Dice on the out-of-fold validation images; never the test images).")
    structure: Literal["lesions", "vessels"] = Field(
        "lesions", description="lesions: also per-lesion detection, lesion-size and image-level results; vessels: "
        "pixel metrics and clDice only (a vessel tree is one connected structure).")
    size_bins: tuple[int, ...] = Field(
        (8, 16, 32), description="Lesion area bin edges in pixels at train size, for per-size sensitivity.")
    compare_classifier: bool = Field(
        True, description="Also train the same encoder as a classifier only, and report both AUCs.")
    folds: int | None = Field(None, ge=1, description="How many of the split's folds to train; null: all of them "
                              "(test predictions average the fold models).")
    published: list[PublishedSeg] = Field([], description="Published results shown beside ours in the report.")

    @model_validator(mode="after")
    def _consistent(self) -> "SegConfig":
        if self.patch_size is not None and self.task != "segmentation":
            raise ValueError("seg.patch_size needs seg.task 'segmentation' (the heads see whole images)")
        if self.architecture != "unet" and self.task != "segmentation":
            raise ValueError(f"seg.architecture '{self.architecture}' segments only: set seg.task 'segmentation'")
        if self.resample != "square" and self.patch_size is None:
            raise ValueError(f"seg.resample '{self.resample}' trains on patches: set seg.patch_size (e.g. 64)")
        if list(self.size_bins) != sorted(set(self.size_bins)) or (self.size_bins and self.size_bins[0] < 1):
            raise ValueError("seg.size_bins must be increasing positive pixel areas, e.g. [8, 16, 32]")
        return self
