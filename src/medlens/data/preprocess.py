"""THE preprocessing contract: one object from the config, used by every stage that touches pixels.

decode → field-of-view crop (optional) → CLAHE (optional) → aspect-kept resize and zero
pad → channels → uint8 rounding. Train, trust, ssl, explain, export and serve all call
:class:`Preprocess`; it is saved in ``export/card.json`` and in the ONNX metadata, and
serve rebuilds it with :meth:`Preprocess.from_dict`, so a served image is prepared
exactly as the evaluated one was.

The crop is found in the image itself (the bounding box of the illuminated field of
view), never taken from the expert's ROI: an expert box is not there when a new image is
served, and a box drawn around the lesions of positive images tells the network the
answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from medlens.data.arrays import resize, to_channels
from medlens.data.images import load_image

__all__ = ["Preprocess", "clahe", "fov_box"]


def clahe(img: np.ndarray, *, mode: str = "lab", clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV) of a float ``C×H×W`` image.

    Parameters
    ----------
    img : ndarray of shape (C, H, W), float in [0, 1]
    mode : {'lab', 'channels'}, default='lab'
        'lab' equalises only the lightness of an RGB image (colours keep their hue, the
        usual choice for fundus photographs); 'channels' equalises each channel on its own.
        A grey image is equalised directly in either mode.
    clip_limit : float, default=2.0
        OpenCV's contrast limit per tile.
    tiles : int, default=8
        Tiles per side.

    Returns
    -------
    ndarray of shape (C, H, W), float32 in [0, 1]
    """
    if mode not in ("lab", "channels"):
        raise ValueError(f"clahe mode must be 'lab' or 'channels', got {mode!r}")
    op = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tiles), int(tiles)))
    u8 = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if mode == "lab" and img.shape[0] == 3:
        lab = cv2.cvtColor(np.ascontiguousarray(u8.transpose(1, 2, 0)), cv2.COLOR_RGB2LAB)
        lab[..., 0] = op.apply(np.ascontiguousarray(lab[..., 0]))
        out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).transpose(2, 0, 1)
    else:
        out = np.stack([op.apply(np.ascontiguousarray(ch)) for ch in u8])
    return out.astype(np.float32) / 255.0


def fov_box(img: np.ndarray, *, level: float = 0.1) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the pixels brighter than ``level`` × the image's 99th percentile.

    Parameters
    ----------
    img : ndarray of shape (C, H, W), float in [0, 1]

    Returns
    -------
    tuple or None
        None when nothing, or everything, is above the level (no field of view to crop to).
    """
    grey = img.mean(0)
    ref = float(np.percentile(grey, 99))
    if ref <= 0:
        return None
    ys, xs = np.nonzero(grey > level * ref)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass(frozen=True)
class Preprocess:
    """Image preparation for one study.

    Parameters
    ----------
    size : int
        Output side in pixels.
    in_chans : {1, 3}
        Output channels (grey repeated to 3, or RGB averaged to 1).
    roi_crop : bool
        Crop to the field of view (:func:`fov_box`) enlarged by ``roi_margin`` × its side.
    roi_margin : float
    clahe : {'off', 'channels', 'lab'}
    clahe_clip, clahe_tiles
        OpenCV CLAHE settings.
    """

    size: int
    in_chans: int
    roi_crop: bool = False
    roi_margin: float = 0.1
    clahe: str = "off"
    clahe_clip: float = 2.0
    clahe_tiles: int = 8

    @classmethod
    def from_config(cls, cfg, *, size: int | None = None) -> Preprocess:
        """From a :class:`medlens.config.StudyConfig` (``train.image_size``, ``model.in_chans``, ``engine.preprocess``).

        ``size`` replaces ``train.image_size`` (an SSL encoder's own input size).
        """
        p = cfg.engine.preprocess
        return cls(size=int(size or cfg.train.image_size), in_chans=int(cfg.model.in_chans), roi_crop=bool(p.roi_crop),
                   roi_margin=float(p.roi_margin), clahe=str(p.clahe), clahe_clip=float(p.clahe_clip),
                   clahe_tiles=int(p.clahe_tiles))

    def to_dict(self) -> dict:
        """JSON-ready description (``export/card.json``, ONNX metadata)."""
        return {"steps": "decode -> fov crop -> clahe -> aspect-kept resize + zero pad -> channels -> uint8 -> /255",
                **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def crop(self, img: np.ndarray) -> tuple[int, int, int, int]:
        """The pixel box ``(x0, y0, x1, y1)`` of ``img`` (``C×H×W``) that the output shows."""
        h, w = img.shape[1:]
        box = fov_box(img) if self.roi_crop else None
        if box is None:
            return 0, 0, w, h
        x0, y0, x1, y1 = box
        mx, my = self.roi_margin * (x1 - x0), self.roi_margin * (y1 - y0)
        xa, xb = max(0, int(math.floor(x0 - mx))), min(w, int(math.ceil(x1 + mx)))
        ya, yb = max(0, int(math.floor(y0 - my))), min(h, int(math.ceil(y1 + my)))
        return xa, ya, xb, yb

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Prepare one decoded image (float ``C×H×W`` in [0, 1]) -> uint8 ``in_chans×size×size``."""
        img = np.asarray(img, np.float32)
        x0, y0, x1, y1 = self.crop(img)
        img = img[:, y0:y1, x0:x1]
        if self.clahe != "off":
            img = clahe(img, mode=self.clahe, clip_limit=self.clahe_clip, tiles=self.clahe_tiles)
        out = to_channels(resize(img, self.size), self.in_chans)
        return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)

    def load(self, refs: list[str]) -> torch.Tensor:
        """Decode and prepare image files (manifest ``image`` references): uint8 tensor ``N×C×S×S``."""
        out = np.empty((len(refs), self.in_chans, self.size, self.size), np.uint8)
        for i, ref in enumerate(refs):
            out[i] = self(load_image(ref))
        return torch.from_numpy(out)

    def _placement(self, crop: tuple[int, int, int, int]) -> tuple[float, int, int]:
        """Scale and the (x, y) padding offsets of a crop in the output square."""
        cx0, cy0, cx1, cy1 = crop
        h, w = cy1 - cy0, cx1 - cx0
        scale = self.size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        return scale, (self.size - nw) // 2, (self.size - nh) // 2

    def box_to_output(self, box: tuple[float, float, float, float], img_shape: tuple[int, int],
                      crop: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        """Map a box in original pixels to output pixels, given the image's ``(H, W)`` and its :meth:`crop`."""
        scale, ox, oy = self._placement(crop)
        x0, y0, x1, y1 = box
        return ((x0 - crop[0]) * scale + ox, (y0 - crop[1]) * scale + oy, (x1 - crop[0]) * scale + ox,
                (y1 - crop[1]) * scale + oy)

    def box_to_input(self, box: tuple[float, float, float, float],
                     crop: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
        """Inverse of :meth:`box_to_output`: a box in output pixels -> original pixels of the cropped image."""
        scale, ox, oy = self._placement(crop)
        x0, y0, x1, y1 = box
        return ((x0 - ox) / scale + crop[0], (y0 - oy) / scale + crop[1], (x1 - ox) / scale + crop[0],
                (y1 - oy) / scale + crop[1])
