"""Penultimate features, logits and MC-dropout samples of fold models (loaded by :mod:`medlens.inference`).

timm networks expose ``forward_features`` and ``forward_head(..., pre_logits=True)``: the
pooled penultimate features, which the Mahalanobis OOD detector models, and
``get_classifier()``: the last linear layer. MC dropout (Gal & Ghahramani 2016) samples the
dropout the network was trained with (``model.drop_rate``, on the pooled features), and
only the head is re-run, so ``T`` passes cost one backbone forward.
"""

from __future__ import annotations

import logging
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medlens.config import StudyConfig
from medlens.data.arrays import normalise
from medlens.data.cache import ImageCache, build_cache
from medlens.data.preprocess import Preprocess

log = logging.getLogger(__name__)


def load_images(manifest: pd.DataFrame, cfg: StudyConfig) -> ImageCache:
    """The rows' images prepared exactly as for training, from the run's image cache (``N×C×S×S`` uint8)."""
    return build_cache(cfg.out, manifest["image"].tolist(), Preprocess.from_config(cfg))


@torch.no_grad()
def features_and_logits(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Pooled penultimate features ``(N, D)`` and logits ``(N, K)`` for a uint8 image tensor.

    ``logits == model(x)`` up to float error: the classifier is applied to the features.
    """
    model.eval()
    head = model.get_classifier()
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        f = model.forward_head(model.forward_features(normalise(images[i:i + batch_size])), pre_logits=True)
        feats.append(f.float())
        logits.append(head(f).float())
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


@torch.no_grad()
def mc_dropout_proba(model: torch.nn.Module, features: np.ndarray, *, p: float, samples: int, seed: int,
                     calibration: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """MC-dropout softmax samples ``(T, N, K)``: dropout ``p`` on the features, then the classifier.

    Parameters
    ----------
    model : timm network
        Only ``get_classifier()`` is used.
    features : ndarray of shape (N, D)
        From :func:`features_and_logits`.
    p : float
        Drop probability in (0, 1); kept units are scaled by ``1/(1-p)`` (inverted dropout).
    samples : int
        Number of passes ``T``.
    seed : int
        Same seed, same masks.
    calibration : (W, c), optional
        The fold's calibration (:func:`medlens.inference.calibration_matrix`), applied to each pass.
    """
    head = model.get_classifier()
    f = torch.from_numpy(np.ascontiguousarray(features, np.float32))
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(samples):
        keep = (torch.rand(f.shape, generator=gen) >= p).float() / (1.0 - p)
        z = head(f * keep)
        if calibration is not None:
            z = z @ calibration[0] + calibration[1]
        out.append(F.softmax(z, 1).numpy().astype(np.float64))
    return np.stack(out)
