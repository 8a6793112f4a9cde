"""Pixel-level metrics of thin-structure segmentation (retinal vessels), as the field reports them.

Every metric is computed on the pixels inside each image's field of view (FOV) and pooled
over images: confusion counts are summed first, then turned into F1 (= Dice), sensitivity,
specificity, accuracy and MCC; the pixel AUC ranks all FOV pixels of all images together;
clDice (Shit et al., CVPR 2021) measures whether the predicted vessel tree keeps the
topology of the true one (skeletons from scikit-image). Confidence intervals come from
the patient-level bootstrap of :mod:`medlens.evaluate.ci` over images.

Inputs are lists, one entry per image, so images of different sizes pool naturally:
``truth`` and ``fov`` boolean ``H×W`` arrays, ``prob`` float ``H×W`` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from medlens.errors import DataError
from medlens.evaluate.ci import bootstrap_distribution, percentile_interval

__all__ = ["best_threshold", "cldice_counts", "pixel_auc", "pixel_counts", "pixel_summary", "scores_from_counts"]

METRICS = ("f1", "auc", "sensitivity", "specificity", "accuracy", "mcc", "cldice")
"""The metrics of :func:`pixel_summary`, in the order the report shows them."""

_BINS = 4096
"""Score bins of the per-image histograms that bootstrap replicates of the AUC use (the point estimate is exact)."""


def _check(truth: Sequence[np.ndarray], prob: Sequence[np.ndarray], fov: Sequence[np.ndarray]) -> None:
    if not (len(truth) == len(prob) == len(fov)) or not len(truth):
        raise DataError(f"need the same positive number of masks, probability maps and FOV masks, "
                        f"got {len(truth)}, {len(prob)} and {len(fov)}")
    for i, (t, p, f) in enumerate(zip(truth, prob, fov)):
        if not (np.shape(t) == np.shape(p) == np.shape(f)) or np.ndim(t) != 2:
            raise DataError(f"image {i}: mask {np.shape(t)}, probability {np.shape(p)} and FOV {np.shape(f)} "
                            "must be H×W arrays of one shape")


def _inside(truth, prob, fov) -> tuple[np.ndarray, np.ndarray]:
    f = [np.asarray(m, bool) for m in fov]
    return (np.concatenate([np.asarray(t, bool)[m] for t, m in zip(truth, f)]),
            np.concatenate([np.asarray(p, np.float64)[m] for p, m in zip(prob, f)]))


def pixel_counts(truth, prob, fov, *, threshold: float) -> np.ndarray:
    """Confusion counts of each image inside its FOV at ``prob > threshold``.

    Returns
    -------
    ndarray of shape (n_images, 4), int64
        Columns ``tp, fp, fn, tn``.
    """
    _check(truth, prob, fov)
    out = np.empty((len(truth), 4), np.int64)
    for i, (t, p, f) in enumerate(zip(truth, prob, fov)):
        f = np.asarray(f, bool)
        t, q = np.asarray(t, bool)[f], np.asarray(p)[f] > threshold
        out[i] = (t & q).sum(), (~t & q).sum(), (t & ~q).sum(), (~t & ~q).sum()
    return out


def scores_from_counts(tp, fp, fn, tn) -> dict[str, float]:
    """F1, sensitivity, specificity, accuracy and MCC of pooled confusion counts (nan when undefined)."""
    tp, fp, fn, tn = (float(v) for v in (tp, fp, fn, tn))

    def div(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    mcc_den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"f1": div(2 * tp, 2 * tp + fp + fn), "sensitivity": div(tp, tp + fn), "specificity": div(tn, tn + fp),
            "accuracy": div(tp + tn, tp + fp + fn + tn), "mcc": div(tp * tn - fp * fn, mcc_den)}


def pixel_auc(truth, prob, fov) -> float:
    """Area under the ROC curve of all FOV pixels of all images (exact, ties count one half).

    The Mann-Whitney statistic from mid-ranks; equals scikit-learn's ``roc_auc_score``.
    """
    _check(truth, prob, fov)
    y, s = _inside(truth, prob, fov)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def best_threshold(truth, prob, fov) -> float:
    """The probability threshold that maximises pooled F1 on these (validation) images.

    Every distinct score is a candidate; the returned threshold is the midpoint between
    the lowest score still called positive and the next lower score, so ``prob > t``
    reproduces the best cut exactly.
    """
    _check(truth, prob, fov)
    y, s = _inside(truth, prob, fov)
    if not y.any():
        raise DataError("no true foreground pixel inside the FOV of the validation images; cannot choose a threshold")
    order = np.argsort(-s, kind="stable")
    s_sorted, tp = s[order], np.cumsum(y[order])
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])  # end of each block of tied scores
    f1 = 2 * tp[last] / (last + 1 + y.sum())
    k = last[int(np.argmax(f1))]
    below = s_sorted[k + 1] if k + 1 < s.size else s_sorted[k] - 1e-6
    return float((s_sorted[k] + below) / 2)


def cldice_counts(truth, pred, fov) -> np.ndarray:
    """Skeleton overlaps of each image for clDice, inside its FOV.

    Returns
    -------
    ndarray of shape (n_images, 4), int64
        ``|S(P) ∩ T|, |S(P)|, |S(T) ∩ P|, |S(T)|`` with ``S`` the skeleton
        (scikit-image ``skeletonize``), ``T`` the true and ``P`` the predicted mask.
        Pooled clDice is ``2 Tprec Tsens / (Tprec + Tsens)`` with
        ``Tprec = ΣS(P)∩T / ΣS(P)`` and ``Tsens = ΣS(T)∩P / ΣS(T)``.
    """
    from skimage.morphology import skeletonize

    out = np.empty((len(truth), 4), np.int64)
    for i, (t, p, f) in enumerate(zip(truth, pred, fov)):
        f = np.asarray(f, bool)
        t, p = np.asarray(t, bool) & f, np.asarray(p, bool) & f
        sp, st = skeletonize(p), skeletonize(t)
        out[i] = (sp & t).sum(), sp.sum(), (st & p).sum(), st.sum()
    return out


def _cldice(c: np.ndarray) -> float:
    tprec = c[0] / c[1] if c[1] else float("nan")
    tsens = c[2] / c[3] if c[3] else float("nan")
    return float(2 * tprec * tsens / (tprec + tsens)) if tprec + tsens > 0 else float("nan")


def _histograms(truth, prob, fov) -> np.ndarray:
    """Per-image counts of positive and negative FOV pixels in ``_BINS`` score bins: ``(n, 2, _BINS)``."""
    out = np.zeros((len(truth), 2, _BINS), np.int64)
    for i, (t, p, f) in enumerate(zip(truth, prob, fov)):
        f = np.asarray(f, bool)
        b = np.clip((np.asarray(p, np.float64)[f] * _BINS).astype(np.int64), 0, _BINS - 1)
        y = np.asarray(t, bool)[f]
        out[i, 0] = np.bincount(b[y], minlength=_BINS)
        out[i, 1] = np.bincount(b[~y], minlength=_BINS)
    return out


def _hist_auc(h: np.ndarray) -> float:
    pos, neg = h[0].astype(np.float64), h[1].astype(np.float64)
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def pixel_summary(truth, prob, fov, *, threshold: float, groups=None, n_bootstrap: int = 2000,
                  seed: int = 0) -> dict:
    """Pooled pixel metrics inside the FOV, each with a 95% bootstrap CI over images.

    Parameters
    ----------
    truth, fov : sequence of bool ndarray (H, W)
        Reference masks and field-of-view masks, one per image.
    prob : sequence of float ndarray (H, W)
        Predicted foreground probability.
    threshold : float
        Chosen on validation images (:func:`best_threshold`), never on these.
    groups : array-like of shape (n_images,), default=None
        Patient ids: the bootstrap resamples whole patients (each image its own when None).
    n_bootstrap : int, default=2000
    seed : int, default=0

    Returns
    -------
    dict
        ``{metric: {"value", "low", "high"}}`` for :data:`METRICS`, plus ``threshold``,
        ``n_images`` and the pooled ``counts`` (tp, fp, fn, tn). AUC replicates use
        4096-bin score histograms; its point estimate is exact.
    """
    counts = pixel_counts(truth, prob, fov, threshold=threshold)
    skel = cldice_counts(truth, [np.asarray(p) > threshold for p in prob], fov)
    hist = _histograms(truth, prob, fov)
    values = scores_from_counts(*counts.sum(0))
    values["auc"] = pixel_auc(truth, prob, fov)
    values["cldice"] = _cldice(skel.sum(0))
    n = len(truth)
    index = np.arange(n)

    def on(fn):
        return lambda idx, _: fn(idx)

    reps = {name: (on(lambda idx, name=name: scores_from_counts(*counts[idx].sum(0))[name]), index)
            for name in ("f1", "sensitivity", "specificity", "accuracy", "mcc")}
    reps["auc"] = (on(lambda idx: _hist_auc(hist[idx].sum(0))), index)
    reps["cldice"] = (on(lambda idx: _cldice(skel[idx].sum(0))), index)
    dist = bootstrap_distribution(reps, index, groups=np.arange(n) if groups is None else np.asarray(groups),
                                  n_resamples=n_bootstrap, seed=seed, stratify=False)
    out: dict = {name: percentile_interval(dist[name], values[name], name=name).to_dict() for name in METRICS}
    out.update(threshold=float(threshold), n_images=n, counts=dict(zip(("tp", "fp", "fn", "tn"),
                                                                       counts.sum(0).tolist())))
    return out
