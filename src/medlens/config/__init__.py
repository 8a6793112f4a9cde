"""The study configuration: one pydantic model per section, composed by :class:`StudyConfig`.

Every default lives here. Packages import their section from here, never the reverse,
and this package imports no other medlens package but :mod:`medlens.errors`.
"""

from medlens.config.data import CsvColumns, DataConfig, SyntheticConfig
from medlens.config.detection import DetectionConfig
from medlens.config.engine import AugmentConfig, EngineConfig, PreprocessConfig
from medlens.config.evaluate import Baseline, EvaluateConfig
from medlens.config.explain import ExplainConfig
from medlens.config.model import ModelConfig
from medlens.config.qc import QCConfig
from medlens.config.requirement import Requirement
from medlens.config.seg import PublishedSeg, SegConfig
from medlens.config.split import SplitConfig
from medlens.config.ssl import SSLConfig, UnlabeledPhantom
from medlens.config.study import (
           DEMO,
           NOT_RECORDED,
           StudyConfig,
           demo_config,
           dump_config,
           load_config,
           parse_config,
)
from medlens.config.train import TrainConfig
from medlens.config.trust import TrustConfig

__all__ = ["AugmentConfig", "Baseline", "CsvColumns", "DEMO", "DataConfig", "DetectionConfig", "EngineConfig",
           "EvaluateConfig", "ExplainConfig", "ModelConfig", "NOT_RECORDED", "PreprocessConfig", "PublishedSeg",
           "QCConfig", "Requirement", "SSLConfig", "SegConfig", "SplitConfig", "StudyConfig", "SyntheticConfig",
           "TrainConfig", "TrustConfig", "UnlabeledPhantom", "demo_config", "dump_config", "load_config", "parse_config"]
