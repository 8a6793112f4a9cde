"""``train:``: epochs, steps, batch size and learning rate of the classification folds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(_Strict):
    """Optimisation settings shared by every fold."""

    image_size: int = Field(64, ge=16, le=1024)
    epochs: int = Field(20, ge=1, description="Passes over the training images (ignored when steps is set).")
    steps: int | None = Field(None, ge=1, description="Training length in optimiser steps instead of epochs, so "
                              "that a 500-image and a 5,000-image set both get the same amount of training "
                              "(classification engine; segmentation uses epochs).")
    min_steps: int | None = Field(None, ge=1, description="With epochs: train at least this many optimiser steps, so "
                                  "a small set gets more passes (epochs = max(epochs, min_steps / steps per epoch); "
                                  "ignored when steps is set; classification engine).")
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    augment: bool = True
