"""The heat-map overlay of the service (on request): the map the explain stage scored.

ONNX Runtime gives no gradients, so the PyTorch weights of the run are loaded on the
first request that asks for a heat map. The map is computed exactly as the explain stage
computed the maps in the report: the same fold model and target layer
(:func:`medlens.inference.cam.explained_member`), the same method and class rule
(``explain.method``; ``explain.target_class`` of ``run/config.yaml`` through
:func:`medlens.inference.cam.explained_classes`) and the same code
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

    def heatmap(self, x01: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, int]:
        """The map (float32 ``S×S`` in [0, 1]) of a preprocessed ``C×S×S`` image in [0, 1] (uint8 / 255),
        and the class it explains; ``proba`` ``(K,)`` are the served probabilities."""
        from medlens.inference.cam import explain_images, explained_classes

        model, target = self._load()
        ex = self.cfg.explain
        x = torch.from_numpy(np.clip(np.rint(x01 * 255.0), 0, 255).astype(np.uint8)[None])
        cls = explained_classes(ex.target_class, np.asarray(proba)[None])
        with self._lock:  # the hooks of one model: one map at a time
            return explain_images(model, x, target, method=ex.method, target_class=cls)[0], int(cls[0])

    def __call__(self, x01: np.ndarray, proba: np.ndarray) -> tuple[str, dict]:
        """Base64 PNG of the image with the heat map blended in (JET colour map, 40 %), and what the map
        explains: method, fold, layer and class."""
        heat, cls = self.heatmap(x01, proba)
        rgb = np.repeat(x01, 3, 0) if x01.shape[0] == 1 else x01[:3]
        rgb8 = (rgb.transpose(1, 2, 0) * 255).astype(np.uint8)
        colour = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        blend = (0.6 * rgb8 + 0.4 * colour).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(blend).save(buf, format="PNG")
        ex = self.cfg.explain
        about = {"method": ex.method, "fold": ex.fold, "layer": self._load()[1].name,
                 "class": self.class_names[cls] if cls < len(self.class_names) else str(cls),
                 "as_in": "the report's explain section (explain/maps.npz)"}
        return base64.b64encode(buf.getvalue()).decode(), about
