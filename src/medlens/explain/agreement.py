"""Agreement between a heat map and the expert's region, per image and aggregated.

Per-image scores (all take a float map ``H×W`` and a boolean expert region ``H×W``):

- :func:`pointing_score` — 1 if the map's maximum lies inside the region (pointing game);
- :func:`energy_pointing_score` — the share of the map's mass inside the region
  (energy-based pointing game, Score-CAM paper); a map that ignores the region scores
  about the region's area fraction;
- :func:`overlap_scores` — IoU and Dice between the thresholded map (top-k % of pixels
  or Otsu) and the region;
- :func:`rank_correlation_score` — Spearman correlation with a soft expert map.

:func:`random_maps` draws the baseline: smooth random maps at the CAM's own resolution.
:func:`aggregate` gives means with patient-level bootstrap CIs, and
:func:`paired_energy_test` the Wilcoxon signed-rank test between two models.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning, spearmanr, wilcoxon

from medlens.errors import DataError
from medlens.evaluate.ci import BootstrapWarning, Estimate, bootstrap_ci

SCORES = ("pointing", "energy", "iou", "dice")
"""Per-image agreement columns written by the explain stage."""


def _check(heat: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heat = np.asarray(heat, np.float64)
    region = np.asarray(region).astype(bool)
    if heat.ndim != 2 or heat.shape != region.shape:
        raise DataError(f"map and expert region must both be H×W of the same shape, got {heat.shape} and {region.shape}")
    return heat, region


def box_region(box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``H×W`` region of an inclusive pixel box ``(x0, y0, x1, y1)`` (clipped to the image)."""
    h, w = shape
    x0, y0, x1, y1 = box
    out = np.zeros((h, w), bool)
    xa, xb = int(np.clip(np.floor(x0), 0, w - 1)), int(np.clip(np.ceil(x1), 0, w - 1))
    ya, yb = int(np.clip(np.floor(y0), 0, h - 1)), int(np.clip(np.ceil(y1), 0, h - 1))
    out[ya:yb + 1, xa:xb + 1] = True
    return out


def pointing_score(heat: np.ndarray, region: np.ndarray) -> float:
    """1.0 if the (first) maximum of ``heat`` lies in ``region``, else 0.0; nan for an empty region.

    Examples
    --------
    >>> h = np.zeros((4, 4)); h[1, 1] = 1
    >>> r = np.zeros((4, 4), bool); r[:2, :2] = True
    >>> pointing_score(h, r)
    1.0
    """
    heat, region = _check(heat, region)
    if not region.any():
        return float("nan")
    return float(region.flat[int(np.argmax(heat))])


def energy_pointing_score(heat: np.ndarray, region: np.ndarray) -> float:
    """Share of the map's mass inside ``region`` (0-1); nan for an all-zero map or empty region.

    Examples
    --------
    >>> r = np.zeros((4, 4), bool); r[:2, :2] = True
    >>> energy_pointing_score(np.ones((4, 4)), r)
    0.25
    """
    heat, region = _check(heat, region)
    total = np.clip(heat, 0, None).sum()
    if total <= 0 or not region.any():
        return float("nan")
    return float(np.clip(heat, 0, None)[region].sum() / total)


def threshold_map(heat: np.ndarray, *, method: str = "topk", top_percent: float = 15.0) -> np.ndarray:
    """Binary region of a map: its top ``top_percent`` % of pixels, or Otsu's threshold.

    Parameters
    ----------
    heat : ndarray of shape (H, W)
    method : {'topk', 'otsu'}, default='topk'
    top_percent : float, default=15.0
    """
    heat = np.asarray(heat, np.float64)
    if method == "topk":
        if not 0 < top_percent <= 100:
            raise DataError(f"top_percent must be in (0, 100], got {top_percent}")
        k = max(1, int(round(heat.size * top_percent / 100)))
        cut = np.partition(heat.ravel(), heat.size - k)[heat.size - k]
        return heat >= cut
    if method == "otsu":
        span = heat.max() - heat.min()
        if span <= 0:
            return np.zeros(heat.shape, bool)
        u8 = np.round((heat - heat.min()) / span * 255).astype(np.uint8)
        t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return u8 > t
    raise DataError(f"threshold method must be 'topk' or 'otsu', got '{method}'")


