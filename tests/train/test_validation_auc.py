"""Training's validation AUC: evaluate.auc_score's arithmetic with the nan rules, against scikit-learn."""

import warnings

import numpy as np
from sklearn.metrics import roc_auc_score

from medlens.train.loop import validation_auc


def _sklearn_reference(y: np.ndarray, proba: np.ndarray) -> float:
    """What training computed before: scikit-learn, nan where a class is missing."""
    if y.ndim == 2:
        aucs = [roc_auc_score(y[:, j], proba[:, j]) for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
        return float(np.mean(aucs)) if aucs else float("nan")
    if len(np.unique(y)) < proba.shape[1]:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=np.arange(proba.shape[1])))


def _cases(seed=0):
    """Binary, multi-class (softmax, some folds missing a class) and multi-label (some one-class columns),
    with scores rounded to 1-3 decimals so that ties are common."""
    rng = np.random.default_rng(seed)
    for i in range(300):
        n, k, decimals = int(rng.integers(2, 120)), int(rng.integers(2, 6)), int(rng.integers(1, 4))
        if i % 3 == 0:
            y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(int)
            s = (np.clip(0.3 * y + rng.random(n), 0, 1.3) / 1.3).round(decimals)
            yield y, np.stack([1 - s, s], 1)
        elif i % 3 == 1:
            y = rng.integers(0, k + (i % 5 == 0), n).clip(0, k - 1)
            logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y] * rng.uniform(0, 1)
            p = np.exp(logits.round(decimals))
            yield y, p / p.sum(1, keepdims=True)
        else:
            y = (rng.random((n, k)) < rng.uniform(0.02, 0.6, k)).astype(int)
            if i % 4 == 2:
                y[:, 0] = 0
            if i % 8 == 2:
                y[:, -1] = 1
            yield y, (1 / (1 + np.exp(-(rng.normal(size=(n, k)) + y)))).round(decimals)


def test_validation_auc_equals_scikit_learn():
    n_nan = n_num = 0
    for y, p in _cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn warns on a one-class column
            ref = _sklearn_reference(y, p)
        got = validation_auc(y, p)
        if np.isnan(ref):
            assert np.isnan(got)
            n_nan += 1
        else:
            assert abs(got - ref) <= 1e-12, (got, ref)
            n_num += 1
    assert n_num > 250 and n_nan >= 5


def test_validation_auc_rules():
    assert validation_auc(np.array([0, 0, 1, 1]), np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])) == 0.75
    assert validation_auc(np.array([0, 1, 0, 1]), np.full((4, 2), 0.5)) == 0.5  # all tied
    assert np.isnan(validation_auc(np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9]])))
    assert np.isnan(validation_auc(np.array([0, 1, 0, 1, 1]), np.array([[0.6, 0.3, 0.1]] * 5)))  # class 2 missing
    y = np.array([[0, 1], [0, 0], [0, 1], [0, 0]])  # label 0 has one class: left out of the mean
    assert validation_auc(y, np.array([[0.3, 0.9], [0.2, 0.1], [0.9, 0.7], [0.1, 0.8]])) == 0.75
    assert np.isnan(validation_auc(np.zeros((4, 3), int), np.random.default_rng(1).random((4, 3))))
