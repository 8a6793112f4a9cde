"""The runtime side of an exported model: an ONNX Runtime session and its outputs.

What ``medlens serve`` runs, and what the export uses to check and score its own graph
(:mod:`medlens.export.onnx_export` writes the graph). Input ``image``: float32
``N×C×S×S`` in [0, 1] (the preprocessing contract's uint8 output / 255); outputs
:data:`OUTPUTS`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT = "image"
OUTPUTS = ("probabilities", "member_probabilities", "features")


def session(path: Path, *, threads: int = 1):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (sequential execution)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _uint8(images) -> np.ndarray:
    return images.numpy() if hasattr(images, "numpy") else np.asarray(images)


def onnx_proba(sess, images, *, batch_size: int = 64) -> np.ndarray:
    """``probabilities`` of an ONNX session for a uint8 ``N×C×S×S`` batch (tensor or array), as float64."""
    x = _uint8(images)
    out = [sess.run(["probabilities"], {INPUT: x[i:i + batch_size].astype(np.float32) / 255.0})[0]
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64)


def onnx_features(sess, images, *, batch_size: int = 64) -> np.ndarray:
    """The ``features`` output (what the OOD gate reads) of an ONNX session for a uint8 ``N×C×S×S`` batch."""
    x = _uint8(images).astype(np.float32) / 255.0
    return np.concatenate([sess.run(["features"], {INPUT: x[i:i + batch_size]})[0] for i in range(0, len(x), batch_size)])
