"""The study configuration: pydantic models of the YAML file; every default lives here.

Unknown fields are rejected (``extra="forbid"``) so a typo is an error, not a silently
ignored setting. :func:`load_config` turns any validation problem into a one-line
:class:`~medlens.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medlens.errors import ConfigError, did_you_mean
from medlens.qc.config import QCConfig
from medlens.train.config import EngineConfig
from medlens.seg.config import SegConfig
from medlens.detection.config import DetectionConfig
from medlens.explain.config import ExplainConfig
from medlens.ssl.config import SSLConfig
from medlens.lightweight.config import Requirement


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


class ModelConfig(_Strict):
    """The network (any timm classifier name)."""

    name: str = "resnet18"
    in_chans: Literal[1, 3] = 3
    pretrained: Path | None = Field(None, description="Local weights file; medlens never downloads weights.")
    drop_rate: float = Field(0.3, ge=0, lt=1, description="Dropout on the pooled features before the classifier, "
                             "trained, so that MC dropout (trust) samples a dropout the network learned with.")


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
    local_fraction: float = Field(0.2, gt=0, le=0.5, description="New-site procedure: share of the external "
                                  "site's patients used as the labelled local acceptance set.")
    new_site_rule: Literal["youden", "sensitivity", "specificity"] = Field(
        "youden", description="New-site procedure: how the local threshold is chosen on the local acceptance set.")
    n_bootstrap: int = Field(2000, ge=100)
    subgroups: list[str] = Field(["site"], description="Manifest columns (site, metadata such as sex, age) of the "
                                 "subgroup analysis of held-out images; age is binned.")
    baselines: list[Baseline] = Field(default_factory=list, description="Published results shown beside ours.")


class TrustConfig(_Strict):
    """The trust audit: uncertainty, out-of-distribution gate, label issues, annotators (see :mod:`medlens.trust`)."""

    mc_dropout_p: float | None = Field(None, gt=0, lt=1, description="Dropout on the pooled features at inference "
                                       "(MC dropout); null: the model's trained model.drop_rate.")
    mc_samples: int = Field(30, ge=2, description="Stochastic forward passes of the head per image.")
    ood_pass_rate: float = Field(0.95, gt=0.5, lt=1, description="Share of in-distribution validation images the OOD gate lets through.")
    ood_fit_images: int = Field(8192, ge=100, description="The OOD gates (the audit's per fold, the served one) are "
                                "fitted on at most this many development images, a seeded random subset: a "
                                "large set's class means and covariance need no more, and each image costs a forward pass.")
    relabel_budget: int = Field(50, ge=1, description="Rows of the relabel queue (`medlens audit --budget` overrides).")
    annotators: list[str] | None = Field(None, description="Manifest columns holding one annotator's labels each; null: every label_* column except label_true/label_name.")
    expert: str | None = Field("label_expert", description="Annotator column taken as the reference for accuracy, when present.")


class StudyConfig(_Strict):
    """A whole study: data, splits, model, training, evaluation. ``run_dir/name`` holds the outputs."""

    name: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$")
    task: Literal["classification", "segmentation", "detection"] = Field(
        "classification", description="classification: timm classifiers per fold; segmentation: the seg section's U-Net "
        "study; detection: the detection section's lesion detector (boxes, FROC), with detection by segmentation beside it."
    )
    seed: int = 0
    run_dir: Path = Path("runs")
    data: DataConfig = DataConfig()
    qc: QCConfig = QCConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    engine: EngineConfig = EngineConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    trust: TrustConfig = TrustConfig()
    seg: SegConfig = SegConfig()
    detection: DetectionConfig = DetectionConfig()
    explain: ExplainConfig = ExplainConfig()
    ssl: SSLConfig = SSLConfig()
    requirement: Requirement | None = Field(
        None, description="What the clinician asks for, e.g. {metric: auc, at_least: 0.94} or {metric: sensitivity, "
        "at_least: 0.85, at_specificity: 0.80}; `medlens tune --objective requirement,latency` finds the lightest "
        "model whose validation 95% CI lower bound meets it.")

    @model_validator(mode="before")
    @classmethod
    def _phantom_external_site(cls, data):
        """The phantom's second hospital (site B) is its external set unless the config says otherwise."""
        if not isinstance(data, dict):
            return data
        d = data.get("data") or {}
        source = d.get("source", "synthetic") if isinstance(d, dict) else d.source
        split = data.get("split") or {}
        if source != "synthetic":
            return data
        if isinstance(split, dict) and "external_site" not in split:
            return {**data, "split": {**split, "external_site": "B"}}
        if isinstance(split, SplitConfig) and "external_site" not in split.model_fields_set:
            return {**data, "split": split.model_copy(update={"external_site": "B"})}
        return data

    @model_validator(mode="after")
    def _engine_options(self):
        if self.task != "classification" and (self.train.steps is not None or self.train.min_steps is not None):
            raise ValueError(f"train.steps and train.min_steps apply to the classification engine; {self.task} "
                             "trains train.epochs")
        e = self.engine
        if e.prior_correction and (e.task != "classification" or e.imbalance != "class_weight"):
            raise ValueError("engine.prior_correction undoes class weighting: it needs engine.task classification "
                             "and engine.imbalance class_weight")
        return self

    @property
    def out(self) -> Path:
        """The run directory of this study."""
        return self.run_dir / self.name


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names at the nesting level of an error location."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _field_names(StudyConfig, loc))
        return f"{source}: unknown field '{where}'.{hint}"
    return f"{source}: field '{where}': {first['msg']}"


def parse_config(data: dict, *, source: str = "config") -> StudyConfig:
    """Validate a mapping as a :class:`StudyConfig`; errors name the offending field."""
    try:
        return StudyConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file.

    Relative data paths are resolved against the current working directory, as the
    user typed them on the command line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return parse_config(data, source=str(path))


NOT_RECORDED = "not-recorded"


def dump_config(cfg: StudyConfig, *, redact: bool = False) -> str:
    """The config as YAML (paths as strings).

    With ``redact`` (``config.yaml`` in a run directory), data paths are not recorded for
    any source, since their folder and file names may identify a patient: ``data.path``,
    ``data.labels``, ``data.secret_file``, ``data.pseudonym_map`` and ``ssl.unlabeled_path``
    read ``not-recorded``.
    """
    out = cfg.model_dump(mode="json")
    for section, key in (("data", "path"), ("data", "labels"), ("data", "secret_file"), ("data", "pseudonym_map"),
                         ("ssl", "unlabeled_path")):
        if redact and out[section].get(key) is not None:
            out[section][key] = NOT_RECORDED
    return yaml.safe_dump(out, sort_keys=False)
