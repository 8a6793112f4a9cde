"""Inference service over ONNX Runtime: auth, audit log, QC and OOD gates, Grad-CAM overlay, KServe v2."""

from medlens._lazy import lazy_exports

_WHERE = {
    "ServeSettings": "app", "create_app": "app", "UploadError": "decode", "decode_upload": "decode",
    "Engine": "engine", "locate_export": "engine", "preprocess": "engine", "qc_verdict": "engine", "AuditLog": "security",
    "RateLimiter": "security", "TokenAuth": "security", "load_tokens": "security",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
