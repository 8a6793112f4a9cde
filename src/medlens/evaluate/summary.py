"""One-call summaries used by the evaluate stage and the report.

Interval methods (each row of a summary table states its method in the report):

* AUC: DeLong; proportions (sensitivity, specificity, PPV, NPV, accuracy): Wilson;
  AUC-PR, F1, balanced accuracy, Youden's J: stratified percentile bootstrap.
* With ``groups`` (patient ids) where a patient has several images, every interval is
  a patient-level (cluster) bootstrap, because DeLong and Wilson assume independent
  samples. With one image per patient, ``groups`` changes nothing.
* AUC falls back to the bootstrap when there are fewer than two cases of a class.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from medlens.errors import DataError, did_you_mean
from medlens.evaluate import _validation as v
from medlens.evaluate.ci import Estimate, bootstrap_distribution, percentile_interval, wilson_ci
from medlens.evaluate.delong import delong_ci, delong_test, delong_unpaired_test, mcnemar_test
from medlens.evaluate.metrics import (
    UndefinedMetricWarning,
    accuracy_score,
    auc_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    npv_score,
    ppv_score,
    sensitivity_score,
    specificity_score,
    youden_j_score,
)

__all__ = ["BINARY_METRICS", "binary_summary", "compare_binary", "external_difference", "multiclass_summary"]

#: Binary summary keys -> (metric, needs a threshold).
BINARY_METRICS: dict[str, tuple[Callable, bool]] = {
    "auc": (auc_score, False),
    "auc_pr": (average_precision_score, False),
    "sensitivity": (sensitivity_score, True),
    "specificity": (specificity_score, True),
    "ppv": (ppv_score, True),
    "npv": (npv_score, True),
    "f1": (f1_score, True),
    "accuracy": (accuracy_score, True),
    "balanced_accuracy": (balanced_accuracy_score, True),
    "youden_j": (youden_j_score, True),
}
_BOOTSTRAP_ONLY = ("auc_pr", "f1", "balanced_accuracy", "youden_j")


def _clustered(groups, n: int) -> bool:
    if groups is None:
        return False
    g = v.as_array(groups, name="groups")
    v.check_length(n, g, name="groups")
    return np.unique(g).size < n


def _binary_inputs(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    y = v.binary_labels(y_true)
    s = v.scores(y_score, y.shape[0])
    v.require_both_classes(y, metric="A binary summary")
    return y, s


def binary_summary(
    y_true, y_score, *, threshold: float, groups=None, n_boot: int = 2000, seed: int = 0
) -> dict[str, Estimate]:
    """All binary metrics with 95% confidence intervals at a fixed threshold.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels with both classes present.
    y_score : array-like of shape (n_samples,)
        Scores; predicted positive when ``y_score >= threshold``.
    threshold : float
        Operating threshold, chosen on validation data (:func:`choose_threshold`).
    groups : array-like of shape (n_samples,), default=None
        Patient ids; with repeated ids all intervals use a patient-level bootstrap.
    n_boot : int, default=2000
        Bootstrap resamples.
    seed : int, default=0

    Returns
    -------
    dict of str -> Estimate
        Keys ``auc, auc_pr, sensitivity, specificity, ppv, npv, f1, accuracy,
        balanced_accuracy, youden_j`` in that order. A metric undefined at this
        threshold (e.g. PPV with no predicted positive) is ``nan``.
    """
    y, s = _binary_inputs(y_true, y_score)
    pred = s >= float(threshold)
    clustered = _clustered(groups, y.shape[0])
    m, n = int(y.sum()), int((~y).sum())
    delong_ok = not clustered and m >= 2 and n >= 2
    boot = [k for k, (_, thr) in BINARY_METRICS.items()
            if clustered or k in _BOOTSTRAP_ONLY or (k == "auc" and not delong_ok)]
    second = {k: (pred if thr else s) for k, (_, thr) in BINARY_METRICS.items()}
    reps = bootstrap_distribution(
        {k: (BINARY_METRICS[k][0], second[k]) for k in boot}, y,
        groups=groups if clustered else None, n_resamples=n_boot, seed=seed,
    )
    tp, fp = int(np.sum(y & pred)), int(np.sum(~y & pred))
    fn, tn = int(np.sum(y & ~pred)), int(np.sum(~y & ~pred))
    wilson = {"sensitivity": (tp, tp + fn), "specificity": (tn, tn + fp), "ppv": (tp, tp + fp),
              "npv": (tn, tn + fn), "accuracy": (tp + tn, tp + tn + fp + fn)}
    out: dict[str, Estimate] = {}
    for key, (metric, _) in BINARY_METRICS.items():
        if key in reps:
            out[key] = percentile_interval(reps[key], metric(y, second[key]), name=key)
        elif key == "auc":
            out[key] = delong_ci(y, s)
        else:
            if wilson[key][1] == 0:
                warnings.warn(f"{key} is undefined at threshold {threshold} (zero denominator); "
                              "it is reported as nan.", UndefinedMetricWarning, stacklevel=2)
            out[key] = wilson_ci(*wilson[key])
    return out


def multiclass_summary(y_true, y_proba, *, groups=None, n_boot: int = 2000, seed: int = 0) -> dict[str, Estimate]:
    """Macro one-vs-rest AUC, accuracy and balanced accuracy with 95% CIs.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class indices 0..K-1; every class must be present.
    y_proba : array-like of shape (n_samples, K)
        Class scores; the prediction is the arg-max.
    groups : array-like of shape (n_samples,), default=None
        Patient ids (patient-level bootstrap when a patient has several images).
    n_boot : int, default=2000
    seed : int, default=0

    Returns
    -------
    dict of str -> Estimate
        ``auc`` (macro one-vs-rest, bootstrap CI), ``accuracy`` (Wilson, or bootstrap
        with clustered groups) and ``balanced_accuracy`` (bootstrap).
    """
    y = v.class_labels(y_true)
    p = v.scores(y_proba, y.shape[0], name="y_proba", ndim=(2,))
    missing = sorted(set(range(p.shape[1])) - set(np.unique(y).tolist()))
    if missing:
        raise DataError(
            f"y_true has no sample of class(es) {missing} (y_proba has {p.shape[1]} columns); "
            "a one-vs-rest AUC needs every class present."
        )
    pred = np.argmax(p, axis=1)
    clustered = _clustered(groups, y.shape[0])
    metrics = {"auc": (auc_score, p), "accuracy": (accuracy_score, pred),
               "balanced_accuracy": (balanced_accuracy_score, pred)}
    boot = {k: m for k, m in metrics.items() if clustered or k != "accuracy"}
    reps = bootstrap_distribution(boot, y, groups=groups if clustered else None, n_resamples=n_boot, seed=seed)
    out: dict[str, Estimate] = {}
    for key, (metric, second) in metrics.items():
        if key in reps:
            out[key] = percentile_interval(reps[key], metric(y, second), name=key)
        else:
            out[key] = wilson_ci(int(np.sum(pred == y)), int(y.size))
    return out


def compare_binary(
    y_true, score_a, score_b, *, paired: bool = True,
    threshold_a: float | None = None, threshold_b: float | None = None,
) -> dict[str, float]:
    """Compare two models' AUCs with DeLong's test; McNemar at thresholds if given.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    score_a, score_b : array-like of shape (n_samples,)
        Scores of model A and model B on the same samples.
    paired : bool, default=True
        Paired DeLong test (normal z). ``False`` treats the two curves as independent
        (pROC's unpaired test, Student t) — only for curves on different samples.
    threshold_a, threshold_b : float, default=None
        When both are given, adds McNemar's test of the predictions at these thresholds.

    Returns
    -------
    dict of str -> float
        ``auc_a, auc_b, difference`` (a - b), ``z`` (the test statistic), ``p``; ``df``
        when unpaired; ``mcnemar_statistic, mcnemar_p`` with thresholds.
    """
    y, a = _binary_inputs(y_true, score_a)
    b = v.scores(score_b, y.shape[0], name="score_b")
    res = delong_test(y, a, b) if paired else delong_unpaired_test(y, a, y, b)
    out = {"auc_a": res.auc_a, "auc_b": res.auc_b, "difference": res.difference,
           "z": res.statistic, "p": res.p_value}
    if not paired:
        out["df"] = res.df
    if (threshold_a is None) != (threshold_b is None):
        raise DataError("Pass both threshold_a and threshold_b for McNemar's test, or neither.")
    if threshold_a is not None:
        mc = mcnemar_test(y, a >= threshold_a, b >= threshold_b)
        out["mcnemar_statistic"], out["mcnemar_p"] = mc["statistic"], mc["p_value"]
    return out


def external_difference(
    y_true_internal, score_internal, y_true_external, score_external, *,
    metric: str = "auc", threshold: float | None = None,
    groups_internal=None, groups_external=None, n_boot: int = 2000, seed: int = 0,
) -> Estimate:
    """Change of a metric from the internal test set to an external set, with a CI.

    The two sets are independent samples: each is bootstrapped on its own (stratified,
    patient-level when its groups repeat) and the interval is the percentile interval of
    the replicate differences.

    Parameters
    ----------
    y_true_internal, score_internal : array-like of shape (n_internal,)
    y_true_external, score_external : array-like of shape (n_external,)
    metric : str, default="auc"
        A key of :data:`BINARY_METRICS` (``"auc"``, ``"sensitivity"``, ...).
    threshold : float, default=None
        Required for threshold metrics; the same (validation-chosen) threshold is applied
        to both sets.
    groups_internal, groups_external : array-like, default=None
        Patient ids of each set.
    n_boot : int, default=2000
    seed : int, default=0

    Returns
    -------
    Estimate
        ``external - internal``; negative values mean worse on the external set.
    """
    if metric not in BINARY_METRICS:
        raise DataError(
            f"Unknown metric {metric!r}; choose one of {', '.join(BINARY_METRICS)}.{did_you_mean(metric, list(BINARY_METRICS))}"
        )
    fn, needs_threshold = BINARY_METRICS[metric]
    if needs_threshold and threshold is None:
        raise DataError(f"metric={metric!r} needs threshold=; pass the one chosen on validation data.")
    sets = [(y_true_internal, score_internal, groups_internal), (y_true_external, score_external, groups_external)]
    values, reps = [], []
    seeds = np.random.SeedSequence(seed).spawn(2)
    for (yt, sc, grp), ss in zip(sets, seeds):
        y, s = _binary_inputs(yt, sc)
        second = s >= float(threshold) if needs_threshold else s
        values.append(fn(y, second))
        reps.append(bootstrap_distribution({metric: (fn, second)}, y, groups=grp, n_resamples=n_boot,
                                           seed=np.random.default_rng(ss))[metric])
    return percentile_interval(reps[1] - reps[0], values[1] - values[0], name=f"{metric} difference")
