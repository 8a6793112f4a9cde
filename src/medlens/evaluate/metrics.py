"""Point metrics on ``(y_true, y_score)`` or ``(y_true, y_pred)``.

Naming follows scikit-learn: ``*_score`` means higher is better. Binary labels are 0/1
with 1 the positive class (disease present). Ranking metrics (:func:`auc_score`,
:func:`average_precision_score`) also take a 2-D ``y_score`` of shape (n_samples,
n_classes): with 1-D class indices in ``y_true`` they are computed one-vs-rest and
macro-averaged; with a 2-D 0/1 indicator ``y_true`` (multi-label) per label and
macro-averaged.

Every metric here has a vectorised twin used by :func:`medlens.evaluate.bootstrap_ci`;
the point value is that twin evaluated with unit weights, so point estimates and
bootstrap replicates share one implementation.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from medlens.errors import DataError
from medlens.evaluate import _batch
from medlens.evaluate import _validation as v

__all__ = [
    "UndefinedMetricWarning",
    "accuracy_score",
    "auc_score",
    "average_precision_score",
    "balanced_accuracy_score",
    "confusion_matrix",
    "f1_score",
    "npv_score",
    "ppv_score",
    "sensitivity_score",
    "specificity_score",
    "youden_j_score",
]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given input (a zero denominator) and is ``nan``."""


# --- preparation: validate once, return a batch function -----------------------------

def _ranking_batch(
    y_true, y_score, factory: Callable, *, metric: str, strict: bool, need_negatives: bool = True
) -> tuple[_batch.BatchFn, int]:
    y_arr = np.asarray(y_true)
    s_arr = np.asarray(y_score)

    def check(y: np.ndarray, name: str) -> None:
        if not strict:
            return
        if need_negatives:
            v.require_both_classes(y, metric=metric, name=name)
        elif not np.any(y):
            raise DataError(
                f"{metric} needs at least one positive case, but {name} has none "
                f"({y.size} samples). Evaluate on a set that contains positives."
            )

    if s_arr.ndim == 1:
        y = v.binary_labels(y_arr)
        s = v.scores(s_arr, y.shape[0])
        check(y, "y_true")
        return factory(y, s), y.shape[0]
    s = v.scores(s_arr, y_arr.shape[0] if y_arr.ndim else 0, ndim=(2,))
    n, k = s.shape
    if y_arr.ndim == 2:  # multi-label indicator
        y = v.binary_labels(y_arr, ndim=(2,))
        if y.shape != s.shape:
            raise DataError(f"y_true has shape {y.shape} but y_score has shape {s.shape}; they must match.")
        columns = [y[:, j] for j in range(k)]
    else:
        labels = v.class_labels(y_arr)
        if labels.max() >= k:
            raise DataError(
                f"y_true holds class index {labels.max()} but y_score has only {k} columns; "
                "pass one score column per class, in class-index order."
            )
        columns = [labels == j for j in range(k)]
    for j, col in enumerate(columns):
        check(col, f"y_true (one-vs-rest, class {j})")
    return _batch.macro_batch([factory(col, s[:, j]) for j, col in enumerate(columns)]), n


def _prepare_auc(y_true, y_score, *, strict: bool = False):
    return _ranking_batch(y_true, y_score, _batch.auc_batch, metric="AUC", strict=strict)


def _prepare_ap(y_true, y_score, *, strict: bool = False):
    return _ranking_batch(
        y_true, y_score, _batch.average_precision_batch, metric="Average precision",
        strict=strict, need_negatives=False,
    )


def _binary_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y = v.binary_labels(y_true)
    p = v.binary_labels(y_pred, name="y_pred")
    v.check_length(y.shape[0], p, name="y_pred")
    return y, p


def _table_preparer(factory: Callable, *, needs: str | None, metric: str):
    def prepare(y_true, y_pred, *, strict: bool = False):
        y, p = _binary_pair(y_true, y_pred)
        if strict and needs == "positives" and not np.any(y):
            raise DataError(f"{metric} needs positive cases, but y_true has none ({y.size} samples).")
        if strict and needs == "negatives" and np.all(y):
            raise DataError(f"{metric} needs negative cases, but y_true has none ({y.size} samples).")
        if strict and needs == "both":
            v.require_both_classes(y, metric=metric)
        return factory(y, p), y.shape[0]

    return prepare


