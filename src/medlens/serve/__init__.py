"""Inference service over ONNX Runtime: auth, audit log, QC and OOD gates, Grad-CAM overlay, KServe v2."""

from medlens.serve.app import ServeSettings, create_app
from medlens.serve.decode import UploadError, decode_upload
from medlens.serve.engine import Engine, preprocess, qc_verdict
from medlens.serve.security import AuditLog, RateLimiter, TokenAuth, load_tokens

__all__ = ["AuditLog", "Engine", "RateLimiter", "ServeSettings", "TokenAuth", "UploadError", "create_app",
           "decode_upload", "load_tokens", "preprocess", "qc_verdict"]
