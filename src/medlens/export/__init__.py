"""Ship the model: ONNX export with a parity check, an OOD gate on its features, a Triton model repository."""

from medlens.export.core import export_run, run_config
from medlens.export.onnx_export import OPSET, ParityError, parity_check
from medlens.inference import Ensemble
from medlens.export.ood import MahalanobisGate, fit_gate
from medlens.export.stage import export_stage, report_section
from medlens.export.triton import TritonConfigError, validate_config

__all__ = ["OPSET", "Ensemble", "MahalanobisGate", "ParityError", "TritonConfigError", "export_run", "export_stage",
           "fit_gate", "parity_check", "report_section", "run_config", "validate_config"]
