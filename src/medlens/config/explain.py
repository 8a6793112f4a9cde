"""Settings of the explainability audit (``explain:`` in a study YAML); every default lives here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class ExplainConfig(BaseModel):
    """What the explain stage computes (see :mod:`medlens.explain`). Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "hirescam", "xgradcam"] = Field(
        "gradcam", description="CAM method (pytorch-grad-cam).")
    target_layer: str | None = Field(
        None, description="Dotted module name (e.g. layer4, blocks.11.norm1); null: chosen automatically.")
    min_grid: int = Field(7, ge=1, description="Automatic CNN layer: deepest map with at least this many cells per side.")
    fold: int = Field(0, ge=0, description="Which fold's model is explained.")
    parts: list[Literal["val", "test", "external"]] = Field(["test"], description="Prediction parts to explain.")
    max_images: int = Field(256, ge=1, description="At most this many images (the first, in prediction order).")
    target_class: Annotated[int, Field(ge=0)] | Literal["auto"] | None = Field(
        "auto", description="Class explained: an index for every image; null: each image's predicted class; auto: the "
                            "positive class (1) of a binary study, the predicted class of a multi-class one.")
    roi: Literal["box", "mask"] = Field("box", description="Expert region: the manifest's roi_* box or its lesion mask.")
    threshold: Literal["topk", "otsu"] = Field("topk", description="How a map is binarised for IoU/Dice.")
    top_percent: float = Field(15.0, gt=0, le=100)
    faithfulness_images: int = Field(32, ge=0, description="Images for deletion/insertion curves (0: skip).")
    road: bool = Field(False, description="Also compute ROAD on the faithfulness images (slow: sparse solves).")
    sanity_images: int = Field(16, ge=0, description="Images for the randomisation sanity check (0: skip).")
    margin: float = Field(0.05, ge=0, lt=1, description="Energy pointing must beat the random-map baseline by this "
                                                          "(lower CI bound) or the rationale is flagged.")
    batch_size: int = Field(32, ge=1)
