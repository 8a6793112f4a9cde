"""A new site, end to end: a local acceptance set sets the threshold and refits the OOD gate.

A hospital that adopts the model labels a small local set (``evaluate.local_fraction`` of
its patients, stratified by whether a patient has a positive image). On it the procedure

1. chooses a local threshold (``evaluate.new_site_rule``) on a local set drawn by
   :func:`medlens.evaluate.study.local_patients`, as
   :func:`medlens.evaluate.study.new_site_procedure` does for one draw, and
2. refits the OOD gate: each fold member's Mahalanobis detector gains the local set's
   class means (Lee et al. 2018's class-conditional Gaussians, one more per class, with
   the training covariance), and its threshold becomes the larger of the training one
   and the ``pass_rate`` quantile of the local images' leave-one-out distances (an image
   never measured against a mean it helped to make, as the training gate is
   thresholded on validation images it was not fitted on).

The procedure is repeated over ``n_draws`` random local sets; each draw is scored on the
site's *remaining* patients only. The result is the distribution (median, 5th and 95th
percentiles) of sensitivity and specificity at the local and at the internal threshold,
of the refitted gate's pass rate on the remaining images, and of the share of OOD images
it still refuses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medlens.evaluate import choose_threshold
from medlens.evaluate.study import local_patients
from medlens.inference.ood import MahalanobisDetector

__all__ = ["refit_gate", "new_site_draws"]


def _with_means(det: MahalanobisDetector, means: np.ndarray, threshold: float) -> MahalanobisDetector:
    return MahalanobisDetector(np.vstack([det.means, means]), det.precision, threshold)


def refit_gate(detectors: list[MahalanobisDetector], features: list[np.ndarray], labels: np.ndarray,
               pass_rate: float) -> list[MahalanobisDetector]:
    """Each fold member's gate with the local set's class means added and its threshold re-set.

    Parameters
    ----------
    detectors : list of MahalanobisDetector
        The fold members' gates, fitted on the training images.
    features : list of ndarray of shape (n_local, D)
        Each member's features of the local images.
    labels : ndarray of shape (n_local,)
        The local images' classes.
    pass_rate : float
        Share of the local images (by leave-one-out distance) that the gate must pass.

    Returns
    -------
    list of MahalanobisDetector
        Threshold ``max(training threshold, pass_rate quantile of the leave-one-out distances)``.
    """
    y = np.asarray(labels).astype(int)
    classes, own = np.unique(y, return_inverse=True)
    counts = np.bincount(own)
    out = []
    for det, f in zip(detectors, features):
        f = np.asarray(f, np.float64)
        sums = np.stack([f[own == j].sum(0) for j in range(len(classes))])
        means = sums / counts[:, None]
        every = np.vstack([det.means, means])
        fp = f @ det.precision
        d2 = (fp * f).sum(1)[:, None] - 2 * fp @ every.T + ((every @ det.precision) * every).sum(1)[None, :]
        rows = np.arange(len(f))
        d2[rows, len(det.means) + own] = np.inf  # the own class's mean is replaced by the one without the image
        alone = counts[own] == 1
        loo_mean = (sums[own] - f) / np.maximum(counts[own] - 1, 1)[:, None]
        diff = f - loo_mean
        d2_own = np.where(alone, np.inf, ((diff @ det.precision) * diff).sum(1))
        loo = np.sqrt(np.maximum(np.minimum(d2.min(1), d2_own), 0.0))
        out.append(_with_means(det, means, max(det.threshold, float(np.quantile(loo, pass_rate)))))
    return out


def _gate_pass(detectors: list[MahalanobisDetector], features: list[np.ndarray]) -> np.ndarray:
    """The ensemble gate (mean threshold-normalised distance ≤ 1) on each member's features."""
    return np.mean([d.score(f) / d.threshold for d, f in zip(detectors, features)], axis=0) <= 1.0


def _rates(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    hit = s >= t
    return float(hit[y == 1].mean()), float((~hit[y == 0]).mean())


def new_site_draws(site: pd.DataFrame, features: list[np.ndarray], ood_features: list[np.ndarray] | None,
                   detectors: list[MahalanobisDetector], *, internal_threshold: float, fraction: float, rule: str,
                   target: float, pass_rate: float, n_draws: int, seed: int) -> dict:
    """The new-site procedure over ``n_draws`` random local sets of one external site.

    Parameters
    ----------
    site : DataFrame
        The site's images: ``patient_id``, ``label`` (0/1) and ``score`` (the calibrated
        ensemble's positive-class probability), in the row order of ``features``.
    features : list of ndarray of shape (n_site, D)
        Each fold member's features of the site's images.
    ood_features : list of ndarray of shape (n_ood, D), optional
        Each member's features of known out-of-distribution images.
    detectors : list of MahalanobisDetector
        The fold members' training gates.
    internal_threshold : float
        The study's default operating threshold (chosen on internal validation data).
    fraction : float
        Share of the site's patients in a local set (``evaluate.local_fraction``).
    rule : {'youden', 'sensitivity', 'specificity'}
        How the local threshold is chosen (``evaluate.new_site_rule``).
    target : float
        The rule's target sensitivity or specificity.
    pass_rate : float
        The gate's pass rate (``trust.ood_pass_rate``).
    n_draws, seed : int

    Returns
    -------
    dict
        ``draws`` (one row per draw), ``summary`` (median, p5, p95 per column) and the
        sizes; empty ``draws`` when a class has too few patients.
    """
    y, s = site["label"].to_numpy(int), site["score"].to_numpy(float)
    pid = site["patient_id"].to_numpy()
    before = _gate_pass(detectors, features)
    rows = []
    for d in range(n_draws):
        local = local_patients(pid, y, fraction, np.random.default_rng([seed, d]))
        if local is None or len(np.unique(y[local])) < 2 or len(np.unique(y[~local])) < 2:
            continue
        t = choose_threshold(y[local], s[local], method=rule, target=target)
        gate = refit_gate(detectors, [f[local] for f in features], y[local], pass_rate)
        rest = ~local
        sens, spec = _rates(y[rest], s[rest], t)
        sens_int, spec_int = _rates(y[rest], s[rest], internal_threshold)
        row = {"draw": d, "local_images": int(local.sum()), "rest_images": int(rest.sum()), "threshold": float(t),
               "sensitivity": sens, "specificity": spec, "sensitivity_internal": sens_int,
               "specificity_internal": spec_int, "gate_pass_before": float(before[rest].mean()),
               "gate_pass": float(_gate_pass(gate, [f[rest] for f in features]).mean())}
        if ood_features is not None and len(ood_features[0]):
            row["ood_refused"] = float(1 - _gate_pass(gate, ood_features).mean())
        rows.append(row)
    draws = pd.DataFrame(rows)
    summary = {c: {"median": float(draws[c].median()), "p5": float(draws[c].quantile(0.05)),
                   "p95": float(draws[c].quantile(0.95))}
               for c in draws.columns if c not in ("draw",)} if len(draws) else {}
    return {"n_draws": int(len(draws)), "fraction": fraction, "rule": rule, "internal_threshold": internal_threshold,
            "summary": summary, "draws": draws}
