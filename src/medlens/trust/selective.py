"""Selective prediction: how accuracy and AUC change when the least certain cases go to a clinician."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from medlens.errors import DataError

COVERAGES = tuple(np.round(np.arange(0.1, 1.0001, 0.05), 2))


def risk_coverage(y_true: np.ndarray, proba: np.ndarray, confidence: np.ndarray, *,
                  coverages: tuple[float, ...] = COVERAGES, threshold: float | None = None) -> pd.DataFrame:
    """Accuracy and AUC on the most confident fraction of cases, for each coverage.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        Class index per case.
    proba : array-like of shape (N, K)
        Probabilities; the prediction is the arg-max (or ``p1 >= threshold``) and the
        binary AUC uses column 1.
    confidence : array-like of shape (N,)
        Higher is more certain (e.g. max softmax, or minus the epistemic uncertainty).
    coverages : tuple of float
        Fractions of cases the model keeps; the rest are referred.
    threshold : float, optional
        Binary operating threshold: accuracy is then the one the study reports at its
        operating point, not at the arg-max.

    Returns
    -------
    pandas.DataFrame
        ``coverage``, ``n``, ``accuracy``, ``risk`` (1 - accuracy) and ``auc`` (nan when the
        kept cases hold one class, or for more than two classes).

    Examples
    --------
    >>> y = np.array([0, 1, 1, 0]); p = np.array([[.9, .1], [.2, .8], [.6, .4], [.45, .55]])
    >>> risk_coverage(y, p, p.max(1), coverages=(0.5, 1.0))["accuracy"].tolist()
    [1.0, 0.5]
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, np.float64)
    c = np.asarray(confidence, np.float64)
    if p.ndim != 2 or len(y) != len(p) or len(c) != len(y) or len(y) == 0:
        raise DataError(f"y_true (N,), proba (N, K) and confidence (N,) should match, got {y.shape}, {p.shape}, {c.shape}")
    order = np.argsort(-c, kind="stable")
    pred = (p[:, 1] >= threshold).astype(int) if threshold is not None and p.shape[1] == 2 else p.argmax(1)
    correct = (pred == y)[order]
    rows = []
    for cov in coverages:
        n = max(1, int(np.ceil(cov * len(y))))
        keep = order[:n]
        auc = float("nan")
        if p.shape[1] == 2 and len(np.unique(y[keep])) == 2:
            auc = float(roc_auc_score(y[keep], p[keep, 1]))
        acc = float(correct[:n].mean())
        rows.append({"coverage": float(cov), "n": n, "accuracy": acc, "risk": 1 - acc, "auc": auc})
    return pd.DataFrame(rows)


def decision_margin(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Certainty of the decision actually taken: distance from the operating threshold on the logit scale.

    Parameters
    ----------
    proba : array-like of shape (N, K)
        Calibrated probabilities.
    threshold : float, optional
        Binary operating threshold; without one (or for K > 2) the margin is between the
        two largest class log-probabilities.

    Returns
    -------
    ndarray of shape (N,)
        Higher is more certain; the cases nearest the threshold are referred first.
    """
    p = np.clip(np.asarray(proba, np.float64), 1e-12, 1)
    if threshold is not None and p.shape[1] == 2:
        t = float(np.clip(threshold, 1e-12, 1 - 1e-12))
        return np.abs(np.log(p[:, 1] / p[:, 0]) - np.log(t / (1 - t)))
    top = np.sort(np.log(p), 1)
    return top[:, -1] - top[:, -2]
