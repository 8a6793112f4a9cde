"""The heat-map overlay of the service (on request): the map the explain stage scored.

ONNX Runtime gives no gradients, so the PyTorch weights of the run are loaded on the
first request that asks for a heat map. The map is computed exactly as the explain stage
computed the maps in the report: the same fold model and target layer
(:func:`medlens.inference.cam.explained_member`), the same method and class
(``explain.method``, ``explain.target_class`` of ``run/config.yaml``) and the same code
(:func:`medlens.inference.cam.explain_images`).
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image


class GradCamOverlay:
    """Lazily loaded explained model; ``__call__`` returns a PNG overlay as base64.

    Parameters
    ----------
    run : path
        The run directory (``config.yaml`` and ``fold_k/model.safetensors``).
    class_names : list of str
        The exported model's classes, to name the explained class.
    """

    def __init__(self, run: Path, class_names: list[str]) -> None:
        from medlens.config import load_config

        self.run, self.class_names = Path(run), list(class_names)
        self.cfg = load_config(self.run / "config.yaml")
        self._member = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._member is None:
                from medlens.inference.cam import explained_member

                self._member = explained_member(self.run, self.cfg)
            return self._member

    def describe(self) -> dict:
        """What the map explains: method, fold, class (None: the model's predicted class) and layer."""
        ex = self.cfg.explain
        target = None if ex.target_class is None else self.class_names[min(ex.target_class, len(self.class_names) - 1)]
        return {"method": ex.method, "fold": ex.fold, "class": target, "layer": self._load()[1].name,
                "as_in": "the report's explain section (explain/maps.npz)"}

    def heatmap(self, x01: np.ndarray) -> np.ndarray:
        """float32 ``S×S`` in [0, 1] for a preprocessed ``C×S×S`` image in [0, 1] (uint8 / 255)."""
        from medlens.inference.cam import explain_images

        model, target = self._load()
        ex = self.cfg.explain
        x = torch.from_numpy(np.clip(np.rint(x01 * 255.0), 0, 255).astype(np.uint8)[None])
        with self._lock:  # the hooks of one model: one map at a time
            return explain_images(model, x, target, method=ex.method, target_class=ex.target_class)[0]

    def __call__(self, x01: np.ndarray) -> str:
        """Base64 PNG: the image with the heat map blended in (JET colour map, 40 %)."""
        heat = self.heatmap(x01)
        rgb = np.repeat(x01, 3, 0) if x01.shape[0] == 1 else x01[:3]
        rgb8 = (rgb.transpose(1, 2, 0) * 255).astype(np.uint8)
        colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        blend = (0.6 * rgb8 + 0.4 * colour).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(blend).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()
