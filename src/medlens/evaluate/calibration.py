"""Calibration: Brier score, expected calibration error, reliability curve, temperature.

Fit the temperature on validation data and apply it, unchanged, to the test set.
Binary inputs are probabilities of the positive class, shape (n_samples,); multi-class
inputs are arrays of shape (n_samples, n_classes) and are judged on the top-label
confidence.

References
----------
Guo C, Pleiss G, Sun Y, Weinberger KQ. On calibration of modern neural networks.
ICML 2017.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax, logit

from medlens.errors import DataError, did_you_mean
from medlens.evaluate import _validation as v

__all__ = [
    "ReliabilityCurve",
    "apply_platt",
    "calibrate_proba",
    "fit_calibration",
    "apply_temperature",
    "brier_score_loss",
    "expected_calibration_error",
    "fit_platt",
    "fit_temperature",
    "fit_bias_temperature",
    "reliability_curve",
]

_STRATEGIES = ("uniform", "quantile")
_KINDS = ("logits", "probabilities")
_EPS = 1e-12


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin calibration data (empty bins are dropped).

    Attributes
    ----------
    mean_predicted : ndarray
        Mean predicted probability (confidence) in each bin.
    fraction_positive : ndarray
        Observed fraction of positives (accuracy for multi-class) in each bin.
    counts : ndarray
        Number of samples in each bin.
    bin_edges : ndarray
        All ``n_bins + 1`` edges, including those of empty bins.
    """

    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    counts: np.ndarray
    bin_edges: np.ndarray


