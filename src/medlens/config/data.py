"""``data:``: where the images come from and how they are read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(_Strict):
    """Knobs of the embedded phantom generator (see :mod:`medlens.data.synthetic`)."""

    n_patients: int = Field(240, ge=4)
    image_size: int = Field(96, ge=32, le=1024)
    images_per_patient: tuple[int, int] = (2, 4)
    prevalence: float = Field(0.4, gt=0, lt=1)
    site_b_fraction: float = Field(0.3, ge=0, lt=1)
    qc_defect_rate: float = Field(0.0, ge=0, le=1)
    ood_images: int = Field(0, ge=0)
    shortcut: bool = False
    shared_anatomy: bool = Field(False, description="One eye per patient (vessels, disc, persistent lesions); "
                                 "pose, illumination, focus and new lesions vary per image.")


class CsvColumns(_Strict):
    """How the columns of a user's CSV manifest map onto the Manifest (null: the table has no such column)."""

    image: str = "image"
    label: str = "label"
    patient_id: str | None = "patient_id"
    site: str | None = "site"
    annotators: list[str] | None = Field(None, description="Columns of individual annotators' labels (the label "
                                         "column, the reference, may be one of them); the annotator audit reads them.")
    roi: list[str] | None = Field(None, description="Four columns x0, y0, x1, y1 (pixels, inclusive) of the expert's "
                                  "region box; explain scores heat maps against it.")
    mask: str | None = Field(None, description="Column of lesion / expert-region mask paths (same size as the image).")
    fov_mask: str | None = Field(None, description="Column of field-of-view mask paths (same size as the image).")
    second_mask: str | None = Field(None, description="Column of a second observer's mask paths; segmentation scores "
                                    "that observer against `mask` as the human benchmark.")
    severity: str | None = Field(None, description="Column of a severity grade or score.")
    date: str | None = Field(None, description="Column of the acquisition date (ISO 8601); each patient's dates are "
                             "shifted by the patient's keyed offset (the DICOM date-shift rule), their order kept.")
    metadata: list[str] = Field([], description="Further columns copied as they are, e.g. sex, age, device; "
                                "name them in evaluate.subgroups for the subgroup analysis. A column named age "
                                "(years) is binned at ingest by data.age_bins. Columns not named here never enter "
                                "the run.")

    @field_validator("roi")
    @classmethod
    def _four(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) != 4:
            raise ValueError(f"roi takes four column names (x0, y0, x1, y1), got {v}")
        return v


class DataConfig(_Strict):
    """Where the images come from."""

    source: Literal["synthetic", "medmnist", "imagefolder", "csv", "dicom"] = "synthetic"
    path: Path | None = Field(None, description="Input file or folder (not used for synthetic); for dicom the "
                              "original (identified) DICOM folder, de-identified into the run directory first.")
    synthetic: SyntheticConfig = SyntheticConfig()
    csv_columns: CsvColumns = CsvColumns()
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="Unreadable image: stop with an error, or skip it and log the reason."
    )
    labels: Path | None = Field(None, description="dicom: table (CSV/Parquet) of labels keyed by join_on; read, "
                                "hashed and never copied into the run directory.")
    join_on: Literal["AccessionNumber", "SOPInstanceUID", "PatientID", "StudyInstanceUID"] = Field(
        "AccessionNumber", description="dicom: header attribute that the labels table's key column holds.")
    label_column: str = Field("label", description="dicom: column of the labels table holding the label.")
    secret_file: Path | None = Field(None, description="File with the pseudonymisation secret (>= 16 bytes); else the "
                                     "environment variable MEDLENS_DEID_SECRET. dicom: without one the run refuses to "
                                     "start; other sources: a secret is made once in <runs>/.medlens/secret (outside "
                                     "the run directory, mode 0600) and reused.")
    pseudonym_map: Path | None = Field(None, description="Where to write the map from pseudonyms back to the original "
                                       "IDs (and image paths), outside the run directory, mode 0600. dicom: null "
                                       "means not written; other sources: null means <runs>/.medlens/<name>-pseudonyms.csv.")
    age_bins: tuple[int, ...] = Field((40, 60, 75), min_length=1, description="Edges (years) of the bins an age "
                                      "column is kept as, e.g. <40, 40-59, 60-74, >=75; the exact age never enters.")

    @model_validator(mode="after")
    def _path_given(self) -> "DataConfig":
        if self.source != "synthetic" and self.path is None:
            raise ValueError(f"data.path is required when data.source is '{self.source}'")
        if self.source == "dicom" and self.labels is None:
            raise ValueError("data.labels is required when data.source is 'dicom': a table with a "
                             "join_on column (e.g. AccessionNumber) and a label column")
        return self
