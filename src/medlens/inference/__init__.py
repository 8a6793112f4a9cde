"""The inference core: one fold-model loader, one calibrated ensemble, one feature extractor.

Evaluate writes each fold's calibration (``fold_k/calibration.json``); explain, trust,
export and serve all score images through :class:`Ensemble`, so the probability a
clinician is shown by the service is the one the report evaluated:

    p(x) = mean_k softmax(C_k(f_k(x)))

with ``f_k`` fold ``k``'s network and ``C_k`` its calibration written as an affine map on
the logits (Platt: ``[0, a·(z1 − z0) + b]``; temperature: ``z / T``).
"""

from medlens.inference.core import (
    Ensemble,
    calibration_matrix,
    fold_count,
    load_calibration,
    load_ensemble,
    load_fold_model,
    operating_threshold,
)

__all__ = ["Ensemble", "calibration_matrix", "fold_count", "load_calibration", "load_ensemble", "load_fold_model",
           "operating_threshold"]
