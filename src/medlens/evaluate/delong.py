"""DeLong's nonparametric AUC variance, confidence interval and tests; McNemar's test.

The computations reproduce R pROC (``ci.auc``, ``var``, ``cov`` and ``roc.test`` with
``method="delong"``), which is what clinical papers cite. Placements use midranks, so
ties are handled exactly (fast algorithm of Sun & Xu, 2014).

References
----------
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more
correlated receiver operating characteristic curves: a nonparametric approach.
Biometrics 1988;44:837-845.

Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under
correlated receiver operating characteristic curves. IEEE Signal Process Lett
2014;21:1389-1393.

Robin X et al. pROC: an open-source package for R and S+ to analyze and compare ROC
curves. BMC Bioinformatics 2011;12:77.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from medlens.errors import DataError
from medlens.evaluate import _validation as v
from medlens.evaluate.ci import Estimate, _z

__all__ = [
    "RocTest",
    "delong_ci",
    "delong_covariance",
    "delong_test",
    "delong_unpaired_test",
    "delong_variance",
    "mcnemar_test",
]


@dataclass(frozen=True)
class RocTest:
    """Result of a test comparing two AUCs.

    Attributes
    ----------
    auc_a, auc_b : float
    difference : float
        ``auc_a - auc_b``.
    statistic : float
        z (paired, normal reference) or D (unpaired, Student-t reference).
    p_value : float
        Two-sided.
    df : float
        Degrees of freedom of the t reference; ``inf`` for the normal reference.
    """

    auc_a: float
    auc_b: float
    difference: float
    statistic: float
    p_value: float
    df: float = float("inf")

    def to_dict(self) -> dict[str, float]:
        """Return the fields as plain floats."""
        return {k: float(x) for k, x in asdict(self).items()}


@dataclass(frozen=True)
class _Placements:
    theta: np.ndarray  # (k,) AUC per score column
    cases: np.ndarray  # (k, m) structural components of the positive cases (V10)
    controls: np.ndarray  # (k, n) structural components of the negative cases (V01)

    def covariance(self) -> np.ndarray:
        m, n = self.cases.shape[1], self.controls.shape[1]
        return np.atleast_2d(np.cov(self.cases)) / m + np.atleast_2d(np.cov(self.controls)) / n


def _placements(y_true, *score_columns) -> _Placements:
    y = v.binary_labels(y_true)
    cols = [v.scores(s, y.shape[0], name=f"y_score{'' if len(score_columns) == 1 else i}")
            for i, s in enumerate(score_columns)]
    v.require_both_classes(y, metric="DeLong's AUC variance")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise DataError(
            f"DeLong's variance needs at least 2 positive and 2 negative cases; got {m} and {n}."
        )
    s = np.vstack(cols)
    x, z = s[:, y], s[:, ~y]  # cases, controls
    tx = stats.rankdata(x, axis=1)
    tz = stats.rankdata(z, axis=1)
    tall = stats.rankdata(np.hstack([x, z]), axis=1)
    theta = (tall[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v10 = (tall[:, :m] - tx) / n
    v01 = 1.0 - (tall[:, m:] - tz) / m
    return _Placements(theta, v10, v01)


def delong_variance(y_true, y_score) -> float:
    """DeLong variance of the AUC (pROC ``var(roc, method="delong")``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels; at least two of each class.
    y_score : array-like of shape (n_samples,)

    Returns
    -------
    float
    """
    return float(_placements(y_true, y_score).covariance()[0, 0])


def delong_covariance(y_true, score_a, score_b) -> float:
    """DeLong covariance of two AUCs on the same samples (pROC ``cov(..., method="delong")``)."""
    return float(_placements(y_true, score_a, score_b).covariance()[0, 1])


def delong_ci(y_true, y_score, *, confidence: float = 0.95) -> Estimate:
    """AUC with DeLong's confidence interval (pROC ``ci.auc(method="delong")``).

    The interval is ``auc +/- z * sqrt(var)``, clipped to [0, 1] as pROC does.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels; at least two of each class.
    y_score : array-like of shape (n_samples,)
    confidence : float, default=0.95

    Returns
    -------
    Estimate

    Raises
    ------
    DataError
        With fewer than two positive or two negative cases.

    Examples
    --------
    >>> e = delong_ci([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.6, 0.4, 0.8, 0.9])
    >>> round(e.value, 4)
    0.8889
    """
    p = _placements(y_true, y_score)
    auc, var = float(p.theta[0]), float(p.covariance()[0, 0])
    half = _z(confidence) * np.sqrt(var)
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half))


def delong_test(y_true, score_a, score_b) -> RocTest:
    """DeLong's test for two correlated AUCs (two scores on the same samples).

    Matches pROC ``roc.test(paired=TRUE, method="delong")``: ``z = (auc_a - auc_b) / sd``
    with a two-sided normal p-value; ``z = 0`` when both AUCs and the variance are 0.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    score_a, score_b : array-like of shape (n_samples,)

    Returns
    -------
    RocTest
    """
    p = _placements(y_true, score_a, score_b)
    S = p.covariance()
    d = float(p.theta[0] - p.theta[1])
    sd = float(np.sqrt(max(S[0, 0] + S[1, 1] - 2 * S[0, 1], 0.0)))
    z = 0.0 if (d == 0 and sd == 0) else (d / sd if sd > 0 else np.copysign(np.inf, d))
    pval = float(2 * stats.norm.sf(abs(z)))
    return RocTest(float(p.theta[0]), float(p.theta[1]), d, float(z), pval)


def delong_unpaired_test(y_true_a, score_a, y_true_b, score_b) -> RocTest:
    """DeLong-based test for two AUCs from independent samples.

    Matches pROC ``roc.test(paired=FALSE, method="delong")``:
    ``D = (auc_a - auc_b) / sqrt(var_a + var_b)`` against a Student t distribution with
    Welch-Satterthwaite degrees of freedom
    ``(var_a + var_b)^2 / (var_a^2 / (N_a - 1) + var_b^2 / (N_b - 1))``.

    Parameters
    ----------
    y_true_a, score_a : array-like of shape (n_a,)
        Labels and scores of the first set.
    y_true_b, score_b : array-like of shape (n_b,)
        Labels and scores of the second set.

    Returns
    -------
    RocTest
        ``statistic`` is D and ``df`` the degrees of freedom.
    """
    pa = _placements(y_true_a, score_a)
    pb = _placements(y_true_b, score_b)
    va, vb = float(pa.covariance()[0, 0]), float(pb.covariance()[0, 0])
    na = pa.cases.shape[1] + pa.controls.shape[1]
    nb = pb.cases.shape[1] + pb.controls.shape[1]
    d = float(pa.theta[0] - pb.theta[0])
    stat = d / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    pval = float(2 * stats.t.sf(abs(stat), df))
    return RocTest(float(pa.theta[0]), float(pb.theta[0]), d, float(stat), pval, float(df))


def mcnemar_test(y_true, pred_a, pred_b, *, exact: bool = False, correction: bool = True) -> dict[str, float]:
    """McNemar's test that two classifiers have the same error rate on the same samples.

    Uses the discordant pairs: ``b`` = samples only A classifies correctly, ``c`` = only B.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels.
    pred_a, pred_b : array-like of shape (n_samples,)
        0/1 predictions of the two classifiers.
    exact : bool, default=False
        Use the exact binomial test on ``min(b, c)`` (recommended when ``b + c < 25``).
    correction : bool, default=True
        Continuity correction of the chi-square statistic (R ``mcnemar.test`` default).

    Returns
    -------
    dict
        ``{"statistic", "p_value", "b", "c"}``; the statistic is nan for the exact test.
    """
    y = v.binary_labels(y_true)
    a = v.binary_labels(pred_a, name="pred_a")
    b_ = v.binary_labels(pred_b, name="pred_b")
    v.check_length(y.shape[0], a, name="pred_a")
    v.check_length(y.shape[0], b_, name="pred_b")
    ok_a, ok_b = a == y, b_ == y
    b = int(np.sum(ok_a & ~ok_b))
    c = int(np.sum(~ok_a & ok_b))
    if b + c == 0:
        return {"statistic": 0.0, "p_value": 1.0, "b": float(b), "c": float(c)}
    if exact:
        pval = float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
        return {"statistic": float("nan"), "p_value": pval, "b": float(b), "c": float(c)}
    diff = abs(b - c) - (1.0 if correction else 0.0)
    stat = max(diff, 0.0) ** 2 / (b + c)
    return {"statistic": float(stat), "p_value": float(stats.chi2.sf(stat, 1)), "b": float(b), "c": float(c)}
