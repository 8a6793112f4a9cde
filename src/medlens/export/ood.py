"""A plain-NumPy Mahalanobis OOD gate on the exported ``features`` output.

Fitted on development images (train + validation, never test), with Ledoit-Wolf
shrinkage because medical data sets have fewer images than feature dimensions. The
threshold is a high quantile of the distances of held-out development patients (not the
ones the mean and covariance were fitted on), so in-distribution images are rarely flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.errors import StageInputMissing


@dataclass(frozen=True)
class MahalanobisGate:
    """Mean, precision and threshold of the gate; ``score`` is the Mahalanobis distance."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance of each row of ``features`` (``N×D``) to the training distribution."""
        d = np.asarray(features, np.float64) - self.mean
        return np.sqrt(np.maximum(((d @ self.precision) * d).sum(axis=1), 0.0))  # BLAS; einsum is ~30x slower

    def is_ood(self, features: np.ndarray) -> np.ndarray:
        """True where the distance exceeds the threshold."""
        return self.score(features) > self.threshold

    def save(self, path: Path) -> Path:
        np.savez(path, mean=self.mean, precision=self.precision, threshold=np.float64(self.threshold))
        return path

    @classmethod
    def load(cls, path: Path) -> "MahalanobisGate":
        if not path.is_file():
            raise StageInputMissing(f"{path} not found; run `medlens export RUN` first")
        with np.load(path) as z:
            return cls(z["mean"], z["precision"], float(z["threshold"]))


def fit_gate(features: np.ndarray, groups: np.ndarray, *, quantile: float = 0.99, calibration_fraction: float = 0.25,
             margin: float = 1.1, seed: int = 0) -> tuple[MahalanobisGate, dict]:
    """Fit the gate on development features.

    Parameters
    ----------
    features : ndarray of shape (N, D)
    groups : ndarray of shape (N,)
        Patient ids; calibration patients are held out of the fit as whole patients.
    quantile : float, default=0.99
        Threshold = ``margin`` × this quantile of the calibration distances.
    calibration_fraction : float, default=0.25
    margin : float, default=1.1
    seed : int

    Returns
    -------
    gate : MahalanobisGate
    info : dict
        ``n_fit``, ``n_calibration``, ``threshold``.
    """
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, np.float64)
    patients = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_cal = max(1, int(round(len(patients) * calibration_fraction))) if len(patients) > 3 else 0
    cal_patients = set(rng.choice(patients, size=n_cal, replace=False).tolist()) if n_cal else set()
    cal = np.isin(groups, list(cal_patients))
    fit_rows = features[~cal] if (~cal).sum() >= 2 else features
    lw = LedoitWolf().fit(fit_rows)
    gate = MahalanobisGate(lw.location_, lw.precision_, float("inf"))
    cal_scores = gate.score(features[cal] if cal.any() else features)
    threshold = float(np.quantile(cal_scores, quantile) * margin)
    gate = MahalanobisGate(lw.location_, lw.precision_, threshold)
    return gate, {"n_fit": int(len(fit_rows)), "n_calibration": int(cal.sum()), "threshold": threshold,
                  "quantile": quantile, "margin": margin}
