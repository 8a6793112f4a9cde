"""Faithfulness of heat maps: deletion and insertion curves, and ROAD.

A map is faithful when the pixels it ranks highest are the ones the model needs.

- **Deletion** (Petsiuk et al., RISE 2018): remove the most important pixels first
  (set to black, the fundus background) in ``steps`` equal increments and record the
  target-class probability; a faithful map makes it fall fast (low AUC is better).
- **Insertion**: start from a blurred copy and put the original pixels back, most
  important first; a faithful map makes the probability rise fast (high AUC is better).
- **ROAD** (Rong et al. 2022, via pytorch-grad-cam): removal with noisy linear
  imputation, which avoids the out-of-distribution artefacts of black/blur filling;
  the combined score (LeRF - MoRF)/2 is higher for a more faithful map.

Curves are evaluated for every image in one batch per step, so the cost is
``steps + 1`` forward passes per batch of images.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from medlens.data.arrays import MEAN, STD
from medlens.errors import DataError


def _probs(model: torch.nn.Module, x01: torch.Tensor, classes: np.ndarray) -> np.ndarray:
    """Softmax probability of each image's class ``classes`` ``(B,)``."""
    with torch.no_grad():
        p = F.softmax(model((x01 - MEAN) / STD), 1)
    return p[torch.arange(len(p)), torch.from_numpy(classes)].numpy().astype(np.float64)


def _blur(x01: torch.Tensor) -> torch.Tensor:
    s = x01.shape[-1]
    out = np.stack([cv2.GaussianBlur(img.transpose(1, 2, 0), (0, 0), max(1.0, s / 8)).reshape(s, s, -1).transpose(2, 0, 1)
                    for img in x01.numpy()])
    return torch.from_numpy(np.ascontiguousarray(out, np.float32))


def deletion_insertion_curves(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    *,
    target_class: int | np.ndarray = 1,
    steps: int = 16,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Target-class probability as the top-ranked pixels are deleted / inserted.

    Parameters
    ----------
    model : torch.nn.Module
    images : uint8 tensor of shape (N, C, S, S)
    maps : ndarray of shape (N, S, S)
        Heat maps; higher = more important.
    target_class : int or ndarray of shape (N,), default=1
        One class for all images, or each image's explained class.
    steps : int, default=16
        Number of increments; curves have ``steps + 1`` points at fractions 0, 1/steps, …, 1.
    batch_size : int, default=64

    Returns
    -------
    deletion, insertion : ndarray of shape (N, steps + 1)
    """
    maps = np.asarray(maps, np.float32)
    if images.ndim != 4 or maps.shape != (images.shape[0], images.shape[2], images.shape[3]):
        raise DataError(f"maps must be N×H×W matching images {tuple(images.shape)}, got {maps.shape}")
    if steps < 1:
        raise DataError(f"steps must be >= 1, got {steps}")
    model.eval()
    n, _, h, w = images.shape
    classes = np.array(np.broadcast_to(np.asarray(target_class, dtype=np.int64), (n,)))  # writable: torch.from_numpy
    dele = np.empty((n, steps + 1))
    ins = np.empty((n, steps + 1))
    for i in range(0, n, batch_size):
        x = images[i:i + batch_size].float() / 255.0
        blurred = _blur(x)
        order = np.argsort(-maps[i:i + batch_size].reshape(len(x), -1), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(h * w)[None, :].repeat(len(x), 0), axis=1)
        rank = torch.from_numpy(rank.reshape(len(x), 1, h, w))
        for k in range(steps + 1):
            top = rank < round(k / steps * h * w)
            c = classes[i:i + len(x)]
            dele[i:i + len(x), k] = _probs(model, torch.where(top, torch.zeros_like(x), x), c)
            ins[i:i + len(x), k] = _probs(model, torch.where(top, x, blurred), c)
    return dele, ins


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve over the fraction axis [0, 1] (trapezoid rule)."""
    curves = np.atleast_2d(np.asarray(curves, np.float64))
    dx = 1.0 / (curves.shape[1] - 1)
    return (curves[:, 1:] + curves[:, :-1]).sum(1) * dx / 2


def road_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    maps: np.ndarray,
    *,
    target_class: int | np.ndarray = 1,
    percentiles: tuple[int, ...] = (20, 40, 60, 80),
) -> np.ndarray:
    """ROAD combined score per image ((LeRF - MoRF) / 2 of the target-class probability; higher = more faithful).

    Uses pytorch-grad-cam's ``ROADCombined`` (noisy linear imputation: one sparse solve per
    image and percentile, so keep ``images`` to a few dozen).
    """
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model.eval()
    x = (images.float() / 255.0 - MEAN) / STD
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in np.broadcast_to(np.asarray(target_class), (len(x),))]
    scores = ROADCombined(percentiles=list(percentiles))(x, np.asarray(maps, np.float32), targets, model)
    return np.asarray(scores, np.float64).reshape(len(x))
