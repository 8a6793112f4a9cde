"""The study configuration: pydantic models of the YAML file; every default lives here.

Unknown fields are rejected (``extra="forbid"``) so a typo is an error, not a silently
ignored setting. :func:`load_config` turns any validation problem into a one-line
:class:`~medlens.errors.ConfigError` naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from medlens.config.data import DataConfig
from medlens.config.detection import DetectionConfig
from medlens.config.engine import EngineConfig
from medlens.config.evaluate import EvaluateConfig
from medlens.config.explain import ExplainConfig
from medlens.config.model import ModelConfig
from medlens.config.qc import QCConfig
from medlens.config.requirement import Requirement
from medlens.config.seg import SegConfig
from medlens.config.split import SplitConfig
from medlens.config.ssl import SSLConfig
from medlens.config.train import TrainConfig
from medlens.config.trust import TrustConfig
from medlens.errors import ConfigError, did_you_mean


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



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


DEMO = {"data": {"synthetic": {"ood_images": 60}},
        "engine": {"preprocess": {"roi_crop": True, "clahe": "lab"}},
        "evaluate": {"repeats": 3}}
"""Where the demo study (``configs/demo.yaml``, ``medlens demo``) departs from the defaults.

The phantom is a fundus photograph, so the demo uses the practitioners' fundus preprocessing:
the crop to the field of view and CLAHE on L of LAB (declared a priori from the domain, not
chosen on a result). It repeats its cross-validation 3 times, so its report shows training
variance beside sampling error, and it adds 60 phantom images without a fundus, unlabelled,
which the OOD gate must refuse.
"""


def demo_config(**fields) -> StudyConfig:
    """The demo study: the defaults updated by :data:`DEMO`, then by ``fields`` (e.g. ``run_dir``)."""
    return StudyConfig.model_validate({**DEMO, **fields})


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
