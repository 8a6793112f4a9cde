"""Penultimate features, logits and MC-dropout samples from a run's fold models.

timm networks expose ``forward_features`` and ``forward_head(..., pre_logits=True)``: the
pooled penultimate features, which the Mahalanobis OOD detector models, and
``get_classifier()``: the last linear layer. MC dropout (Gal & Ghahramani 2016) needs no
dropout in the trained network: dropout is applied to the pooled features at inference
and only the head is re-run, so ``T`` passes cost one backbone forward.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from medlens.config import StudyConfig
from medlens.data.arrays import normalise
from medlens.errors import StageInputMissing

log = logging.getLogger(__name__)


def fold_count(run: Path) -> int:
    """Number of trained folds in a run directory (``fold_k/model.safetensors``)."""
    k = 0
    while (run / f"fold_{k}" / "model.safetensors").is_file():
        k += 1
    if k == 0:
        raise StageInputMissing(f"{run}: no fold_0/model.safetensors; train the study first with `medlens run CONFIG`")
    return k


def load_fold_model(run: Path, cfg: StudyConfig, k: int) -> torch.nn.Module:
    """Rebuild fold ``k``'s network from ``cfg.model`` and load ``fold_k/model.safetensors`` (eval mode)."""
    from safetensors.torch import load_file

    from medlens.models import create_model

    path = run / f"fold_{k}" / "model.safetensors"
    if not path.is_file():
        raise StageInputMissing(f"{path} not found; train the study first with `medlens run CONFIG`")
    state = load_file(str(path))
    with torch.device("meta"):  # no weight initialisation: every tensor comes from the file
        model = create_model(cfg.model.name, num_classes=2, in_chans=cfg.model.in_chans, image_size=cfg.train.image_size)
        head_weight = f"{model.pretrained_cfg.get('classifier', 'fc')}.weight"
        n_classes = int(state[head_weight].shape[0]) if head_weight in state else 2
        if n_classes != 2:
            model = create_model(cfg.model.name, num_classes=n_classes, in_chans=cfg.model.in_chans,
                                 image_size=cfg.train.image_size)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise StageInputMissing(f"{path} lacks {len(missing)} tensor(s) of {cfg.model.name} (e.g. {sorted(missing)[0]}); "
                                "was it trained with another model.name?")
    model.load_state_dict(state, assign=True)
    return model.eval()


def load_images(manifest: pd.DataFrame, cfg: StudyConfig) -> torch.Tensor:
    """The rows' images prepared exactly as for training: uint8 ``N×C×S×S``."""
    from medlens.data.transforms import load_prepared

    return load_prepared(manifest, size=cfg.train.image_size, in_chans=cfg.model.in_chans,
                         preprocess=cfg.engine.preprocess)


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
def mc_dropout_proba(model: torch.nn.Module, features: np.ndarray, *, p: float, samples: int, seed: int) -> np.ndarray:
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
    """
    head = model.get_classifier()
    f = torch.from_numpy(np.ascontiguousarray(features, np.float32))
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(samples):
        keep = (torch.rand(f.shape, generator=gen) >= p).float() / (1.0 - p)
        out.append(F.softmax(head(f * keep), 1).numpy().astype(np.float64))
    return np.stack(out)
