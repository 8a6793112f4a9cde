"""``trust:``: uncertainty, the OOD gate and the label and annotator audit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrustConfig(_Strict):
    """The trust audit: uncertainty, out-of-distribution gate, label issues, annotators (see :mod:`medlens.trust`)."""

    mc_dropout_p: float | None = Field(None, gt=0, lt=1, description="Dropout on the pooled features at inference "
                                       "(MC dropout); null: the model's trained model.drop_rate.")
    mc_samples: int = Field(30, ge=2, description="Stochastic forward passes of the head per image.")
    ood_pass_rate: float = Field(0.95, gt=0.5, lt=1, description="Share of in-distribution validation images the OOD gate lets through.")
    new_site_draws: int = Field(50, ge=1, le=1000, description="New-site procedure: random local acceptance sets "
                                "drawn from the external site; each sets a local threshold, refits the OOD gate and is "
                                "scored on the site's other patients (the report shows median and 5th-95th percentiles).")
    ood_fit_images: int = Field(8192, ge=100, description="The OOD gates (the audit's per fold, the served one) are "
                                "fitted on at most this many development images, a seeded random subset: a "
                                "large set's class means and covariance need no more, and each image costs a forward pass.")
    relabel_budget: int = Field(50, ge=1, description="Rows of the relabel queue (`medlens audit --budget` overrides).")
    annotators: list[str] | None = Field(None, description="Manifest columns holding one annotator's labels each; null: every label_* column except label_true/label_name.")
    expert: str | None = Field("label_expert", description="Annotator column taken as the reference for accuracy, when present.")
