"""Images of a manifest as one in-memory uint8 tensor at training size.

Medical-image study data sets are small (hundreds to tens of thousands of images), so
decoding and resizing once, then augmenting batches on the tensor, is far faster than a
per-epoch file loader and makes epochs deterministic.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import torch

from medlens.data.images import load_image

MEAN, STD = 0.5, 0.25
"""Normalisation applied to [0, 1] images before the network (recorded with the model)."""


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``C×H×W`` float image to ``C×size×size``, keeping aspect ratio and zero-padding."""
    c, h, w = img.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    hwc = cv2.resize(img.transpose(1, 2, 0), (nw, nh), interpolation=interp).reshape(nh, nw, c)
    out = np.zeros((size, size, c), np.float32)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = hwc
    return out.transpose(2, 0, 1)


def to_channels(img: np.ndarray, in_chans: int) -> np.ndarray:
    """Repeat a grey image to 3 channels, or average RGB to 1, to match the network."""
    if img.shape[0] == in_chans:
        return img
    if in_chans == 3:
        return np.repeat(img, 3, axis=0)
    return img.mean(0, keepdims=True)


def load_tensor(manifest: pd.DataFrame, *, size: int, in_chans: int) -> torch.Tensor:
    """Decode, resize and stack the manifest's images: uint8 tensor ``N×C×size×size``."""
    out = np.empty((len(manifest), in_chans, size, size), np.uint8)
    for i, ref in enumerate(manifest["image"].tolist()):
        img = to_channels(resize(load_image(ref), size), in_chans)
        out[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """uint8 batch -> float network input ``(x / 255 - MEAN) / STD``.

    The arithmetic runs in place on one new float tensor: the same roundings as three
    out-of-place operations, without allocating (and page-faulting) a batch-sized tensor
    for each, which cost a 64-image batch at 64 px 1.7 ms against 0.1 ms on a 2-core CPU.
    """
    return batch.to(torch.float32, copy=True).div_(255.0).sub_(MEAN).div_(STD)