def overlap_scores(heat: np.ndarray, region: np.ndarray, *, method: str = "topk", top_percent: float = 15.0) -> tuple[float, float]:
    """IoU and Dice between the thresholded map and ``region`` (nan, nan if both are empty)."""
    heat, region = _check(heat, region)
    pred = threshold_map(heat, method=method, top_percent=top_percent)
    inter = float(np.logical_and(pred, region).sum())
    union = float(np.logical_or(pred, region).sum())
    total = float(pred.sum() + region.sum())
    if union == 0:
        return float("nan"), float("nan")
    return inter / union, 2 * inter / total


def soft_expert_map(mask: np.ndarray, *, sigma: float | None = None) -> np.ndarray:
    """A soft expert map from a binary mask: the mask blurred with a Gaussian (sigma ~ 4 % of the side)."""
    mask = np.asarray(mask, np.float32)
    sigma = sigma or max(1.0, 0.04 * max(mask.shape))
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def rank_correlation_score(heat: np.ndarray, soft: np.ndarray) -> float:
    """Spearman rank correlation between a map and a soft expert map (0.0 if either is constant)."""
    heat, soft = np.asarray(heat, np.float64).ravel(), np.asarray(soft, np.float64).ravel()
    if heat.shape != soft.shape:
        raise DataError(f"map and soft expert map differ in size: {heat.size} vs {soft.size}")
    if np.ptp(heat) == 0 or np.ptp(soft) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        r = spearmanr(heat, soft).statistic
    return float(np.nan_to_num(r))


def image_scores(heat: np.ndarray, region: np.ndarray, *, method: str = "topk", top_percent: float = 15.0) -> dict[str, float]:
    """All region scores of one map: pointing, energy, iou, dice, and the region's area fraction."""
    iou, dice = overlap_scores(heat, region, method=method, top_percent=top_percent)
    return {"pointing": pointing_score(heat, region), "energy": energy_pointing_score(heat, region),
            "iou": iou, "dice": dice, "area": float(np.asarray(region, bool).mean())}


def random_maps(n: int, size: int, *, grid: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``n`` random maps ``size×size`` in [0, 1]: uniform noise on ``grid`` upsampled bilinearly.

    They have the smoothness of a CAM from a layer of that grid, so they are the fair
    "explains nothing" baseline for every agreement score.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        small = rng.uniform(0, 1, grid).astype(np.float32)
        m = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
        out[i] = (m - m.min()) / (np.ptp(m) + 1e-7)
    return out


def _mean(_y, s) -> float:
    s = np.asarray(s, float)
    return float(np.mean(s)) if len(s) else float("nan")


def aggregate(values, *, groups=None, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of per-image scores with a 95 % percentile bootstrap CI (patients resampled when ``groups``).

    Non-finite values are dropped first; fewer than two values give a nan interval.
    """
    values = np.asarray(values, float)
    keep = np.isfinite(values)
    values = values[keep]
    if len(values) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    if len(values) < 2:
        return Estimate(float(values[0]), float("nan"), float("nan"))
    g = None if groups is None else np.asarray(groups)[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BootstrapWarning)
        return bootstrap_ci(_mean, np.zeros(len(values), int), values, groups=g, n_resamples=n_resamples,
                            seed=seed, stratify=False)


def paired_energy_test(a: pd.DataFrame, b: pd.DataFrame, *, column: str = "energy") -> dict:
    """Wilcoxon signed-rank test of per-image scores of two models on the images both explained.

    Parameters
    ----------
    a, b : DataFrame
        Per-image tables with ``sample_id`` and ``column``.

    Returns
    -------
    dict
        ``n_pairs``, ``mean_a``, ``mean_b``, ``median_difference`` (a - b), ``statistic``,
        ``p_value`` (None when fewer than 2 pairs or all differences are zero).
    """
    merged = a[["sample_id", column]].merge(b[["sample_id", column]], on="sample_id", suffixes=("_a", "_b")).dropna()
    da, db = merged[f"{column}_a"].to_numpy(float), merged[f"{column}_b"].to_numpy(float)
    out = {"n_pairs": len(merged), "mean_a": float(np.mean(da)) if len(da) else float("nan"),
           "mean_b": float(np.mean(db)) if len(db) else float("nan"),
           "median_difference": float(np.median(da - db)) if len(da) else float("nan"),
           "statistic": None, "p_value": None}
    if len(merged) >= 2 and np.any(da != db):
        res = wilcoxon(da, db)
        out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out
