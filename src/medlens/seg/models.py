"""A small 2-D U-Net (MONAI ``BasicUNet`` blocks) with optional image-level heads.

One encoder feeds a segmentation decoder and, for multi-task learning, a classification
head and a severity head on the pooled bottleneck features. The forward pass reads like
the U-Net diagram (``x0 … x4``, ``u4 … u1``) and returns a dict of raw outputs.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["SegNet", "TimmUNet", "create_segnet"]

log = logging.getLogger(__name__)

SEVERITY_LEVELS = 5
"""Severity grades 0-4 (the phantom's lesion count, capped)."""


class SegNet(nn.Module):
    """U-Net with optional classification and severity heads.

    Parameters
    ----------
    in_chans : int
    features : tuple of 6 int
        BasicUNet widths: five encoder levels and the last decoder level.
    cls_head : bool
        Add a 2-class classification head (logits ``(N, 2)``).
    severity : {'none', 'regression', 'ordinal'}
        ``regression``: one output (grade); ``ordinal``: 4 cumulative logits P(grade > k).
    seg_head : bool
        Keep the decoder (False for the classification-only baseline).
    norm : {'instance', 'batch'}
        Normalisation layers. Batch norm is faster on CPU and, unlike instance norm, does
        not depend on the window size in sliding-window inference.
    out_channels : int
        Channels of the full-resolution output map (1: the lesion logit; the detector's
        CenterNet head uses 5).

    Notes
    -----
    The heads read average- and max-pooled features of the two deepest encoder levels
    and, in a multi-task model, of the last decoder level. Input ``(N, in_chans, H, W)``
    with H and W divisible by 16. Output: dict with ``seg``
    (``N×out_channels×H×W`` logits, if ``seg_head``), ``cls`` and ``severity`` where configured.

    Examples
    --------
    >>> net = SegNet(3, (8, 16, 32, 64, 128, 8), cls_head=True)
    >>> out = net(torch.zeros(2, 3, 32, 32))
    >>> tuple(out["seg"].shape), tuple(out["cls"].shape)
    ((2, 1, 32, 32), (2, 2))
    """

    def __init__(self, in_chans: int, features: tuple[int, ...], *, cls_head: bool = False,
                 severity: str = "none", seg_head: bool = True, norm: str = "instance",
                 out_channels: int = 1) -> None:
        super().__init__()
        from monai.networks.nets.basic_unet import Down, TwoConv, UpCat

        f = tuple(features)
        act = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})
        norm = ("instance", {"affine": True}) if norm == "instance" else ("batch", {})
        self.conv_0 = TwoConv(2, in_chans, f[0], act, norm, True, 0.0)
        self.down_1 = Down(2, f[0], f[1], act, norm, True, 0.0)
        self.down_2 = Down(2, f[1], f[2], act, norm, True, 0.0)
        self.down_3 = Down(2, f[2], f[3], act, norm, True, 0.0)
        self.down_4 = Down(2, f[3], f[4], act, norm, True, 0.0)
        self.seg_head = seg_head
        if seg_head:
            self.upcat_4 = UpCat(2, f[4], f[3], f[3], act, norm, True, 0.0, "deconv")
            self.upcat_3 = UpCat(2, f[3], f[2], f[2], act, norm, True, 0.0, "deconv")
            self.upcat_2 = UpCat(2, f[2], f[1], f[1], act, norm, True, 0.0, "deconv")
            self.upcat_1 = UpCat(2, f[1], f[0], f[5], act, norm, True, 0.0, "deconv", halves=False)
            self.final_conv = nn.Conv2d(f[5], out_channels, kernel_size=1)
            # start from the lesion prior (~1% of pixels), not 50%: with tiny foregrounds the
            # loss otherwise spends the first epochs only pushing the bias down
            nn.init.constant_(self.final_conv.bias, -4.6)
        # avg + max pooling of the two deepest encoder levels, and of the last decoder level
        # when there is one (it sees lesions at full resolution)
        pooled = 2 * (f[3] + f[4] + (f[5] if seg_head else 0))
        self.cls = nn.Sequential(nn.Dropout(0.2), nn.Linear(pooled, 2)) if cls_head else None
        self.severity_mode = severity
        n_sev = {"none": 0, "regression": 1, "ordinal": SEVERITY_LEVELS - 1}[severity]
        self.severity = nn.Sequential(nn.Dropout(0.2), nn.Linear(pooled, n_sev)) if n_sev else None

    @staticmethod
    def _pool(*maps: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.cat([m.mean((2, 3)), m.amax((2, 3))], 1) for m in maps], 1)

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The two deepest encoder levels and the last decoder level (None without ``seg_head``)."""
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        if not self.seg_head:
            return x3, x4, None
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        return x3, x4, self.upcat_1(u2, x0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x3, x4, u1 = self.levels(x)
        out: dict[str, torch.Tensor] = {}
        if self.seg_head:
            out["seg"] = self.final_conv(u1)
        if self.cls is not None or self.severity is not None:
            z = self._pool(x3, x4, u1) if self.seg_head else self._pool(x3, x4)
            if self.cls is not None:
                out["cls"] = self.cls(z)
            if self.severity is not None:
                s = self.severity(z)
                out["severity"] = s[:, 0] if self.severity_mode == "regression" else s
        return out


class TimmUNet(nn.Module):
    """A U-Net decoder on a timm encoder (segmentation-models-pytorch ``Unet`` with ``tu-<name>``).

    Segmentation only, with SegNet's interface (``forward`` returns ``{"seg": N×1×H×W logits}``);
    H and W divisible by 32. Random initial weights: medlens never downloads weights, and
    ``seg.encoder_weights`` is not offered until a local-path loader is.

    Parameters
    ----------
    in_chans : int
    encoder : str
        A timm model name with ``features_only`` support, e.g. ``resnet18``, ``efficientnet_b0``.
    """

    seg_head = True
    cls = None
    severity = None

    def __init__(self, in_chans: int, encoder: str) -> None:
        super().__init__()
        try:
            import segmentation_models_pytorch as smp
        except ImportError:
            from medlens.errors import ConfigError

            raise ConfigError("seg.architecture 'timm_unet' needs segmentation-models-pytorch: "
                              "pip install 'medlens[seg]'") from None
        self.net = smp.Unet(encoder_name=f"tu-{encoder}", encoder_weights=None, in_channels=in_chans, classes=1)
        nn.init.constant_(self.net.segmentation_head[0].bias, -2.0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"seg": self.net(x)}


def create_segnet(kind: str, *, in_chans: int, features: tuple[int, ...], severity: str = "none",
                  norm: str = "instance", architecture: str = "unet", encoder: str = "resnet18") -> nn.Module:
    """Build the network of a study task.

    Parameters
    ----------
    kind : {'segmentation', 'multitask', 'classifier'}
        ``classifier`` is the encoder with the classification head only (the baseline the
        multi-task model is compared with).
    architecture : {'unet', 'timm_unet'}
        ``timm_unet`` (segmentation only): :class:`TimmUNet` on the timm ``encoder``.
    """
    if architecture == "timm_unet" and kind == "segmentation":
        return TimmUNet(in_chans, encoder)
    if kind == "segmentation":
        return SegNet(in_chans, features, norm=norm)
    if kind == "multitask":
        return SegNet(in_chans, features, cls_head=True, severity=severity, norm=norm)
    if kind == "classifier":
        return SegNet(in_chans, features, cls_head=True, seg_head=False, norm=norm)
    from medlens.errors import ConfigError, did_you_mean

    raise ConfigError(f"unknown network kind '{kind}'.{did_you_mean(kind, ['segmentation', 'multitask', 'classifier'])}")
