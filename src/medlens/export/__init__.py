"""Ship the model: ONNX export with a parity check, an OOD gate on its features, a Triton model repository."""

from medlens._lazy import lazy_exports

_WHERE = {
    "export_run": "core", "run_config": "core", "OPSET": "onnx_export", "ParityError": "onnx_export",
    "parity_check": "onnx_export", "Ensemble": "medlens.inference",
    "export_stage": "stage", "write_export_section": "report", "TritonConfigError": "triton", "validate_config": "triton",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
