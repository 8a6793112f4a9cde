"""Grad-CAM overlay for the service (on request): the fold models in PyTorch, averaged.

ONNX Runtime gives no gradients, so the PyTorch weights of the run are loaded on the
first request that asks for a heat map. The map is ReLU(sum_c w_c A_c) on the last
feature map, with ``w_c`` the spatial mean of the gradient of the positive-class logit
(Selvaraju et al. 2017), resized to the input and scaled to [0, 1].
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from medlens.data.arrays import MEAN, STD


class GradCamOverlay:
    """Lazily loaded fold models; ``__call__`` returns a PNG overlay as base64."""

    def __init__(self, run: Path, folds: list[int], num_classes: int) -> None:
        self.run, self.folds, self.num_classes = Path(run), folds, num_classes
        self._members: list[torch.nn.Module] | None = None
        self._lock = threading.Lock()

    def _load(self) -> list[torch.nn.Module]:
        with self._lock:
            if self._members is None:
                from medlens.config import load_config
                from medlens.inference import load_ensemble

                ens = load_ensemble(self.run, load_config(self.run / "config.yaml"), folds=self.folds)
                self._members = list(ens.members)
            return self._members

    def heatmap(self, x01: np.ndarray, target: int) -> np.ndarray:
        """float32 ``S×S`` in [0, 1] for a preprocessed ``C×S×S`` image and a class index."""
        x = (torch.from_numpy(x01[None].astype(np.float32)) - MEAN) / STD
        maps = []
        for m in self._load():
            feats = m.forward_features(x).detach().requires_grad_(True)
            logit = m.forward_head(feats)[0, target]
            (grad,) = torch.autograd.grad(logit, feats)
            cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * feats).sum(1, keepdim=True))
            maps.append(F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0].detach())
        heat = torch.stack(maps).mean(0).numpy()
        return (heat / heat.max() if heat.max() > 0 else heat).astype(np.float32)

    def __call__(self, x01: np.ndarray, target: int) -> str:
        """Base64 PNG: the image with the heat map blended in (JET colour map, 40 %)."""
        heat = self.heatmap(x01, target)
        rgb = np.repeat(x01, 3, 0) if x01.shape[0] == 1 else x01[:3]
        rgb8 = (rgb.transpose(1, 2, 0) * 255).astype(np.uint8)
        colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        blend = (0.6 * rgb8 + 0.4 * colour).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(blend).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()
