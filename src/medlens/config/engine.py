"""Settings of the training engine (``engine:`` in a study YAML); every default lives here.

The defaults reproduce the original demo loop exactly: AdamW, cosine schedule with half an
epoch of warm-up, gradient clipping at 5, class-weighted cross-entropy, flips plus
brightness/contrast jitter, the best epoch chosen by validation AUC, no early stopping.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreprocessConfig(_Strict):
    """Deterministic image preparation, applied once when the images are loaded."""

    roi_crop: bool = Field(False, description="Crop to the field of view found in the image (never the expert's "
                           "box, which a served image lacks) before resizing.")
    roi_margin: float = Field(0.1, ge=0, le=2, description="Margin added around the field of view, as a fraction of its side.")
    clahe: Literal["off", "channels", "lab"] = Field(
        "off", description="Contrast-limited histogram equalisation: per channel, or on L of LAB (fundus).")
    clahe_clip: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(8, ge=1, le=64)


class AugmentConfig(_Strict):
    """Random augmentation in the training step (only when ``train.augment`` is true)."""

    flip: bool = Field(True, description="Random horizontal flips (and vertical ones unless vertical_flip is false).")
    vertical_flip: bool = Field(True, description="With flip: also flip upside down. Set false where the vertical "
                                "axis means something (chest X-ray, OCT, ultrasound, CT slices).")
    rotation: float = Field(0.0, ge=0, le=180, description="Maximum rotation in degrees (0: off).")
    scale: float = Field(0.0, ge=0, lt=1, description="Zoom drawn from 1 ± scale (0: off), in the same affine "
                         "resampling as the rotation.")
    translate: float = Field(0.0, ge=0, le=0.5, description="Shift drawn from ± translate × the image side, per "
                             "axis (0: off).")
    brightness: float = Field(0.1, ge=0, le=1, description="Additive shift drawn from ±brightness (normalised units).")
    contrast: float = Field(0.1, ge=0, le=1, description="Gain drawn from 1 ± contrast.")
    mixup_alpha: float = Field(0.0, ge=0, description="Beta(α, α) mixing of image pairs (0: off).")
    cutmix_alpha: float = Field(0.0, ge=0, description="Beta(α, α) box pasting between image pairs (0: off).")
    mix_prob: float = Field(1.0, ge=0, le=1, description="Share of batches that are mixed when mixing is on.")


class EngineConfig(_Strict):
    """How the network is trained: task, optimiser, schedule, imbalance, devices, checkpoints."""

    task: Literal["classification", "multilabel", "regression"] = "classification"
    target: str | list[str] = Field(
        "label", description="Manifest column(s) to learn: 'label', 'severity' (regression), or a list (multilabel).")
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only.")
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.5, ge=0, description="Linear warm-up length in epochs, at most a tenth of all steps.")
    step_epochs: int = Field(10, ge=1, description="Step schedule: epochs between decays.")
    step_gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float | None = Field(5.0, gt=0, description="Max gradient norm (null: off).")
    imbalance: Literal["class_weight", "sampler", "none"] = "class_weight"
    monitor: Literal["auc", "loss"] = Field(
        "loss", description="Best epoch / early stopping by validation loss (default: a proper scoring rule, so the "
                            "kept epoch is not one whose probabilities are badly off) or AUC.")
    precise_bn: bool = Field(True, description="Recompute BatchNorm statistics on the training images after every "
                                               "epoch, before validation (removes the epoch-to-epoch loss jumps).")
    early_stopping: int | None = Field(None, ge=1, description="Stop after this many validations without "
                                       "improvement.")
    max_validations: int = Field(25, ge=1, description="Validate (and keep the best weights) at most this many "
                                 "times, evenly spaced in epochs, always after the last; a long run on a small set "
                                 "is not dominated by validation.")
    ema: float | None = Field(None, gt=0, lt=1, description="Exponential moving average of the weights with this "
                              "decay (e.g. 0.999; timm ModelEmaV3 with warm-up): the averaged weights are the ones "
                              "validated and kept. null: off.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing (classification).")
    prior_correction: bool = Field(False, description="After class-weighted training, shift the classifier's "
                                   "biases by -log(class weight), so the kept model's probabilities refer to the "
                                   "training prevalence again (arg-max accuracy), while the weighting still "
                                   "shaped the features. Classification with imbalance class_weight only.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="Mixed precision where the device supports it (CUDA); CPU stays fp32.")
    checkpoint: bool = Field(True, description="Write last.pt (weights, optimiser, RNG) so a killed run resumes.")
    checkpoint_interval: float = Field(
        60.0, ge=0, description="Seconds between last.pt writes (at an epoch's end; the last epoch is always "
        "written); 0: every epoch. A kill loses at most this much training.")
    loader_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes reading training batches "
                                "from the image cache (0: the training process reads them; 2-8 on a GPU server).")
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: AugmentConfig = AugmentConfig()
