"""How alike one patient's images are, against images of other patients: what MICLe can learn from.

Two measures, each the mean over image pairs of the same patient and over pairs of
different patients (both from the same images):

- pixels: the best normalised cross-correlation of the high-passed green (or only)
  channel over shifts of up to ``max_shift`` px, so a change of camera pose does not hide
  a shared vessel tree, and illumination does not count;
- features: the cosine similarity of an encoder's pooled features.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np


def _pairs(patients: np.ndarray, score, max_pairs: int, seed: int) -> dict:
    """Mean ``score(i, j)`` over same-patient pairs and over (sampled) different-patient pairs."""
    same = [(i, j) for i, j in itertools.combinations(range(len(patients)), 2) if patients[i] == patients[j]]
    rng = np.random.default_rng(seed)
    diff: list[tuple[int, int]] = []
    while len(diff) < min(max_pairs, len(same) * 4) and len(set(patients)) > 1:
        i, j = rng.integers(0, len(patients), 2)
        if patients[i] != patients[j]:
            diff.append((int(i), int(j)))
    same = [same[k] for k in rng.permutation(len(same))[:max_pairs]]
    s, d = [score(i, j) for i, j in same], [score(i, j) for i, j in diff]
    return {"same_patient": float(np.mean(s)) if s else float("nan"),
            "other_patients": float(np.mean(d)) if d else float("nan"), "pairs": [len(s), len(d)]}


def pixel_similarity(images: np.ndarray, patients: np.ndarray, *, max_shift: int = 8, max_pairs: int = 2000,
                     seed: int = 0) -> dict:
    """Shift-tolerant pixel similarity of same-patient and other-patient image pairs.

    Parameters
    ----------
    images : ndarray of shape (N, C, H, W)
        Images in any range; channel 1 is used when there are 3 (the fundus green), else 0.
        ``H`` and ``W`` must exceed ``2 * max_shift``.
    patients : ndarray of shape (N,)
        Patient id of each image.
    max_shift : int
        Largest camera-pose shift searched, in pixels.
    max_pairs : int
        At most this many pairs of each kind (a seeded sample).

    Returns
    -------
    dict
        ``same_patient``, ``other_patients`` (mean correlations in [-1, 1]) and ``pairs``.
    """
    c = 1 if images.shape[1] == 3 else 0
    hp = [np.ascontiguousarray(g - cv2.GaussianBlur(g, (0, 0), 4), dtype=np.float32)
          for g in np.asarray(images[:, c], np.float32)]
    m = max_shift

    def score(i: int, j: int) -> float:
        return float(cv2.matchTemplate(hp[j], np.ascontiguousarray(hp[i][m:-m, m:-m]), cv2.TM_CCOEFF_NORMED).max())

    return _pairs(np.asarray(patients), score, max_pairs, seed)


def feature_similarity(feats: np.ndarray, patients: np.ndarray, *, max_pairs: int = 2000, seed: int = 0) -> dict:
    """Mean cosine similarity of same-patient and other-patient pairs of feature vectors ``(N, D)``."""
    f = np.asarray(feats, np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return _pairs(np.asarray(patients), lambda i, j: float(f[i] @ f[j]), max_pairs, seed)
