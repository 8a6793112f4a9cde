"""The heat-map overlay of the service (on request): the map the explain stage scored.

ONNX Runtime gives no gradients, so the export ships the PyTorch weights of the explained
fold model (``cam.safetensors``) with the target layer, method and class rule the explain
stage used (``export.json``'s ``cam``, :func:`medlens.inference.cam.save_explained_member`).
They are loaded from the export folder on the first request that asks for a heat map, and
the map is computed with the explain stage's own code
(:func:`medlens.inference.cam.explain_images`, :func:`medlens.inference.cam.explained_classes`).
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
    folder : path
        The export folder (holds the weights ``cam`` names).
    cam : dict
        ``export.json``'s ``cam`` entry: weights, network, fold, layer, method and class rule.
    class_names : list of str
        The exported model's classes, to name the explained class.
    """

    def __init__(self, folder: Path, cam: dict, class_names: list[str]) -> None:
        self.folder, self.cam, self.class_names = Path(folder), dict(cam), list(class_names)
        self._member = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._member is None:
                from medlens.inference.cam import load_explained_member

                self._member = load_explained_member(self.folder, self.cam)
            return self._member

    def heatmap(self, x01: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, int]:
        """The map (float32 ``S×S`` in [0, 1]) of a preprocessed ``C×S×S`` image in [0, 1] (uint8 / 255),
        and the class it explains; ``proba`` ``(K,)`` are the served probabilities."""
        from medlens.inference.cam import explain_images, explained_classes

        model, target = self._load()
        x = torch.from_numpy(np.clip(np.rint(x01 * 255.0), 0, 255).astype(np.uint8)[None])
        cls = explained_classes(self.cam["target_class"], np.asarray(proba)[None])
        with self._lock:  # the hooks of one model: one map at a time
            return explain_images(model, x, target, method=self.cam["method"], target_class=cls)[0], int(cls[0])

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
        about = {"method": self.cam["method"], "fold": self.cam["fold"], "layer": self.cam["layer"],
                 "class": self.class_names[cls] if cls < len(self.class_names) else str(cls),
                 "as_in": "the report's explain section (explain/maps.npz)"}
        return base64.b64encode(buf.getvalue()).decode(), about
