"""Operating points: ROC coordinates and a threshold chosen on validation data.

Choose the threshold on the validation set and report test metrics at that fixed
threshold; choosing it on the test set inflates sensitivity and specificity.

Rule used throughout medlens: a sample is predicted positive when
``y_score >= threshold``. Candidate thresholds are those of R pROC: ``-inf``, the
midpoints between consecutive distinct scores, and ``+inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medlens.errors import DataError
from medlens.evaluate import _validation as v

__all__ = ["RocCoordinates", "choose_threshold", "roc_coordinates"]

_METHODS = ("youden", "sensitivity", "specificity")


@dataclass(frozen=True)
class RocCoordinates:
    """Sensitivity and specificity at each candidate threshold (ascending thresholds)."""

    thresholds: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray


def roc_coordinates(y_true, y_score) -> RocCoordinates:
    """ROC coordinates at pROC's candidate thresholds.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels with both classes present.
    y_score : array-like of shape (n_samples,)

    Returns
    -------
    RocCoordinates
        Thresholds ascending, from ``-inf`` (sensitivity 1) to ``+inf`` (specificity 1).
    """
    y = v.binary_labels(y_true)
    s = v.scores(y_score, y.shape[0])
    v.require_both_classes(y, metric="An ROC curve")
    u = np.unique(s)
    thresholds = np.concatenate([[-np.inf], (u[:-1] + u[1:]) / 2.0, [np.inf]])
    cases, controls = np.sort(s[y]), np.sort(s[~y])
    sens = (cases.size - np.searchsorted(cases, thresholds, side="left")) / cases.size
    spec = np.searchsorted(controls, thresholds, side="left") / controls.size
    return RocCoordinates(thresholds, sens, spec)


def choose_threshold(y_true, y_score, *, method: str = "youden", target: float = 0.95) -> float:
    """Pick an operating threshold on validation data.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Validation labels (0/1).
    y_score : array-like of shape (n_samples,)
        Validation scores.
    method : {"youden", "sensitivity", "specificity"}, default="youden"
        ``"youden"`` maximises sensitivity + specificity - 1 (ties: the lowest
        threshold, as pROC lists first). ``"sensitivity"`` returns the highest threshold
        whose sensitivity is at least ``target`` (the best specificity at that
        sensitivity); ``"specificity"`` the lowest threshold whose specificity is at
        least ``target``.
    target : float, default=0.95
        Required sensitivity or specificity; ignored for ``"youden"``.

    Returns
    -------
    float
        Predict positive when ``y_score >= threshold``. Finite unless the data
        force ``-inf`` or ``+inf`` (e.g. ``target=1`` with overlapping scores).

    Examples
    --------
    >>> round(choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.8]), 3)
    0.325
    """
    if method not in _METHODS:
        from medlens.errors import did_you_mean

        raise DataError(
            f"method must be one of {', '.join(_METHODS)}; got {method!r}.{did_you_mean(str(method), _METHODS)}"
        )
    if method != "youden" and not 0.0 < target <= 1.0:
        raise DataError(f"target must be in (0, 1]; got {target}.")
    roc = roc_coordinates(y_true, y_score)
    if method == "youden":
        j = roc.sensitivity + roc.specificity - 1.0
        best = np.flatnonzero(np.isclose(j, j.max(), rtol=0, atol=1e-12))
        return float(roc.thresholds[best[0]])
    metric = roc.sensitivity if method == "sensitivity" else roc.specificity
    ok = np.flatnonzero(metric >= target - 1e-12)
    return float(roc.thresholds[ok[-1] if method == "sensitivity" else ok[0]])
