"""Confidence intervals: the :class:`Estimate` record, Wilson intervals, bootstrap.

The bootstrap is stratified (cases and controls, or each class, are resampled
separately, so every replicate keeps the observed prevalence) and, when ``groups``
(patient ids) is given, resamples whole patients: a patient's images enter or leave a
replicate together. A replicate is represented as a row of counts over the samples, so
the metrics in :mod:`medlens.evaluate.metrics` evaluate 2,000 replicates as a few dense
array operations. Any other callable is evaluated replicate by replicate.

A replicate on which the metric is undefined (one class, a zero denominator) yields
``nan``; it is counted, reported in a :class:`BootstrapWarning`, and left out of the
percentiles.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest, norm

from medlens.errors import DataError
from medlens.evaluate import _validation as v
from medlens.evaluate.metrics import BATCHED

__all__ = ["BootstrapWarning", "Estimate", "bootstrap_ci", "bootstrap_distribution", "wilson_ci"]

logger = logging.getLogger(__name__)

#: Target size (number of float64 cells) of one block of resample weights.
_BLOCK_CELLS = 2**21


class BootstrapWarning(UserWarning):
    """Some bootstrap replicates were undefined and left out of the interval."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with the bounds of its confidence interval.

    Attributes
    ----------
    value : float
        The point estimate on the full data.
    low, high : float
        Lower and upper confidence bounds (``nan`` when they cannot be computed).
    """

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        """Return ``{"value": ..., "low": ..., "high": ...}`` as plain floats."""
        return {k: float(x) for k, x in asdict(self).items()}

    def __str__(self) -> str:
        return f"{self.value:.3f} ({self.low:.3f}-{self.high:.3f})"


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + v.check_confidence(confidence) / 2.0))


def wilson_ci(successes: int, total: int, *, confidence: float = 0.95) -> Estimate:
    """Wilson score interval for a proportion ``successes / total``.

    Computed by :func:`scipy.stats.binomtest` ``(successes, total).proportion_ci(method="wilson")``
    (two-sided, no continuity correction; the bounds are exactly 0 at ``successes == 0`` and
    exactly 1 at ``successes == total``).

    Parameters
    ----------
    successes : int
        Number of successes, e.g. true positives for sensitivity.
    total : int
        Number of trials, e.g. all positive cases.
    confidence : float, default=0.95

    Returns
    -------
    Estimate
        ``nan`` everywhere when ``total == 0``.

    References
    ----------
    Wilson EB. Probable inference, the law of succession, and statistical inference.
    JASA 1927;22:209-212.

    Examples
    --------
    >>> e = wilson_ci(8, 10)
    >>> round(e.low, 4), round(e.high, 4)
    (0.4902, 0.9433)
    """
    if total < 0 or successes < 0 or successes > total:
        raise DataError(f"Need 0 <= successes <= total; got successes={successes}, total={total}.")
    confidence = v.check_confidence(confidence)
    if total == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    test = binomtest(successes, total)
    ci = test.proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(float(test.statistic), float(ci.low), float(ci.high))


# --- resampling -----------------------------------------------------------------------

def _strata_labels(y_true: np.ndarray) -> np.ndarray | None:
    """One stratum label per sample: the class for 1-D labels, none for multi-label."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        return None
    return np.unique(y, return_inverse=True)[1]


def _cluster_strata(strata: np.ndarray | None, codes: np.ndarray, n_groups: int) -> np.ndarray | None:
    """Patient-level strata: the patient's class if constant, 'any positive' for binary."""
    if strata is None:
        return None
    lo = np.full(n_groups, np.iinfo(np.int64).max)
    hi = np.full(n_groups, -1)
    np.minimum.at(lo, codes, strata)
    np.maximum.at(hi, codes, strata)
    if np.array_equal(lo, hi):
        return hi
    if strata.max() <= 1:  # binary labels: stratify by "patient has any positive"
        return hi
    return None


def _count_rows(rng: np.random.Generator, members: np.ndarray, n_rows: int, size: int) -> np.ndarray:
    """(n_rows, size) counts of ``members`` drawn with replacement, placed in columns."""
    k = members.size
    draws = rng.integers(0, k, size=(n_rows, k))
    draws += (np.arange(n_rows) * k)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_rows * k).reshape(n_rows, k)
    out = np.zeros((n_rows, size))
    out[:, members] = counts
    return out


