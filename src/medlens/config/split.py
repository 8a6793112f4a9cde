"""``split:``: patient-grouped folds, test, external and temporal sets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    """Patient-grouped, label-stratified splits."""

    strategy: Literal["kfold", "predefined", "temporal"] = Field(
        "kfold", description="kfold: our patient-grouped split; predefined: the source's own split column; "
        "temporal: the newest test_fraction of patients (by first acquisition date) are the test set, "
        "the older ones are split into folds (TRIPOD+AI temporal validation; needs data.csv_columns.date)."
    )
    folds: int = Field(3, ge=2, le=20)
    pool_val: bool = Field(False, description="predefined only: pool the source's val rows with its train rows and "
                           "draw split.folds patient-grouped folds from both (every fold model validated on its own "
                           "held-out patients, the test set as given; the k fold models are ensembled on test).")
    test_fraction: float = Field(0.2, gt=0, lt=0.9)
    external_site: str | None = Field(
        None, description="Every sample of this site is held out as the external set; null: none. "
        "Default null, except for the phantom (data.source synthetic), whose second hospital B is held out.")

    @model_validator(mode="after")
    def _pool_needs_predefined(self) -> "SplitConfig":
        if self.pool_val and self.strategy != "predefined":
            raise ValueError(f"split.pool_val pools the source's own val rows, so it needs split.strategy "
                             f"'predefined' (got '{self.strategy}'); remove pool_val")
        return self
