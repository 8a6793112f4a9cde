"""Metrics evaluated on a matrix of sample weights (private).

Each ``*_batch`` factory takes validated arrays and returns ``fn(W) -> values`` where
``W`` has shape (n_resamples, n_samples) and holds non-negative weights (bootstrap
counts, or a single row of ones / sample weights for a point estimate). Sorting happens
once per factory call, so a bootstrap costs a few dense array passes per resample.
Undefined values (one class in a resample, a zero denominator) come back as ``nan``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BatchFn = Callable[[np.ndarray], np.ndarray]


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def auc_batch(y: np.ndarray, s: np.ndarray) -> BatchFn:
    """Weighted Mann-Whitney AUC (ties count 1/2) of boolean labels ``y`` and scores ``s``."""
    order = np.argsort(s, kind="stable")
    starts = _tie_groups(s[order])
    pos_mask = y[order].astype(np.float64)
    neg_mask = 1.0 - pos_mask

    def fn(W: np.ndarray) -> np.ndarray:
        Ws = W[:, order]
        pos = np.add.reduceat(Ws * pos_mask, starts, axis=1)
        neg = np.add.reduceat(Ws * neg_mask, starts, axis=1)
        below = np.cumsum(neg, axis=1)
        below -= 0.5 * neg  # negatives strictly below + half of the tied ones
        num = np.einsum("ij,ij->i", pos, below)
        return _divide(num, pos.sum(axis=1) * neg.sum(axis=1))

    return fn


def average_precision_batch(y: np.ndarray, s: np.ndarray) -> BatchFn:
    """Weighted average precision, step-wise as in scikit-learn (no interpolation)."""
    order = np.argsort(-s, kind="stable")
    starts = _tie_groups(s[order])
    pos_mask = y[order].astype(np.float64)
    neg_mask = 1.0 - pos_mask

    def fn(W: np.ndarray) -> np.ndarray:
        Ws = W[:, order]
        pos = np.add.reduceat(Ws * pos_mask, starts, axis=1)
        neg = np.add.reduceat(Ws * neg_mask, starts, axis=1)
        tps = np.cumsum(pos, axis=1)
        fps = np.cumsum(neg, axis=1)
        precision = np.zeros_like(tps)
        np.divide(tps, tps + fps, out=precision, where=(tps + fps) > 0)
        num = np.einsum("ij,ij->i", pos, precision)  # sum of d(recall) * precision, times P
        return _divide(num, tps[:, -1])

    return fn


def macro_batch(per_class: list[BatchFn]) -> BatchFn:
    """Unweighted mean over per-class (one-vs-rest) batch functions."""

    def fn(W: np.ndarray) -> np.ndarray:
        return np.mean(np.stack([f(W) for f in per_class]), axis=0)

    return fn


# --- metrics of a 2x2 confusion table -------------------------------------------------

def _counts(y: np.ndarray, p: np.ndarray, W: np.ndarray):
    tp = W @ (y & p).astype(np.float64)
    fp = W @ (~y & p).astype(np.float64)
    fn = W @ (y & ~p).astype(np.float64)
    tn = W @ (~y & ~p).astype(np.float64)
    return tp, fp, fn, tn


def _table_metric(formula: Callable) -> Callable[[np.ndarray, np.ndarray], BatchFn]:
    def factory(y: np.ndarray, p: np.ndarray) -> BatchFn:
        return lambda W: formula(*_counts(y, p, W))

    return factory


sensitivity_batch = _table_metric(lambda tp, fp, fn, tn: _divide(tp, tp + fn))
specificity_batch = _table_metric(lambda tp, fp, fn, tn: _divide(tn, tn + fp))
ppv_batch = _table_metric(lambda tp, fp, fn, tn: _divide(tp, tp + fp))
npv_batch = _table_metric(lambda tp, fp, fn, tn: _divide(tn, tn + fn))
f1_batch = _table_metric(lambda tp, fp, fn, tn: _divide(2 * tp, 2 * tp + fp + fn))
youden_batch = _table_metric(
    lambda tp, fp, fn, tn: _divide(tp, tp + fn) + _divide(tn, tn + fp) - 1.0
)


# --- metrics of class indices (binary or multi-class) ---------------------------------

def accuracy_batch(y: np.ndarray, p: np.ndarray) -> BatchFn:
    """Fraction of samples with ``p == y`` (works on any label arrays)."""
    correct = np.all((y == p).reshape(y.shape[0], -1), axis=1).astype(np.float64)
    return lambda W: _divide(W @ correct, W.sum(axis=1))


def balanced_accuracy_batch(y: np.ndarray, p: np.ndarray) -> BatchFn:
    """Mean recall over the classes present in ``y`` (scikit-learn's definition)."""
    classes = np.unique(y)
    member = np.stack([(y == c) for c in classes], axis=1).astype(np.float64)
    hit = member * (p == y)[:, None]

    def fn(W: np.ndarray) -> np.ndarray:
        return np.mean(_divide(W @ hit, W @ member), axis=1)

    return fn
