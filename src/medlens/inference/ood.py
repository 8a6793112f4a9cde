"""THE out-of-distribution gate: Mahalanobis distance on penultimate features, class-conditional means.

One detector, fitted the same way wherever it is fitted: the trust audit fits it on the fold
models' features (``run/trust/``), the export on the shipped ONNX graph's ``features`` output
(``run/export/``, what ``medlens serve`` loads), both with :func:`fit_fold_detectors` on the
same images.

Lee et al. (2018): each class ``c`` is a Gaussian with its own mean ``mu_c`` and one shared
covariance, fitted on the *training* features of a fold model; the score of an image is
``min_c sqrt((f - mu_c)^T P (f - mu_c))`` with ``P`` the (Ledoit-Wolf shrunk) precision, so
a few hundred images suffice for 512-dimensional features. The threshold is the
``pass_rate`` quantile of the scores of that fold's *validation* images (never seen in
training): at 0.95, about 95% of in-distribution images pass the gate.

Saved in a folder as ``ood.safetensors`` (tensors ``fold_k.means``, ``fold_k.precision``) plus
``ood.json`` (thresholds, feature size and how the features were computed), and loaded
with :func:`load_detectors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.errors import DataError, StageInputMissing

OOD_WEIGHTS = "ood.safetensors"
OOD_META = "ood.json"


@dataclass(frozen=True)
class MahalanobisDetector:
    """Class means ``(K, D)``, shared precision ``(D, D)`` and the threshold of one fold model.

    ``score`` is the Mahalanobis distance to the closest class mean; ``is_ood`` is
    ``score > threshold``.
    """

    means: np.ndarray
    precision: np.ndarray
    threshold: float = float("inf")

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance ``(N,)`` of each row of ``features`` ``(N, D)``; higher is more out-of-distribution."""
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or f.shape[1] != self.means.shape[1]:
            raise DataError(f"features should have shape (N, {self.means.shape[1]}), got {f.shape}")
        fp = f @ self.precision
        mp = self.means @ self.precision
        d2 = (fp * f).sum(1)[:, None] - 2 * f @ mp.T + (mp * self.means).sum(1)[None, :]
        return np.sqrt(np.maximum(d2.min(1), 0.0))

    def is_ood(self, features: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: True where the image should not be given to the classifier."""
        return self.score(features) > self.threshold


@dataclass(frozen=True)
class EnsembleDetector:
    """The fold detectors together, for the k-model ensemble (e.g. the exported ONNX model).

    ``features`` are the members' features concatenated in fold order, ``(N, k·D)``. Each
    member's distance is divided by its own threshold; ``score`` is their mean, so the
    threshold is 1.0 (an image passes when, on average, it is inside every member's gate).
    """

    members: tuple[MahalanobisDetector, ...]
    threshold: float = 1.0

    def score(self, features: np.ndarray) -> np.ndarray:
        """Mean threshold-normalised distance ``(N,)``; above 1 is out-of-distribution."""
        f = np.asarray(features, np.float64)
        d = self.members[0].means.shape[1]
        if f.ndim != 2 or f.shape[1] != d * len(self.members):
            raise DataError(f"features should have shape (N, {d * len(self.members)}) "
                            f"({len(self.members)} members × {d}), got {f.shape}")
        parts = [m.score(f[:, i * d:(i + 1) * d]) / m.threshold for i, m in enumerate(self.members)]
        return np.mean(parts, axis=0)

    def is_ood(self, features: np.ndarray) -> np.ndarray:
        """Boolean ``(N,)``: True where the image should not be given to the classifier."""
        return self.score(features) > self.threshold


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray) -> MahalanobisDetector:
    """Fit class means and a shared, shrunk precision on training features (threshold unset).

    Parameters
    ----------
    features : array-like of shape (N, D)
        Penultimate features of the images the model was trained on.
    labels : array-like of shape (N,)
        Class index per row; every class present gets a mean.
    """
    from sklearn.covariance import LedoitWolf

    f = np.asarray(features, np.float64)
    y = np.asarray(labels).astype(int)
    if f.ndim != 2 or len(f) != len(y) or len(f) < 2:
        raise DataError(f"need features (N, D) and N labels with N >= 2, got {f.shape} and {y.shape}")
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    return MahalanobisDetector(means=means, precision=lw.precision_)


def threshold_at_pass_rate(scores: np.ndarray, pass_rate: float) -> float:
    """The score below which ``pass_rate`` of the given in-distribution ``scores`` fall.

    Examples
    --------
    >>> threshold_at_pass_rate(np.arange(101.0), 0.95)
    95.0
    """
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        raise DataError("no validation scores to choose the OOD threshold on")
    return float(np.quantile(s, pass_rate))


def at_most(ids: list[str], n: int, *, seed: int) -> list[str]:
    """A seeded random subset of at most ``n`` of ``ids`` (all of them, in order, when there are fewer).

    The gates' class means and covariance need thousands of training images, not a large
    data set's hundred thousand forward passes (:func:`gate_ids`).
    """
    if len(ids) <= n:
        return list(ids)
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return [ids[i] for i in keep]


def gate_ids(splits: dict, folds: list[int], n: int, *, seed: int) -> list[tuple[list[str], list[str]]]:
    """The images each fold member's gate is fitted on and thresholded on, as ``(fit_ids, threshold_ids)``.

    Fit: fold ``k``'s training images within one seeded subset of at most ``n`` development
    images (shared by all folds, so k folds need at most ``n`` extra forward passes).
    Threshold: at most ``n`` of fold ``k``'s validation images (seed ``seed + k``).

    Parameters
    ----------
    splits : dict
        ``splits.json`` (``folds[k]["train"]``, ``folds[k]["val"]``).
    folds : list of int
        The members, in the order of the ensemble.
    n : int
        ``trust.ood_fit_images``.
    """
    dev = sorted({s for f in splits["folds"] for s in f["train"] + f["val"]})
    pool = set(at_most(dev, n, seed=seed))
    return [([s for s in splits["folds"][k]["train"] if s in pool],
             at_most(list(splits["folds"][k]["val"]), n, seed=seed + k)) for k in folds]


def gate_meta(n: int, pass_rate: float, features: str) -> dict:
    """How a gate was fitted, for its ``ood.json``: the same words wherever :func:`gate_ids` chose the images."""
    return {"pass_rate": pass_rate, "features": features,
            "fitted_on": f"fold_k train images within a seeded subset of at most {n} development images; threshold: "
                         f"{pass_rate:.0%} of (at most {n} of) fold_k's val images pass",
            "ensemble": "features of all folds concatenated in fold order (the exported ensemble's `features` "
                        "output); score = mean of distance/threshold over folds, OOD above 1.0"}


def fit_fold_detectors(features: np.ndarray, labels: np.ndarray, fit_rows: list[list[int]],
                       threshold_rows: list[list[int]], pass_rate: float) -> list[MahalanobisDetector]:
    """One detector per fold model: fitted on its training rows, thresholded on its validation rows.

    Parameters
    ----------
    features : ndarray of shape (N, k·D)
        Every fold model's features of the same N images, concatenated in fold order (the
        exported ensemble's ``features`` output); with one fold, ``(N, D)``.
    labels : ndarray of shape (N,)
        Class index per image (the class-conditional means).
    fit_rows, threshold_rows : list of k lists of row indices
        Fold ``j``'s training images (never its validation images) and validation images.
    pass_rate : float
        Fraction of each fold's validation images that pass its gate.
    """
    k = len(fit_rows)
    f = np.asarray(features, np.float64)
    if k == 0 or len(threshold_rows) != k or f.ndim != 2 or f.shape[1] % k:
        raise DataError(f"features {f.shape} cannot be split into {k} fold members with {len(threshold_rows)} "
                        "validation sets")
    d, y = f.shape[1] // k, np.asarray(labels).astype(int)
    out = []
    for j in range(k):
        member = f[:, j * d:(j + 1) * d]
        det = fit_mahalanobis(member[fit_rows[j]], y[fit_rows[j]])
        thr = threshold_at_pass_rate(det.score(member[threshold_rows[j]]), pass_rate)
        out.append(MahalanobisDetector(det.means, det.precision, thr))
    return out


def save_detectors(folder: Path, detectors: list[MahalanobisDetector], meta: dict) -> Path:
    """Write ``ood.safetensors`` and ``ood.json`` into ``folder``; returns the json path."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, det in enumerate(detectors):
        tensors[f"fold_{k}.means"] = np.ascontiguousarray(det.means, np.float64)
        tensors[f"fold_{k}.precision"] = np.ascontiguousarray(det.precision, np.float64)
    save_file(tensors, str(folder / OOD_WEIGHTS))
    info = {**meta, "folds": len(detectors), "thresholds": [float(d.threshold) for d in detectors],
            "n_features": int(detectors[0].means.shape[1]), "score": "mahalanobis distance to the closest class mean",
            "weights": OOD_WEIGHTS}
    path = folder / OOD_META
    path.write_text(json.dumps(info, indent=1, sort_keys=True))
    return path


def load_detectors(folder: str | Path, fold: int | None = None, *,
                   written_by: str = "medlens audit RUN") -> MahalanobisDetector | EnsembleDetector:
    """Load the gate saved in ``folder`` (``run/trust`` by the audit, ``run/export`` by the export).

    Parameters
    ----------
    folder : path
        Holds ``ood.safetensors`` and ``ood.json``.
    fold : int, optional
        One member's detector (features ``(N, D)`` of that fold model); None gives the
        :class:`EnsembleDetector` over all members (features concatenated in fold order,
        ``(N, k·D)``, as the exported ensemble's ``features`` output).
    written_by : str
        The command that writes ``folder``, named in the error when it is missing.

    Returns
    -------
    MahalanobisDetector or EnsembleDetector
        With ``.score(features)``, ``.is_ood(features)`` and ``.threshold``. Features are
        ``model.forward_head(model.forward_features(x), pre_logits=True)`` for ``x`` the
        image prepared and normalised as in training (``ood.json`` records how).
    """
    from safetensors.numpy import load_file

    folder = Path(folder)
    meta_path = folder / OOD_META
    if not meta_path.is_file() or not (folder / OOD_WEIGHTS).is_file():
        raise StageInputMissing(f"{meta_path} not found; run `{written_by}` first")
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(folder / OOD_WEIGHTS))
    dets = tuple(MahalanobisDetector(tensors[f"fold_{k}.means"], tensors[f"fold_{k}.precision"], meta["thresholds"][k])
                 for k in range(meta["folds"]))
    if fold is None:
        return EnsembleDetector(dets)
    if not 0 <= fold < len(dets):
        raise DataError(f"fold {fold} not in the OOD file: it has folds 0-{len(dets) - 1}")
    return dets[fold]
