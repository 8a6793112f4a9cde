"""Per-prediction uncertainty from probabilities: max softmax, entropy and its decomposition.

All functions are pure NumPy on probability arrays; :mod:`medlens.trust.features` makes
the stochastic samples (MC dropout over the head, or the k fold models of a run).

The decomposition follows Depeweg et al. (2018): the entropy of the mean prediction
(total) = the mean entropy of the samples (aleatoric, noise in the data) + the mutual
information between prediction and model (epistemic, what more training data would fix).
"""

from __future__ import annotations

import numpy as np

from medlens.errors import DataError

_EPS = 1e-12


def _check_proba(p: np.ndarray, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    p = np.asarray(p, np.float64)
    if p.ndim not in ndim:
        raise DataError(f"{name} should have {' or '.join(map(str, ndim))} dimensions (..., n_classes), got shape {p.shape}")
    return p


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis.

    Parameters
    ----------
    proba : array-like of shape (..., n_classes)
        Probabilities summing to 1 over the last axis.

    Returns
    -------
    ndarray of shape (...)

    Examples
    --------
    >>> float(entropy([0.5, 0.5]).round(4))
    0.6931
    """
    p = np.asarray(proba, np.float64)
    return -(p * np.log(np.clip(p, _EPS, 1.0))).sum(-1)


def max_softmax(proba: np.ndarray) -> np.ndarray:
    """Max softmax probability (MSP): the confidence of the predicted class, shape ``(N,)``."""
    return _check_proba(proba, "proba", (2,)).max(1)


def decompose(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Split predictive uncertainty into aleatoric and epistemic parts.

    Parameters
    ----------
    samples : array-like of shape (T, N, n_classes)
        ``T`` stochastic predictions (MC-dropout passes or ensemble members) per image.

    Returns
    -------
    dict of ndarray of shape (N,)
        ``total`` (entropy of the mean), ``aleatoric`` (expected entropy) and
        ``epistemic`` (mutual information = total - aleatoric, clipped at 0); plus
        ``mean`` of shape (N, n_classes).

    Examples
    --------
    >>> s = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])  # two members disagree
    >>> float(decompose(s)["epistemic"][0].round(3))
    0.368
    """
    s = _check_proba(samples, "samples", (3,))
    mean = s.mean(0)
    total = entropy(mean)
    aleatoric = entropy(s).mean(0)
    return {"mean": mean, "total": total, "aleatoric": aleatoric, "epistemic": np.maximum(total - aleatoric, 0.0)}


def energy_score(logits: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """Free energy ``-T·logsumexp(logits/T)`` (Liu et al. 2020); higher means more out-of-distribution.

    Examples
    --------
    >>> float(energy_score(np.array([[0.0, 0.0]]))[0].round(4))
    -0.6931
    """
    z = np.asarray(logits, np.float64) / temperature
    m = z.max(-1, keepdims=True)
    return -temperature * (m[..., 0] + np.log(np.exp(z - m).sum(-1)))
