"""Settings of self-supervised pretraining and probing (``ssl:`` in a study YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["simclr", "micle", "mae", "rotation"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UnlabeledPhantom(_Strict):
    """A second phantom draw used as the unlabeled pool (other patients than the study's)."""

    n_patients: int = Field(600, ge=4)
    images_per_patient: tuple[int, int] = (2, 5)
    seed_offset: int = Field(1, ge=1, description="Phantom seed = study seed + this, so no study image is reused.")


class SSLConfig(_Strict):
    """Self-supervised pretraining (``medlens pretrain``) and the label-efficiency probe (``medlens probe``).

    Pretraining never sees the study's test or external images: the unlabeled pool is either
    the study's development images (train + validation patients, labels ignored), a second
    phantom draw, or another data source given by path.
    """

    methods: list[Method] = Field(["micle", "simclr"], min_length=1,
                                  description="What `medlens pretrain` runs: simclr | micle | mae | rotation.")
    unlabeled: Literal["development", "phantom", "path"] = Field(
        "development", description="Pool of unlabeled images: the study's development images, a second phantom "
        "draw, or the MedMNIST/CSV/folder source at unlabeled_path (labels ignored).")
    unlabeled_path: Path | None = Field(None, description="Another data source (same kinds as data.path).")
    unlabeled_source: Literal["medmnist", "imagefolder", "csv"] = "medmnist"
    phantom: UnlabeledPhantom = UnlabeledPhantom()
    cnn: str | None = Field(None, description="Encoder of simclr/micle/rotation (timm name); null: model.name.")
    vit: str = Field("vit_tiny_patch16_224", description="Encoder of mae (a timm vision transformer).")
    image_size: int | None = Field(None, ge=16, le=1024, description="Pretraining size; null: train.image_size.")
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(128, ge=4, description="Images per process and step (SimCLR negatives: 2 x batch x ranks).")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.2, gt=0, description="NT-Xent temperature (simclr, micle).")
    micle_simclr_epochs: float = Field(
        0.5, ge=0, lt=1, description="MICLe: share of the epochs first trained with SimCLR pairs (Azizi et al. "
        "start MICLe from a SimCLR encoder; same-patient pairs alone can settle on what the images share trivially, "
        "e.g. the site).")
    projection_dim: int = Field(64, ge=8)
    crop_scale: float = Field(0.35, gt=0, le=1, description="Smallest area kept by the random resized crop.")
    colour_jitter: float = Field(0.3, ge=0, le=1, description="Strength of the per-channel gain, contrast and "
                                 "brightness jitter of each view.")
    rotation: float = Field(15.0, ge=0, le=180, description="Largest rotation of a view, in degrees.")
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="MAE: share of patches hidden from the encoder.")
    decoder_dim: int = Field(128, ge=8)
    decoder_depth: int = Field(2, ge=1)
    fractions: list[float] = Field([0.01, 0.05, 0.1, 0.25, 1.0], min_length=1,
                                   description="Shares of the labeled training patients the probe uses.")
    probe_seeds: int = Field(5, ge=1, description="Repeats per fraction (other patients drawn each time).")
    probe_mode: Literal["linear", "finetune", "both"] = Field(
        "linear", description="linear: frozen features + logistic regression; finetune: train the whole net (train:); "
        "both: the two, on the same draws. Fine-tuning random init is the supervised baseline.")
    finetune_fractions: list[float] | None = Field(
        None, description="Label shares that are fine-tuned (each must be in fractions); null: every fraction.")
    finetune_seeds: int | None = Field(None, ge=1, description="Draws fine-tuned per share (the first ones); "
                                       "null: probe_seeds.")
    finetune_steps: int | None = Field(
        None, ge=1, description="Optimiser steps of every fine-tune, whatever the share, so a small labeled subset "
        "still trains properly and every encoder gets the same budget; null: train.steps or train.epochs.")
    imagenet: Path | None = Field(None, description="Local ImageNet checkpoint to put on the curve (never downloaded).")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in v):
            raise ValueError("every fraction must be in (0, 1]")
        return sorted(set(v))

    @model_validator(mode="after")
    def _path_given(self) -> "SSLConfig":
        if self.unlabeled == "path" and self.unlabeled_path is None:
            raise ValueError("ssl.unlabeled_path is required when ssl.unlabeled is 'path'")
        extra = sorted(set(self.finetune_fractions or ()) - set(self.fractions))
        if extra:
            raise ValueError(f"ssl.finetune_fractions {extra} are not in ssl.fractions {self.fractions}")
        return self
