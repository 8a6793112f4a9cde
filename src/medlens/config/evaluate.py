"""``evaluate:``: confidence intervals, operating points, subgroups and published baselines."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Baseline(_Strict):
    """A published result to show beside ours (e.g. a row of the MedMNIST v2 paper)."""

    name: str
    auc: float | None = Field(None, ge=0, le=1)
    acc: float | None = Field(None, ge=0, le=1)
    source: str = ""


class EvaluateConfig(_Strict):
    """How the operating point is chosen (on validation data only) and CIs computed."""

    operating_point: Literal["sensitivity", "youden", "specificity"] = Field(
        "sensitivity", description="The default decision rule. 'sensitivity' (screening: the highest threshold "
        "that still finds target_sensitivity of the validation positives) is the default because a missed "
        "lesion costs more than a referral; every rule is reported.")
    target_sensitivity: float = Field(0.90, gt=0, lt=1)
    target_specificity: float = Field(0.90, gt=0, lt=1)
    calibration: Literal["platt", "temperature", "none"] = Field(
        "platt", description="Per-fold calibration fitted on that fold's validation patients: platt (slope and "
        "intercept; with more than two classes a temperature and class intercepts, which also undo the prior that "
        "class weighting shifted), temperature (no intercept), none.")
    repeats: int = Field(1, ge=1, le=20, description="Repeated cross-validation: R runs of the k-fold development "
                         "with new folds and new initial weights (the test and external sets stay locked). The report "
                         "adds each headline figure's between-repeat spread; the operating point is chosen on the "
                         "pooled out-of-fold predictions of all repeats. Repeat 0's fold models are the ones shipped.")
    local_fraction: float = Field(0.2, gt=0, le=0.5, description="New-site procedure: share of the external "
                                  "site's patients used as the labelled local acceptance set.")
    new_site_rule: Literal["youden", "sensitivity", "specificity"] = Field(
        "youden", description="New-site procedure: how the local threshold is chosen on the local acceptance set.")
    n_bootstrap: int = Field(2000, ge=100)
    subgroups: list[str] = Field(["site"], description="Manifest columns (site, metadata such as sex, age) of the "
                                 "subgroup analysis of held-out images; age is binned.")
    baselines: list[Baseline] = Field(default_factory=list, description="Published results shown beside ours.")
