"""Image transforms: random augmentation on batches (flip, rotation, brightness/contrast,
mixup, cutmix); images are prepared once by :class:`medlens.data.preprocess.Preprocess`
into the run's image cache (:mod:`medlens.data.cache`).

Augmentation runs on normalised float batches inside the training
step and draws every random number from one ``torch.Generator``, so an epoch is
reproducible and a resumed run continues the same random stream.

Images follow the medlens contract: float32 ``C×H×W`` in [0, 1]; boxes are
``(x0, y0, x1, y1)`` in pixels of the original image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medlens.data.arrays import normalise, resize, to_channels
from medlens.config.engine import AugmentConfig

__all__ = ["rms_contrast", "random_augment", "mixup",
           "cutmix", "one_hot", "normalise", "resize", "to_channels"]


def rms_contrast(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root-mean-square contrast: standard deviation of the channel-mean intensity (inside ``mask``)."""
    grey = img.mean(0)
    return float(grey[mask].std() if mask is not None else grey.std())


def _affine(batch: torch.Tensor, degrees: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate, zoom and shift each image of an ``N×C×H×W`` batch about its centre (bilinear, zero fill).

    ``degrees`` and ``zoom`` are ``(N,)`` (zoom > 1 enlarges); ``shift`` is ``(N, 2)`` in units of the
    image side (x, y). One resampling for all three.
    """
    rad = degrees * (math.pi / 180)
    cos, sin = torch.cos(rad) / zoom, torch.sin(rad) / zoom
    tx, ty = -2 * shift[:, 0], -2 * shift[:, 1]
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(batch.dtype), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_augment(batch: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Random flips, rotation/zoom/shift and brightness/contrast on a normalised float batch ``N×C×H×W``.

    Random numbers come from ``gen`` in a fixed order (flips, rotation, zoom, shift, gain, bias); a
    disabled augmentation draws nothing, so settings that leave the new ones off reproduce the
    batches of earlier versions.
    """
    n = batch.shape[0]
    out = None  # a new tensor once anything changed the batch; later steps then work in place
    if cfg.flip:
        # indices drawn on the CPU and copied over: no device-to-host sync, one batch-sized copy
        out = batch.clone()
        flip_h = (torch.rand(n, generator=gen) < 0.5).nonzero().squeeze(1).to(batch.device)
        out[flip_h] = batch[flip_h].flip(3)
        if cfg.vertical_flip:
            flip_v = (torch.rand(n, generator=gen) < 0.5).nonzero().squeeze(1).to(batch.device)
            out[flip_v] = out[flip_v].flip(2)
    if cfg.rotation > 0 or cfg.scale > 0 or cfg.translate > 0:
        def draw(shape: tuple[int, ...], half_width: float) -> torch.Tensor:
            if half_width <= 0:
                return torch.zeros(shape)
            return (torch.rand(shape, generator=gen) * 2 - 1) * half_width

        degrees, zoom = draw((n,), cfg.rotation), 1 + draw((n,), cfg.scale)
        shift = draw((n, 2), cfg.translate)
        out = _affine(batch if out is None else out, degrees.to(batch.device), zoom.to(batch.device),
                      shift.to(batch.device))
    if cfg.contrast > 0 or cfg.brightness > 0:
        gain = (1 + (2 * cfg.contrast) * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)).to(batch.device)
        bias = ((2 * cfg.brightness) * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)).to(batch.device)
        out = batch * gain + bias if out is None else out.mul_(gain).add_(bias)
    return batch if out is None else out


def one_hot(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer labels ``(N,)`` -> float one-hot ``(N, K)``."""
    return F.one_hot(y.long(), num_classes).float()


def _beta(gen: torch.Generator, alpha: float) -> float:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *, alpha: float = 0.4
          ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Blend each image and its target with a random partner: ``λ·a + (1-λ)·b``, λ ~ Beta(α, α).

    Parameters
    ----------
    x : tensor (N, C, H, W)
    y : tensor (N, K)
        Soft or one-hot targets; rows that sum to 1 still sum to 1 after mixing.
    gen : torch.Generator
    alpha : float, default=0.4

    Returns
    -------
    (mixed images, mixed targets, λ)
    """
    lam = _beta(gen, alpha)
    perm = torch.randperm(x.shape[0], generator=gen)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm], lam


def cutmix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *, alpha: float = 1.0
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a random box from a partner image; targets mix by the pasted area.

    The box covers a share ``1-λ`` of the image (λ ~ Beta(α, α)); the returned λ is the
    share actually kept after clipping the box at the border, so targets stay exact.
    """
    lam = _beta(gen, alpha)
    perm = torch.randperm(x.shape[0], generator=gen)
    h, w = x.shape[2:]
    cy, cx = (int(v) for v in (torch.randint(0, h, (1,), generator=gen), torch.randint(0, w, (1,), generator=gen)))
    bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    y0, y1 = max(0, cy - bh // 2), min(h, cy + bh // 2)
    x0, x1 = max(0, cx - bw // 2), min(w, cx + bw // 2)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
    kept = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, kept * y + (1 - kept) * y[perm], kept
