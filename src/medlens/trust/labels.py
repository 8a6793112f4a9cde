"""Label issues from out-of-sample predicted probabilities (confident learning, via cleanlab).

Every function expects ``pred_probs`` that are **out-of-sample**: each row predicted by a
model that was not trained on that row (in a k-fold run: the ``val`` rows of
``predictions.parquet``, where every development image appears exactly once). In-sample
probabilities have memorised the noisy labels and hide the issues.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from medlens.errors import DataError

log = logging.getLogger(__name__)


def _check(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    p = np.asarray(pred_probs, np.float64)
    if p.ndim != 2 or y.ndim != 1 or len(y) != len(p):
        raise DataError(f"labels (N,) and pred_probs (N, K) should match, got {y.shape} and {p.shape}")
    if not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise DataError("pred_probs rows should sum to 1 (softmax probabilities, out-of-sample)")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise DataError(f"labels should be class indices 0..{p.shape[1] - 1}, got {y.min()}..{y.max()}")
    return y.astype(int), p


def label_quality(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Label quality score per row in [0, 1]; low means the given label is likely wrong.

    Parameters
    ----------
    labels : array-like of shape (N,)
        Given class index per image.
    pred_probs : array-like of shape (N, K)
        Out-of-sample softmax probabilities, columns in class order.

    Returns
    -------
    ndarray of shape (N,)
        Self-confidence with cleanlab's ``adjust_pred_probs``: the out-of-sample
        probability of the given label after subtracting each class's average confidence
        (its confident-learning threshold), so a model biased towards one class (e.g. by
        class-weighted training) does not push every label of the other class up the list.
    """
    from cleanlab.rank import get_label_quality_scores

    y, p = _check(labels, pred_probs)
    if len(np.unique(y)) < 2:
        return p[np.arange(len(y)), y]
    return get_label_quality_scores(y, p, method="self_confidence", adjust_pred_probs=True)


def label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Boolean mask ``(N,)`` of likely label errors (cleanlab ``find_label_issues``, prune by noise rate).

    See :func:`label_quality` for the arguments; the number flagged follows the estimated
    noise rate of each class (confident joint), so no threshold has to be chosen.
    """
    from cleanlab.filter import find_label_issues

    y, p = _check(labels, pred_probs)
    if len(np.unique(y)) < 2:
        warnings.warn("label_issues: only one class among the labels; no issues can be estimated", stacklevel=2)
        return np.zeros(len(y), bool)
    return np.asarray(find_label_issues(y, p, filter_by="prune_by_noise_rate"), bool)


def rank_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Row indices ordered from the most to the least suspicious label (ascending label quality)."""
    return np.argsort(label_quality(labels, pred_probs), kind="stable")


def class_label_quality(labels: np.ndarray, pred_probs: np.ndarray, *, class_names: list[str] | None = None) -> pd.DataFrame:
    """Which classes are poorly labelled: one row per class, worst first.

    Returns
    -------
    pandas.DataFrame
        ``class``, ``n_labels``, ``label_issues`` (images given this class that probably
        belong to another), ``inverse_label_issues`` (images of this class given another
        label), ``label_noise`` (share of this class's labels that are wrong) and
        ``label_quality`` (1 - noise), from cleanlab's confident joint.
    """
    from cleanlab.dataset import rank_classes_by_label_quality

    y, p = _check(labels, pred_probs)
    names = class_names or [str(c) for c in range(p.shape[1])]
    t = rank_classes_by_label_quality(y, p)
    out = pd.DataFrame({
        "class": [names[int(c)] for c in t["Class Index"]],
        "n_labels": [int((y == int(c)).sum()) for c in t["Class Index"]],
        "label_issues": t["Label Issues"].astype(int).to_numpy(),
        "inverse_label_issues": t["Inverse Label Issues"].astype(int).to_numpy(),
        "label_noise": t["Label Noise"].to_numpy(float),
        "label_quality": t["Label Quality Score"].to_numpy(float),
    })
    return out.sort_values("label_quality", kind="stable").reset_index(drop=True)
