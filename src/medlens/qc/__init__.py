"""Image quality gate: exposure, contrast, blur, field of view, near-duplicates -> pass/fail + reasons."""

from medlens.qc.checks import REGISTRY, QCCheck, dhash, field_of_view, list_checks, phash, register, sharpness
from medlens.qc.config import QCConfig
from medlens.qc.core import run_qc

__all__ = ["REGISTRY", "QCCheck", "QCConfig", "dhash", "field_of_view", "list_checks", "phash", "register",
           "run_qc", "sharpness"]