def _class_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y = v.class_labels(y_true)
    p = v.class_labels(y_pred, name="y_pred")
    v.check_length(y.shape[0], p, name="y_pred")
    return y, p


def _prepare_accuracy(y_true, y_pred, *, strict: bool = False):
    y, p = _class_pair(y_true, y_pred)
    return _batch.accuracy_batch(y, p), y.shape[0]


def _prepare_balanced_accuracy(y_true, y_pred, *, strict: bool = False):
    y, p = _class_pair(y_true, y_pred)
    return _batch.balanced_accuracy_batch(y, p), y.shape[0]


_prepare_sensitivity = _table_preparer(_batch.sensitivity_batch, needs="positives", metric="Sensitivity")
_prepare_specificity = _table_preparer(_batch.specificity_batch, needs="negatives", metric="Specificity")
_prepare_ppv = _table_preparer(_batch.ppv_batch, needs=None, metric="PPV")
_prepare_npv = _table_preparer(_batch.npv_batch, needs=None, metric="NPV")
_prepare_f1 = _table_preparer(_batch.f1_batch, needs=None, metric="F1")
_prepare_youden = _table_preparer(_batch.youden_batch, needs="both", metric="Youden's J")


def _point(prepare: Callable, y_true, second, sample_weight, *, name: str) -> float:
    fn, n = prepare(y_true, second, strict=True)
    value = float(fn(v.sample_weights(sample_weight, n))[0])
    if np.isnan(value):
        warnings.warn(
            f"{name} is undefined for this input (zero denominator); returning nan.",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    return value


# --- public metrics -------------------------------------------------------------------

def auc_score(y_true, y_score, *, sample_weight=None) -> float:
    """Area under the ROC curve (Mann-Whitney statistic; tied scores count one half).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_labels)
        0/1 labels (1 = positive), class indices 0..K-1 for a multi-class ``y_score``,
        or a 0/1 indicator matrix (multi-label).
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Scores, higher meaning more likely positive (probabilities or logits).
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights.

    Returns
    -------
    float
        The AUC; for 2-D ``y_score`` the unweighted (macro) mean of one-vs-rest AUCs.

    Raises
    ------
    DataError
        If ``y_true`` (or one one-vs-rest column) holds only one class.

    See Also
    --------
    delong_ci : AUC with its DeLong confidence interval.

    Examples
    --------
    >>> auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    return _point(_prepare_auc, y_true, y_score, sample_weight, name="AUC")


def average_precision_score(y_true, y_score, *, sample_weight=None) -> float:
    """Average precision (area under the precision-recall curve, step-wise).

    Matches :func:`sklearn.metrics.average_precision_score`: the sum over distinct
    thresholds of ``(R_k - R_{k-1}) * P_k``, without interpolation.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_labels)
        As for :func:`auc_score`.
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Scores, higher meaning more likely positive.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights.

    Returns
    -------
    float

    Raises
    ------
    DataError
        If ``y_true`` has no positive case.

    Examples
    --------
    >>> round(average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8333
    """
    return _point(_prepare_ap, y_true, y_score, sample_weight, name="Average precision")


def sensitivity_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Sensitivity (recall, true-positive rate): ``TP / (TP + FN)``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels, 1 = positive.
    y_pred : array-like of shape (n_samples,)
        0/1 predictions, e.g. ``y_score >= threshold``.
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    float

    Raises
    ------
    DataError
        If ``y_true`` has no positive case.

    Examples
    --------
    >>> sensitivity_score([0, 1, 1, 1], [0, 1, 0, 1])
    0.6666666666666666
    """
    return _point(_prepare_sensitivity, y_true, y_pred, sample_weight, name="Sensitivity")


def specificity_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Specificity (true-negative rate): ``TN / (TN + FP)``.

    Parameters are as for :func:`sensitivity_score`. Raises :class:`DataError` if
    ``y_true`` has no negative case.

    Examples
    --------
    >>> specificity_score([0, 0, 1, 1], [0, 1, 1, 1])
    0.5
    """
    return _point(_prepare_specificity, y_true, y_pred, sample_weight, name="Specificity")


def ppv_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Positive predictive value (precision): ``TP / (TP + FP)``.

    Parameters are as for :func:`sensitivity_score`. With no predicted positive the
    value is undefined: it returns ``nan`` with an :class:`UndefinedMetricWarning`.

    Examples
    --------
    >>> ppv_score([0, 0, 1, 1], [0, 1, 1, 1])
    0.6666666666666666
    """
    return _point(_prepare_ppv, y_true, y_pred, sample_weight, name="PPV")


def npv_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Negative predictive value: ``TN / (TN + FN)``.

    Parameters are as for :func:`sensitivity_score`. With no predicted negative the
    value is undefined: it returns ``nan`` with an :class:`UndefinedMetricWarning`.

    Examples
    --------
    >>> npv_score([0, 0, 1, 1], [0, 0, 0, 1])
    0.6666666666666666
    """
    return _point(_prepare_npv, y_true, y_pred, sample_weight, name="NPV")


def f1_score(y_true, y_pred, *, sample_weight=None) -> float:
    """F1 score of the positive class: ``2 TP / (2 TP + FP + FN)``.

    Parameters are as for :func:`sensitivity_score`; ``nan`` (with a warning) when
    there is neither a positive label nor a positive prediction.

    Examples
    --------
    >>> f1_score([0, 0, 1, 1], [0, 1, 1, 1])
    0.8
    """
    return _point(_prepare_f1, y_true, y_pred, sample_weight, name="F1")


def accuracy_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Fraction of correct predictions (binary or multi-class class indices).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Class indices 0..K-1 (0/1 for binary).
    sample_weight : array-like of shape (n_samples,), default=None

    Examples
    --------
    >>> accuracy_score([0, 1, 2, 2], [0, 1, 1, 2])
    0.75
    """
    return _point(_prepare_accuracy, y_true, y_pred, sample_weight, name="Accuracy")


def balanced_accuracy_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Mean per-class recall over the classes present in ``y_true``.

    For binary labels this is ``(sensitivity + specificity) / 2``. Parameters are as for
    :func:`accuracy_score`.

    Examples
    --------
    >>> balanced_accuracy_score([0, 0, 0, 1], [0, 0, 1, 1])
    0.8333333333333333
    """
    return _point(_prepare_balanced_accuracy, y_true, y_pred, sample_weight, name="Balanced accuracy")


def youden_j_score(y_true, y_pred, *, sample_weight=None) -> float:
    """Youden's J: ``sensitivity + specificity - 1`` at the given predictions.

    Parameters are as for :func:`sensitivity_score`. Raises :class:`DataError` if
    ``y_true`` holds one class only.

    Examples
    --------
    >>> youden_j_score([0, 0, 1, 1], [0, 1, 1, 1])
    0.5
    """
    return _point(_prepare_youden, y_true, y_pred, sample_weight, name="Youden's J")


def confusion_matrix(y_true, y_pred, *, n_classes: int | None = None) -> np.ndarray:
    """Counts with true classes in rows and predicted classes in columns.

    For binary 0/1 input the result is always 2x2, ``[[tn, fp], [fn, tp]]``, even
    when a class is absent.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        Class indices 0..K-1.
    n_classes : int, default=None
        K; by default ``max(2, largest index + 1)``.

    Returns
    -------
    ndarray of shape (K, K), dtype int64

    Examples
    --------
    >>> confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1]).tolist()
    [[1, 1], [0, 2]]
    """
    y, p = _class_pair(y_true, y_pred)
    k = max(2, int(max(y.max(), p.max())) + 1)
    if n_classes is not None:
        if n_classes < k:
            raise DataError(f"n_classes={n_classes} but the labels go up to {k - 1}.")
        k = int(n_classes)
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


#: Vectorised twin of each public metric: ``prepare(y_true, second) -> (fn(W), n)``.
BATCHED: dict[Callable, Callable] = {
    auc_score: _prepare_auc,
    average_precision_score: _prepare_ap,
    sensitivity_score: _prepare_sensitivity,
    specificity_score: _prepare_specificity,
    ppv_score: _prepare_ppv,
    npv_score: _prepare_npv,
    f1_score: _prepare_f1,
    accuracy_score: _prepare_accuracy,
    balanced_accuracy_score: _prepare_balanced_accuracy,
    youden_j_score: _prepare_youden,
}
