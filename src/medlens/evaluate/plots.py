"""Figures for the report: ROC, precision-recall, reliability diagram, confusion matrix.

Each function builds a :class:`matplotlib.figure.Figure` directly (no pyplot, so no
global state and no display backend; ``fig.savefig`` renders with Agg) and returns it.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from medlens.errors import DataError
from medlens.evaluate import _validation as v
from medlens.evaluate.calibration import reliability_curve
from medlens.evaluate.ci import Estimate, _resample_blocks
from medlens.evaluate.delong import delong_ci
from medlens.evaluate.metrics import average_precision_score, confusion_matrix

__all__ = ["plot_confusion_matrix", "plot_pr", "plot_reliability", "plot_roc", "roc_band"]


def _roc_from_weights(y: np.ndarray, s: np.ndarray, W: np.ndarray):
    """(fpr, tpr) arrays of shape (B, n_distinct + 1), thresholds descending."""
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    Ws = W[:, order]
    pos = np.cumsum(np.add.reduceat(Ws * y[order], starts, axis=1), axis=1)
    neg = np.cumsum(np.add.reduceat(Ws * ~y[order], starts, axis=1), axis=1)
    zeros = np.zeros((W.shape[0], 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.hstack([zeros, pos]) / pos[:, -1:]
        fpr = np.hstack([zeros, neg]) / neg[:, -1:]
    return fpr, tpr


def roc_band(y_true, y_score, *, fpr_grid=None, groups=None, n_boot: int = 2000, seed: int = 0,
             confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise bootstrap band of sensitivity at fixed false-positive rates.

    Returns
    -------
    fpr_grid, low, high : ndarray
        Percentile bounds of the (upper-envelope) sensitivity at each grid value.
    """
    y = v.binary_labels(y_true)
    s = v.scores(y_score, y.shape[0])
    v.require_both_classes(y, metric="An ROC band")
    grid = np.linspace(0, 1, 101) if fpr_grid is None else np.asarray(fpr_grid, dtype=float)
    curves = []
    for W in _resample_blocks(y, groups=groups, n_resamples=n_boot, seed=seed, stratify=True):
        fpr, tpr = _roc_from_weights(y, s, W)
        for f, t in zip(fpr, tpr):
            if np.isfinite(f[-1]) and np.isfinite(t[-1]):
                curves.append(np.interp(grid, f, t))
    if not curves:
        raise DataError("No bootstrap replicate had both classes; cannot draw an ROC band.")
    alpha = 1 - v.check_confidence(confidence)
    low, high = np.quantile(np.asarray(curves), [alpha / 2, 1 - alpha / 2], axis=0)
    return grid, low, high


def plot_roc(y_true, y_score, *, band: bool = True, groups=None, n_boot: int = 2000, seed: int = 0,
             label: str = "model", operating_threshold: float | None = None,
             auc_ci: Estimate | None = None) -> Figure:
    """ROC curve with the AUC and its 95% CI in the legend and a bootstrap band.

    Parameters
    ----------
    y_true, y_score : array-like of shape (n_samples,)
    band : bool, default=True
        Shade the pointwise 95% bootstrap band of sensitivity.
    groups : array-like, default=None
        Patient ids for the band's bootstrap.
    n_boot, seed : int
    label : str, default="model"
    operating_threshold : float, default=None
        Mark the operating point ``y_score >= threshold``.
    auc_ci : Estimate, default=None
        The interval the study reports for this AUC (patient-level when patients have several
        images), so the figure agrees with the tables; default: DeLong on the images.

    Returns
    -------
    Figure
    """
    y = v.binary_labels(y_true)
    s = v.scores(y_score, y.shape[0])
    fpr, tpr = _roc_from_weights(y, s, np.ones((1, y.size)))
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    if band:
        grid, low, high = roc_band(y, s, groups=groups, n_boot=n_boot, seed=seed)
        ax.fill_between(grid, low, high, alpha=0.25, step=None, label="95% bootstrap band")
    if auc_ci is not None:
        text = f"{label}: AUC {auc_ci.value:.3f} (95% CI {auc_ci.low:.3f}-{auc_ci.high:.3f})"
    else:
        e = delong_ci(y, s) if min(y.sum(), (~y).sum()) >= 2 else None
        text = f"{label}: AUC {e.value:.3f} ({e.low:.3f}-{e.high:.3f}, DeLong)" if e else label
    ax.plot(fpr[0], tpr[0], lw=1.8, label=text)
    if operating_threshold is not None:
        pred = s >= operating_threshold
        ax.plot([np.mean(pred[~y])], [np.mean(pred[y])], "o", color="black", label=f"threshold {operating_threshold:.3g}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlabel="1 - specificity", ylabel="Sensitivity", xlim=(0, 1), ylim=(0, 1.01), title="ROC curve")
    ax.legend(loc="lower right", fontsize=7)
    return fig


def plot_pr(y_true, y_score, *, label: str = "model") -> Figure:
    """Precision-recall curve (step-wise), with average precision and the prevalence line."""
    y = v.binary_labels(y_true)
    s = v.scores(y_score, y.shape[0])
    ap = average_precision_score(y, s)
    fpr, tpr = _roc_from_weights(y, s, np.ones((1, y.size)))
    tp, fp = tpr[0][1:] * y.sum(), fpr[0][1:] * (~y).sum()
    precision = tp / np.maximum(tp + fp, 1e-300)
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.step(np.r_[0, tpr[0][1:]], np.r_[precision[0], precision], where="pre", label=f"{label}: AP {ap:.3f}")
    ax.axhline(y.mean(), ls="--", lw=0.8, color="grey", label=f"prevalence {y.mean():.3f}")
    ax.set(xlabel="Recall (sensitivity)", ylabel="Precision (PPV)", xlim=(0, 1), ylim=(0, 1.01),
           title="Precision-recall curve")
    ax.legend(loc="lower left", fontsize=7)
    return fig


def plot_reliability(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform",
                     xlabel: str = "Predicted probability", ylabel: str = "Observed frequency") -> Figure:
    """Reliability diagram with a histogram of predicted probabilities below it.

    ``y_true``/``y_prob`` as :func:`medlens.evaluate.calibration.reliability_curve`: 0/1 and
    ``(N,)``, or class indices and ``(N, K)`` for the top-label diagram (the predicted class's
    probability against accuracy), with axis labels to match.
    """
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins, strategy=strategy)
    fig = Figure(figsize=(4.5, 5.5))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="perfect calibration")
    ax.plot(curve.mean_predicted, curve.fraction_positive, "o-", label="model")
    ax.set(ylabel=ylabel, ylim=(0, 1), title="Reliability diagram")
    ax.legend(loc="upper left", fontsize=7)
    edges = curve.bin_edges
    centres = curve.mean_predicted
    hist.bar(centres, curve.counts, width=np.min(np.diff(edges)) * 0.9 if edges.size > 1 else 0.05)
    hist.set(xlabel=xlabel, ylabel="Count", xlim=(0, 1))
    return fig


def plot_confusion_matrix(y_true, y_pred, *, class_names: list[str] | None = None) -> Figure:
    """Confusion matrix with counts (rows: true class, columns: predicted class)."""
    cm = confusion_matrix(y_true, y_pred, n_classes=None if class_names is None else len(class_names))
    k = cm.shape[0]
    names = class_names or [str(i) for i in range(k)]
    fig = Figure(figsize=(1.2 * k + 2, 1.2 * k + 1.5))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    half = cm.max() / 2.0 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > half else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=names, yticklabels=names,
           xlabel="Predicted", ylabel="True", title="Confusion matrix")
    return fig