def _resample_blocks(
    y_true, *, groups, n_resamples: int, seed, stratify: bool
) -> Iterator[np.ndarray]:
    """Yield blocks of shape (block, n_samples) of bootstrap counts per sample."""
    n = np.asarray(y_true).shape[0]
    strata = _strata_labels(y_true) if stratify else None
    codes = None
    units = n
    if groups is not None:
        g = v.as_array(groups, name="groups")
        v.check_length(n, g, name="groups")
        uniq, codes = np.unique(g, return_inverse=True)
        units = uniq.size
        strata = _cluster_strata(strata, codes, units)
    if strata is None:
        strata = np.zeros(units, dtype=np.int64)
    members = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    # One stream per stratum: the draws do not depend on the block size.
    if isinstance(seed, np.random.Generator):
        rngs = seed.spawn(len(members))
    else:
        rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(members))]
    block = max(1, min(n_resamples, _BLOCK_CELLS // max(n, 1)))
    done = 0
    while done < n_resamples:
        rows = min(block, n_resamples - done)
        counts = sum(_count_rows(rng, m, rows, units) for rng, m in zip(rngs, members))
        yield counts if codes is None else counts[:, codes]
        done += rows


def bootstrap_distribution(
    metrics: Mapping[str, tuple[Callable, object]],
    y_true,
    *,
    groups=None,
    n_resamples: int = 2000,
    seed: int | np.random.Generator | None = 0,
    stratify: bool = True,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of several metrics on shared resamples.

    Parameters
    ----------
    metrics : mapping of name -> (metric, second_argument)
        Each metric is called as ``metric(y_true, second_argument)`` on a replicate,
        e.g. ``{"auc": (auc_score, y_score), "sensitivity": (sensitivity_score, y_pred)}``.
    y_true : array-like of shape (n_samples,) or (n_samples, n_labels)
        Labels; 1-D labels define the strata.
    groups : array-like of shape (n_samples,), default=None
        Patient (cluster) ids; whole patients are resampled.
    n_resamples : int, default=2000
    seed : int, Generator or None, default=0
    stratify : bool, default=True
        Resample within each class (with ``groups``: within patient-level strata).

    Returns
    -------
    dict of name -> ndarray of shape (n_resamples,)
        Replicates, ``nan`` where the metric is undefined.
    """
    if int(n_resamples) < 1:
        raise DataError(f"n_resamples must be a positive integer; got {n_resamples}.")
    y_arr = np.asarray(y_true)
    fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for name, (metric, second) in metrics.items():
        prepare = BATCHED.get(metric)
        if prepare is not None:
            fns[name] = prepare(y_arr, second)[0]
        else:
            fns[name] = _replicate_by_replicate(metric, y_arr, np.asarray(second))
    out: dict[str, list[np.ndarray]] = {name: [] for name in metrics}
    blocks = _resample_blocks(y_arr, groups=groups, n_resamples=int(n_resamples), seed=seed, stratify=stratify)
    for W in blocks:
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, fn in fns.items():
                out[name].append(fn(W))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _replicate_by_replicate(metric: Callable, y: np.ndarray, second: np.ndarray):
    def fn(W: np.ndarray) -> np.ndarray:
        values = np.empty(W.shape[0])
        for i, counts in enumerate(W):
            idx = np.repeat(np.arange(y.shape[0]), counts.astype(np.int64))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    values[i] = metric(y[idx], second[idx])
            except (DataError, ValueError):
                values[i] = np.nan
        return values

    return fn


def percentile_interval(
    replicates: np.ndarray, value: float, *, confidence: float = 0.95, name: str = "metric"
) -> Estimate:
    """Percentile interval of finite ``replicates``; warns about undefined ones."""
    alpha = 1.0 - v.check_confidence(confidence)
    finite = replicates[np.isfinite(replicates)]
    n_bad = replicates.size - finite.size
    if n_bad:
        logger.info("%s: %d of %d bootstrap replicates undefined", name, n_bad, replicates.size)
        warnings.warn(
            f"{name}: {n_bad} of {replicates.size} bootstrap replicates were undefined "
            "(one class or a zero denominator) and were left out of the interval.",
            BootstrapWarning,
            stacklevel=3,
        )
    if finite.size == 0:
        return Estimate(float(value), float("nan"), float("nan"))
    low, high = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Estimate(float(value), float(low), float(high))


def bootstrap_ci(
    metric: Callable,
    y_true,
    y_score,
    *,
    groups=None,
    n_resamples: int = 2000,
    seed: int | np.random.Generator | None = 0,
    confidence: float = 0.95,
    stratify: bool = True,
) -> Estimate:
    """Percentile bootstrap confidence interval of ``metric(y_true, y_score)``.

    Parameters
    ----------
    metric : callable
        ``metric(y_true, y_score) -> float``. The metrics of
        :mod:`medlens.evaluate.metrics` run vectorised; any other callable runs once per
        replicate (a ``DataError`` or ``ValueError`` there counts as undefined).
    y_true : array-like of shape (n_samples,) or (n_samples, n_labels)
    y_score : array-like
        Second argument of ``metric``: scores, probabilities or 0/1 predictions.
    groups : array-like of shape (n_samples,), default=None
        Patient ids: when a patient has several images, resample patients, not images.
    n_resamples : int, default=2000
    seed : int, Generator or None, default=0
        The same seed gives the same interval.
    confidence : float, default=0.95
    stratify : bool, default=True
        Keep the class counts (or the count of patients with a positive) fixed.

    Returns
    -------
    Estimate
        ``value`` is ``metric`` on the full data (which raises for invalid input).

    Warns
    -----
    BootstrapWarning
        When some replicates were undefined; they are left out of the percentiles.

    Examples
    --------
    >>> from medlens.evaluate import auc_score
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200); s = y + rng.normal(size=200)
    >>> e = bootstrap_ci(auc_score, y, s, n_resamples=500, seed=1)
    >>> e.low < e.value < e.high
    True
    """
    value = metric(y_true, y_score)
    reps = bootstrap_distribution(
        {"m": (metric, y_score)}, y_true, groups=groups, n_resamples=n_resamples,
        seed=seed, stratify=stratify,
    )["m"]
    return percentile_interval(reps, value, confidence=confidence, name=getattr(metric, "__name__", "metric"))