def _probabilities(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """Return (confidence, correct-or-positive) pairs for binary or multi-class input."""
    p = np.asarray(y_prob)
    if p.ndim == 2:
        y = v.class_labels(y_true)
        p = v.scores(p, y.shape[0], name="y_prob", ndim=(2,))
        if y.max() >= p.shape[1]:
            raise DataError(f"y_true holds class {y.max()} but y_prob has {p.shape[1]} columns.")
        outcome, conf = (np.argmax(p, axis=1) == y).astype(np.float64), np.max(p, axis=1)
    else:
        y = v.binary_labels(y_true)
        conf = v.scores(p, y.shape[0], name="y_prob")
        outcome = y.astype(np.float64)
    if np.any(conf < 0) or np.any(conf > 1):
        raise DataError(
            "y_prob must hold probabilities in [0, 1]; got values outside. "
            "Apply a sigmoid or softmax to logits first."
        )
    return conf, outcome


def brier_score_loss(y_true, y_prob) -> float:
    """Brier score of binary probabilities: ``mean((y_prob - y_true)^2)``; lower is better.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class.

    Returns
    -------
    float

    Examples
    --------
    >>> round(brier_score_loss([0, 1, 1], [0.1, 0.9, 0.6]), 4)
    0.06
    """
    y = v.binary_labels(y_true)
    p, _ = _probabilities(y, y_prob)
    return float(np.mean((p - y) ** 2))


def _bin_index(conf: np.ndarray, n_bins: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    if strategy not in _STRATEGIES:
        raise DataError(
            f"strategy must be one of {', '.join(_STRATEGIES)}; got {strategy!r}."
            f"{did_you_mean(str(strategy), _STRATEGIES)}"
        )
    if int(n_bins) < 1:
        raise DataError(f"n_bins must be a positive integer; got {n_bins}.")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    else:
        edges = np.quantile(conf, np.linspace(0.0, 1.0, int(n_bins) + 1))
    return np.searchsorted(edges[1:-1], conf), edges


def reliability_curve(y_true, y_prob, *, n_bins: int = 10, strategy: str = "uniform") -> ReliabilityCurve:
    """Data of a reliability diagram (as :func:`sklearn.calibration.calibration_curve`).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels, or class indices for a 2-D ``y_prob``.
    y_prob : array-like of shape (n_samples,) or (n_samples, n_classes)
        Probabilities.
    n_bins : int, default=10
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width bins, or equal-count (adaptive) bins.

    Returns
    -------
    ReliabilityCurve
    """
    conf, outcome = _probabilities(y_true, y_prob)
    idx, edges = _bin_index(conf, n_bins, strategy)
    k = edges.size - 1
    counts = np.bincount(idx, minlength=k)
    sum_conf = np.bincount(idx, weights=conf, minlength=k)
    sum_out = np.bincount(idx, weights=outcome, minlength=k)
    nz = counts > 0
    return ReliabilityCurve(sum_conf[nz] / counts[nz], sum_out[nz] / counts[nz], counts[nz], edges)


def expected_calibration_error(y_true, y_prob, *, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Expected calibration error: ``sum_b (n_b / n) * |observed_b - predicted_b|``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        0/1 labels, or class indices for a 2-D ``y_prob``.
    y_prob : array-like of shape (n_samples,) or (n_samples, n_classes)
        Binary: probability of the positive class. Multi-class: top-label confidence.
    n_bins : int, default=15
    strategy : {"uniform", "quantile"}, default="uniform"
        ``"quantile"`` gives the adaptive ECE (equal-count bins).

    Returns
    -------
    float
        In [0, 1]; lower is better.

    Examples
    --------
    >>> round(expected_calibration_error([0, 1, 1, 0], [0.2, 0.8, 0.8, 0.2], n_bins=5), 4)
    0.2
    """
    curve = reliability_curve(y_true, y_prob, n_bins=n_bins, strategy=strategy)
    gap = np.abs(curve.fraction_positive - curve.mean_predicted)
    return float(np.sum(curve.counts * gap) / np.sum(curve.counts))


def _as_logits(y_score, kind: str, n: int) -> np.ndarray:
    if kind not in _KINDS:
        raise DataError(f"kind must be one of {', '.join(_KINDS)}; got {kind!r}.{did_you_mean(str(kind), _KINDS)}")
    z = v.scores(y_score, n, ndim=(1, 2))
    if kind == "probabilities":
        if np.any(z < 0) or np.any(z > 1):
            raise DataError("kind='probabilities' but y_score has values outside [0, 1].")
        z = np.clip(z, _EPS, 1 - _EPS)
        z = logit(z) if z.ndim == 1 else np.log(z)
    return z


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    if z.ndim == 1:  # binary: -[y log s(z) + (1-y) log(1 - s(z))] = softplus(z) - y z
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    return float(-np.mean(log_softmax(z, axis=1)[np.arange(y.size), y]))


def fit_temperature(y_true, y_score, *, kind: str = "logits") -> float:
    """Fit the temperature ``T`` that minimises the validation negative log-likelihood.

    Calibrated probabilities are ``sigmoid(z / T)`` (binary) or ``softmax(z / T)``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Validation labels: 0/1, or class indices for 2-D scores.
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Validation logits, or probabilities with ``kind="probabilities"`` (converted to
        logits, resp. log-probabilities).
    kind : {"logits", "probabilities"}, default="logits"

    Returns
    -------
    float
        ``T > 0``; ``T > 1`` softens over-confident scores. Searched in [0.01, 100].
    """
    arr = np.asarray(y_score)
    y = (v.class_labels(y_true) if arr.ndim == 2 else v.binary_labels(y_true).astype(np.float64))
    z = _as_logits(arr, kind, y.shape[0])
    if z.ndim == 2 and y.max() >= z.shape[1]:
        raise DataError(f"y_true holds class {int(y.max())} but y_score has {z.shape[1]} columns.")
    res = minimize_scalar(lambda log_t: _nll(z / np.exp(log_t), y), bounds=(np.log(0.01), np.log(100.0)),
                          method="bounded", options={"xatol": 1e-8})
    return float(np.exp(res.x))


def apply_temperature(y_score, temperature: float, *, kind: str = "logits") -> np.ndarray:
    """Probabilities after temperature scaling with a fitted ``temperature``.

    Parameters
    ----------
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Logits (or probabilities with ``kind="probabilities"``).
    temperature : float
        From :func:`fit_temperature` on validation data.
    kind : {"logits", "probabilities"}, default="logits"

    Returns
    -------
    ndarray
        Probability of the positive class (1-D) or class probabilities (2-D).
    """
    if not temperature > 0:
        raise DataError(f"temperature must be positive; got {temperature}.")
    arr = np.asarray(y_score)
    z = _as_logits(arr, kind, arr.shape[0] if arr.ndim else 0) / float(temperature)
    return expit(z) if z.ndim == 1 else np.exp(log_softmax(z, axis=1))


def fit_platt(y_true, y_score, *, kind: str = "probabilities") -> tuple[float, float]:
    """Fit Platt scaling ``p = sigmoid(a·z + b)`` by maximum likelihood on validation data.

    Unlike a temperature (``a`` only), the intercept ``b`` also corrects a shifted prior,
    e.g. the bias that class-weighted training puts on the positive class.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Validation labels (0/1, both present).
    y_score : array-like of shape (n_samples,)
        Positive-class probabilities (``kind="probabilities"``) or logits.
    kind : {"probabilities", "logits"}, default="probabilities"

    Returns
    -------
    (a, b) : tuple of float
        Unpenalised maximum-likelihood estimates (as ``LogisticRegression(penalty=None)``
        on the logit); ``a`` is bounded to [1e-3, 1e3] so the map stays increasing.
    """
    y = v.binary_labels(y_true).astype(np.float64)
    v.require_both_classes(y.astype(bool), metric="Platt scaling")
    z = _as_logits(np.asarray(y_score, np.float64), kind, y.shape[0])
    if z.ndim != 1:
        raise DataError("fit_platt takes binary scores of shape (n_samples,); use fit_temperature for classes.")

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = np.exp(theta[0]), theta[1]
        u = a * z + b
        r = expit(u) - y
        return float(np.mean(np.logaddexp(0.0, u) - y * u)), np.array([np.mean(r * z) * a, np.mean(r)])

    res = minimize(nll, np.zeros(2), jac=True, method="L-BFGS-B",
                   bounds=[(np.log(1e-3), np.log(1e3)), (-50.0, 50.0)], options={"ftol": 1e-14, "gtol": 1e-10})
    return float(np.exp(res.x[0])), float(res.x[1])


def apply_platt(y_score, a: float, b: float, *, kind: str = "probabilities") -> np.ndarray:
    """Positive-class probabilities ``sigmoid(a·z + b)`` with ``(a, b)`` from :func:`fit_platt`."""
    arr = np.asarray(y_score, np.float64)
    return expit(a * _as_logits(arr, kind, arr.shape[0] if arr.ndim else 0) + b)


def fit_bias_temperature(y_true, y_score, *, kind: str = "probabilities") -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling: ``softmax(z / T + b)`` fitted by maximum likelihood.

    The multi-class form of Platt scaling (Alexandari et al., ICML 2020): the temperature
    corrects over-confidence and the class intercepts ``b`` correct a shifted prior, such as
    the one class-weighted training puts on rare classes, so that arg-max decisions refer to
    the validation prevalence again.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Validation class indices.
    y_score : array-like of shape (n_samples, n_classes)
        Softmax probabilities (``kind="probabilities"``) or logits.
    kind : {"probabilities", "logits"}, default="probabilities"

    Returns
    -------
    (T, b) : tuple of float and ndarray of shape (n_classes,)
        ``T`` in [0.01, 100]; ``b[0] = 0`` (the intercepts are defined up to a constant).
        At the optimum the mean calibrated probability of each class equals its frequency
        in ``y_true``.
    """
    y = v.class_labels(y_true)
    z = _as_logits(np.asarray(y_score, np.float64), kind, y.shape[0])
    if z.ndim != 2:
        raise DataError("fit_bias_temperature takes class scores of shape (n_samples, n_classes).")
    k = z.shape[1]
    if y.max() >= k:
        raise DataError(f"y_true holds class {int(y.max())} but y_score has {k} columns.")
    onehot = np.eye(k)[y]

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t, b = np.exp(-theta[0]), np.concatenate([[0.0], theta[1:]])
        u = z * inv_t + b
        ls = log_softmax(u, axis=1)
        r = np.exp(ls) - onehot  # d nll / d u, per sample
        grad_t = -np.mean(np.sum(r * z, axis=1)) * inv_t
        return float(-np.mean(np.sum(onehot * ls, axis=1))), np.concatenate([[grad_t], r.mean(0)[1:]])

    res = minimize(nll, np.zeros(k), jac=True, method="L-BFGS-B",
                   bounds=[(np.log(0.01), np.log(100.0))] + [(-50.0, 50.0)] * (k - 1),
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 1000})
    return float(np.exp(res.x[0])), np.concatenate([[0.0], res.x[1:]])


def fit_calibration(y_true, proba, method: str = "platt") -> dict:
    """Fit one model's calibration on its validation predictions.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class indices.
    proba : array-like of shape (n_samples, n_classes)
        The model's softmax probabilities.
    method : {"platt", "temperature", "none"}
        Platt scaling (slope and intercept; for more than two classes a temperature and
        class intercepts, :func:`fit_bias_temperature`), a temperature alone, or nothing.

    Returns
    -------
    dict
        ``{"method": "platt", "a", "b"}``, ``{"method": "bias_temperature", "temperature",
        "bias"}``, ``{"method": "temperature", "temperature"}`` or ``{"method": "none"}``;
        pass it to :func:`calibrate_proba`.
    """
    p = np.asarray(proba, np.float64)
    if method == "none":
        return {"method": "none"}
    if method == "platt" and p.shape[1] == 2:
        a, b = fit_platt(y_true, p[:, 1])
        return {"method": "platt", "a": a, "b": b}
    if method == "platt":
        t, bias = fit_bias_temperature(y_true, p)
        return {"method": "bias_temperature", "temperature": t, "bias": bias.tolist()}
    if method != "temperature":
        raise DataError(f"calibration must be platt, temperature or none; got {method!r}")
    return {"method": "temperature", "temperature": fit_temperature(y_true, p, kind="probabilities")}


def calibrate_proba(proba, params: dict) -> np.ndarray:
    """Apply :func:`fit_calibration`'s parameters to softmax probabilities ``(N, K)`` -> ``(N, K)``.

    Platt: ``p1 = sigmoid(a·log(p1/p0) + b)``; temperature: ``softmax(log p / T)``;
    bias and temperature: ``softmax(log p / T + b)``.
    """
    p = np.asarray(proba, np.float64)
    if params["method"] == "none":
        return p
    if params["method"] == "platt":
        z = np.log(np.clip(p[:, 1], _EPS, None)) - np.log(np.clip(p[:, 0], _EPS, None))
        p1 = expit(params["a"] * z + params["b"])
        return np.stack([1 - p1, p1], 1)
    bias = np.asarray(params.get("bias", 0.0), np.float64)
    return np.exp(log_softmax(np.log(np.clip(p, _EPS, None)) / params["temperature"] + bias, axis=1))
