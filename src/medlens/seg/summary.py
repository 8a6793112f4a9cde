"""Per-image segmentation statistics and study-level metrics with patient-level bootstrap CIs.

:func:`image_stats` turns masks and probability maps into one row per image (Dice, IoU,
HD95, ASD, pixel counts, lesion matches per size bin, the maximum probability).
:func:`seg_summary` aggregates them, and every aggregate gets a percentile interval from
the stratified, patient-level bootstrap of :mod:`medlens.evaluate.ci` (whole patients
are resampled, so several images of one eye do not narrow the interval).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from medlens.errors import DataError
from medlens.evaluate import auc_score
from medlens.evaluate.ci import bootstrap_distribution, percentile_interval
from medlens.seg import metrics as M

__all__ = ["bin_labels", "image_stats", "seg_summary", "severity_summary", "size_table"]


def bin_labels(edges: tuple[int, ...]) -> list[str]:
    """Human-readable names of the lesion-size bins, e.g. ``['<8 px', '8-15 px', ..., '≥32 px']``."""
    if not edges:
        return ["all"]
    names = [f"<{edges[0]} px"]
    names += [f"{a}-{b - 1} px" for a, b in zip(edges[:-1], edges[1:])]
    return names + [f"≥{edges[-1]} px"]


def image_stats(y_true: np.ndarray, prob: np.ndarray, *, threshold: float = 0.5,
                size_bins: tuple[int, ...] = (8, 16, 32)) -> pd.DataFrame:
    """One row of segmentation statistics per image.

    Parameters
    ----------
    y_true : ndarray of shape (N, H, W)
        True masks (non-zero is lesion).
    prob : ndarray of shape (N, H, W)
        Predicted lesion probability.
    threshold : float, default=0.5
    size_bins : tuple of int
        Lesion-area bin edges in pixels.

    Returns
    -------
    pandas.DataFrame
        Columns ``dice, iou, hd95, asd, tp, fp, fn, n_true, n_pred, n_detected,
        pred_correct, max_prob`` and ``true_b{i}, detected_b{i}`` per size bin.
    """
    if y_true.shape != prob.shape or y_true.ndim != 3:
        raise DataError(f"expected true masks and probabilities of shape (N, H, W), got {y_true.shape} and {prob.shape}")
    rows = []
    edges = np.asarray(size_bins, int)
    n_bins = len(edges) + 1
    for t, p in zip(y_true != 0, prob):
        q = p > threshold
        lm = M.lesion_match(t, q)
        b = np.searchsorted(edges, lm.true_areas, side="right")
        row = {"dice": M.dice_score(t, q), "iou": M.iou_score(t, q), "hd95": M.hd95_distance(t, q),
               "asd": M.average_surface_distance(t, q), "tp": int((t & q).sum()), "fp": int((~t & q).sum()),
               "fn": int((t & ~q).sum()), "n_true": len(lm.true_areas), "n_pred": lm.n_pred,
               "n_detected": int(lm.true_detected.sum()), "pred_correct": lm.pred_correct,
               "max_prob": float(p.max())}
        for i in range(n_bins):
            row[f"true_b{i}"] = int((b == i).sum())
            row[f"detected_b{i}"] = int((lm.true_detected & (b == i)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _ratio(num: np.ndarray, den: np.ndarray) -> Callable[[np.ndarray], float]:
    def f(idx: np.ndarray) -> float:
        d = den[idx].sum()
        return float(num[idx].sum() / d) if d > 0 else float("nan")

    return f


def _mean_where(values: np.ndarray, keep: np.ndarray) -> Callable[[np.ndarray], float]:
    def f(idx: np.ndarray) -> float:
        v = values[idx][keep[idx] & np.isfinite(values[idx])]
        return float(v.mean()) if v.size else float("nan")

    return f


def _with_ci(fns: dict[str, Callable[[np.ndarray], float]], labels: np.ndarray, groups, *,
             n_bootstrap: int, seed: int, extra: dict | None = None) -> dict[str, dict]:
    """Point values and bootstrap intervals of index-aggregate metrics (shared resamples)."""
    n = len(labels)
    idx = np.arange(n)
    metrics = {k: ((lambda y, i, f=f: f(i.astype(int))), idx) for k, f in fns.items()}
    metrics.update(extra or {})
    stratify = len(np.unique(labels)) > 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reps = bootstrap_distribution(metrics, labels, groups=groups, n_resamples=n_bootstrap, seed=seed,
                                      stratify=stratify)
        out = {}
        for k in fns:
            out[k] = percentile_interval(reps[k], fns[k](idx), name=k).to_dict()
        for k, (metric, second) in (extra or {}).items():
            out[k] = percentile_interval(reps[k], float(metric(labels, second)), name=k).to_dict()
    return out


def seg_summary(stats: pd.DataFrame, labels: np.ndarray, *, groups=None, cls_score: np.ndarray | None = None,
                baseline_score: np.ndarray | None = None, n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """Study-level segmentation metrics with 95% CIs.

    Parameters
    ----------
    stats : DataFrame from :func:`image_stats`
    labels : ndarray of shape (n_images,)
        Image labels (1 = lesion); strata of the bootstrap and truth of the AUCs.
    groups : array-like, optional
        Patient ids (whole patients are resampled).
    cls_score : ndarray, optional
        A classification head's positive-class probability, for ``auc_cls``.
    baseline_score : ndarray, optional
        A classification-only model's score on the same images, for ``auc_classifier``
        and the paired ``auc_difference`` (``auc_cls`` − ``auc_classifier``, or
        ``auc_mask`` − ``auc_classifier`` without a head), on the same resamples.

    Returns
    -------
    dict
        name -> ``{"value", "low", "high"}``: ``dice`` (mean over images with a true
        lesion), ``dice_all`` (all images, empty-empty = 1), ``dice_global`` (pooled pixels),
        ``iou``, ``hd95``, ``asd`` (images where both masks are non-empty), pixel
        ``sensitivity``/``precision``, ``lesion_sensitivity``, ``lesion_precision``,
        ``lesion_count_error`` (mean absolute difference in lesion counts),
        ``lesion_sensitivity_b{i}`` per size bin, ``auc_mask`` (image score = maximum
        probability), ``auc_cls``, ``auc_classifier`` and ``auc_difference``.
    """
    labels = np.asarray(labels).astype(int)
    s = {c: stats[c].to_numpy() for c in stats.columns}
    has = s["n_true"] > 0
    everyone = np.ones(len(labels), bool)
    fns = {
        "dice": _mean_where(s["dice"], has),
        "dice_all": _mean_where(s["dice"], everyone),
        "dice_global": _ratio(2 * s["tp"], 2 * s["tp"] + s["fp"] + s["fn"]),
        "iou": _mean_where(s["iou"], has),
        "hd95": _mean_where(s["hd95"], has),
        "asd": _mean_where(s["asd"], has),
        "sensitivity": _ratio(s["tp"], s["tp"] + s["fn"]),
        "precision": _ratio(s["tp"], s["tp"] + s["fp"]),
        "lesion_sensitivity": _ratio(s["n_detected"], s["n_true"]),
        "lesion_precision": _ratio(s["pred_correct"], s["n_pred"]),
        "lesion_count_error": _mean_where(np.abs(s["n_pred"] - s["n_true"]).astype(float), everyone),
    }
    i = 0
    while f"true_b{i}" in s:
        fns[f"lesion_sensitivity_b{i}"] = _ratio(s[f"detected_b{i}"], s[f"true_b{i}"])
        i += 1
    extra = {}
    if len(np.unique(labels)) == 2:
        extra["auc_mask"] = (auc_score, s["max_prob"])
        if cls_score is not None:
            extra["auc_cls"] = (auc_score, np.asarray(cls_score, float))
        if baseline_score is not None:
            base = np.asarray(baseline_score, float)
            extra["auc_classifier"] = (auc_score, base)
            ours = np.asarray(cls_score, float) if cls_score is not None else s["max_prob"]

            def diff(idx: np.ndarray) -> float:
                y = labels[idx]
                if len(np.unique(y)) < 2:
                    return float("nan")
                return float(auc_score(y, ours[idx]) - auc_score(y, base[idx]))

            fns["auc_difference"] = diff
    out = _with_ci(fns, labels, groups, n_bootstrap=n_bootstrap, seed=seed, extra=extra)
    out["n_images"] = int(len(labels))
    out["n_lesions"] = int(s["n_true"].sum())
    out["hd95_undefined"] = int(np.sum(has & ~np.isfinite(s["hd95"])))
    return out


def severity_summary(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray, *, groups=None,
                     n_bootstrap: int = 2000, seed: int = 0) -> dict:
    """MAE, RMSE and Spearman correlation of predicted vs true severity, with 95% CIs.

    Images with unknown severity (nan) are left out.
    """
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    keep = np.isfinite(t)
    t, p, labels = t[keep], p[keep], np.asarray(labels)[keep]
    g = None if groups is None else np.asarray(groups)[keep]

    def rho(idx: np.ndarray) -> float:
        if np.ptp(t[idx]) == 0 or np.ptp(p[idx]) == 0:
            return float("nan")
        return float(spearmanr(t[idx], p[idx]).statistic)

    fns = {"mae": lambda i: float(np.abs(p[i] - t[i]).mean()),
           "rmse": lambda i: float(np.sqrt(((p[i] - t[i]) ** 2).mean())),
           "spearman": rho,
           "accuracy_rounded": lambda i: float((np.clip(np.round(p[i]), 0, 4) == t[i]).mean())}
    out = _with_ci(fns, labels.astype(int), g, n_bootstrap=n_bootstrap, seed=seed)
    out["n_images"] = int(keep.sum())
    return out


def size_table(stats: pd.DataFrame, summary: dict, size_bins: tuple[int, ...]) -> list[dict]:
    """Per-lesion sensitivity by lesion size: rows for the report and metrics.json."""
    rows = []
    for i, name in enumerate(bin_labels(size_bins)):
        est = summary.get(f"lesion_sensitivity_b{i}", {"value": float("nan"), "low": float("nan"), "high": float("nan")})
        rows.append({"lesion size": name, "lesions": int(stats[f"true_b{i}"].sum()),
                     "detected": int(stats[f"detected_b{i}"].sum()),
                     "sensitivity": est["value"], "low": est["low"], "high": est["high"]})
    return rows
