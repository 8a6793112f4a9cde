"""The detector: a CenterNet-style head on the U-Net's full-resolution decoder, and its decoding.

Why this design (issue 19): the phantom's lesions, like microaneurysms or acne papules, are
4–50 px² with fuzzy borders. Anchor-based detectors (RetinaNet, FCOS) predict from feature
levels of stride ≥ 8, where such a lesion is less than one cell; the U-Net decoder predicts at
stride 1, and the segmentation stage already finds these lesions with it (CPM 0.99 by
components). CenterNet (Zhou et al. 2019, "Objects as points") needs no anchors and no NMS:
each lesion is one peak of a heat map, and the box is read from four regression maps at the
peak. Decoding is a 3×3 max-pool, a top-k and a gather, so it goes inside the ONNX graph.

Output maps (``N×5×H×W``): centre-heat logit, centre offset ``dx, dy`` (pixels, from the
pixel centre), ``log w, log h`` (pixels). Boxes are ``x0, y0, x1, y1`` with exclusive ends,
as in :mod:`medlens.evaluate.boxes`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medlens.data.arrays import MEAN, STD
from medlens.seg.models import SegNet

__all__ = ["DetNet", "Detector", "decode"]

N_MAPS = 5
"""Heat, dx, dy, log w, log h."""
TIE_BREAK = 1e-3
"""Heat differences below ~this between neighbours are settled by pixel position when peaks are found
(ONNX Runtime and PyTorch differ by < 1e-6); scores stay the heat values themselves."""


class DetNet(SegNet):
    """The U-Net with a 5-map CenterNet head (``forward`` returns ``{"maps": N×5×H×W, "features": N×F}``).

    ``features`` (the average-pooled bottleneck) feed the out-of-distribution gate.
    H and W divisible by 16.

    Examples
    --------
    >>> net = DetNet(3, (8, 16, 32, 64, 128, 16))
    >>> tuple(net(torch.zeros(2, 3, 32, 32))["maps"].shape)
    (2, 5, 32, 32)
    """

    def __init__(self, in_chans: int, features: tuple[int, ...], *, norm: str = "batch") -> None:
        super().__init__(in_chans, features, norm=norm, out_channels=N_MAPS)
        with torch.no_grad():  # heat starts at the centre prior (SegNet's -4.6); offsets 0, sizes e^1 ~ 3 px
            self.final_conv.bias[1:] = torch.tensor([0.0, 0.0, 1.0, 1.0])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _, x4, u1 = self.levels(x)
        return {"maps": self.final_conv(u1), "features": x4.mean((2, 3))}


def decode(heat: torch.Tensor, reg: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes and scores of the ``k`` highest heat-map peaks of each image.

    Parameters
    ----------
    heat : tensor of shape (N, H, W)
        Centre probabilities in [0, 1].
    reg : tensor of shape (N, 4, H, W)
        ``dx, dy, log w, log h``.
    k : int
        Peaks per image (at most H·W).

    Returns
    -------
    boxes : tensor of shape (N, k, 4)
        ``x0, y0, x1, y1`` in input pixels (exclusive ends), highest score first.
    scores : tensor of shape (N, k)
        The peak's heat value (0 where fewer than ``k`` peaks exist).
    """
    n, h, w = heat.shape
    # local maxima only (no NMS needed); a plateau's peak is chosen by position, not by float rounding,
    # so PyTorch and ONNX Runtime keep the same pixel (TIE_BREAK x a pattern distinct in every 3x3 window)
    pattern = (torch.arange(w) % 3)[None, :] + 3 * (torch.arange(h) % 3)[:, None]
    sel = heat + TIE_BREAK * pattern.to(heat.dtype)
    keep = F.max_pool2d(sel[:, None], 3, stride=1, padding=1)[:, 0] == sel
    scores, idx = (heat * keep).reshape(n, h * w).topk(k, dim=1)
    ys = torch.div(idx, w, rounding_mode="floor")
    xs = idx - ys * w
    r = reg.reshape(n, 4, h * w).gather(2, idx[:, None].expand(n, 4, k))
    cx, cy = xs.to(heat.dtype) + 0.5 + r[:, 0], ys.to(heat.dtype) + 0.5 + r[:, 1]
    half_w, half_h = torch.exp(r[:, 2]) / 2, torch.exp(r[:, 3]) / 2
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2), scores


class Detector(nn.Module):
    """The fold detectors as one graph: a [0, 1] image in; boxes, scores and features out.

    The members' heat maps (after the sigmoid) and regression maps are averaged, then
    decoded once (:func:`decode`), so the ensemble finds one peak per lesion. Evaluation,
    export and the service all run this module (or its ONNX graph).

    Parameters
    ----------
    members : list of DetNet
        In ``eval()`` mode.
    k : int
        Boxes returned per image.

    Notes
    -----
    Input ``(N, C, S, S)`` float in [0, 1] (the preprocessing contract's uint8 / 255).
    Outputs ``boxes (N, k, 4)``, ``scores (N, k)``, ``features (N, members × F)``.
    """

    def __init__(self, members: list[DetNet], k: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.k = int(k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = (x - MEAN) / STD
        outs = [m(z) for m in self.members]
        maps = torch.stack([o["maps"] for o in outs]).mean(0) if len(outs) > 1 else outs[0]["maps"]
        heat = torch.stack([torch.sigmoid(o["maps"][:, 0]) for o in outs]).mean(0)
        boxes, scores = decode(heat, maps[:, 1:], min(self.k, x.shape[2] * x.shape[3]))
        return boxes, scores, torch.cat([o["features"] for o in outs], 1)
