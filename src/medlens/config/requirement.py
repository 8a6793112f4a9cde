"""The ``requirement:`` section: the performance the clinician asks for, judged on validation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Requirement(BaseModel):
    """What the model must reach, stated as a clinician states it.

    ``{metric: auc, at_least: 0.94}`` or ``{metric: sensitivity, at_least: 0.90,
    at_specificity: 0.80}`` (the threshold is the lowest that keeps specificity at least
    ``at_specificity`` on validation, as ``evaluate.operating_point: specificity`` picks
    it). A candidate meets it when the lower bound of the metric's 95% CI does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Literal["auc", "sensitivity"] = Field(description="auc, or sensitivity at a specificity.")
    at_least: float = Field(gt=0, lt=1, description="Smallest acceptable value (of the CI's lower bound).")
    at_specificity: float | None = Field(None, gt=0, lt=1, description="metric sensitivity: the specificity the "
                                         "operating threshold must keep.")

    @model_validator(mode="after")
    def _specificity_given(self) -> "Requirement":
        if (self.metric == "sensitivity") != (self.at_specificity is not None):
            raise ValueError("requirement.at_specificity is required with metric sensitivity and not allowed with auc")
        return self

    def describe(self) -> str:
        """The requirement in words, e.g. ``sensitivity ≥ 0.85 at specificity ≥ 0.80``."""
        text = f"{'AUC' if self.metric == 'auc' else 'sensitivity'} ≥ {self.at_least:.3g}"
        return text + (f" at specificity ≥ {self.at_specificity:.2f}" if self.at_specificity is not None else "")
