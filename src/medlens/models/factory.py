"""One entry point that builds every network medlens trains.

Names are timm model names (``resnet18``, ``efficientnet_b0``, ``mobilenetv3_small_100``,
``vit_tiny_patch16_224`` …). Weights are never downloaded: ``pretrained`` is a local
``.safetensors`` / ``.pth`` file or nothing.

Grey images either go to a 3-channel network (``model.in_chans: 3``; the loader repeats
the grey channel) or to a network whose stem is adapted to one channel
(``model.in_chans: 1``; 3-channel pretrained stem weights are summed over the colour axis,
as timm does). Heads: ``num_classes`` logits serve binary (2, softmax), multi-class (K),
multi-label (K, sigmoid) and regression (1, e.g. severity) tasks alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch

from medlens.errors import ConfigError, did_you_mean

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_small_100", "mobilenetv3_large_100",
             "convnext_tiny", "vit_tiny_patch16_224", "vit_small_patch16_224")
"""Backbones tested at 64 px with 1 and 3 input channels (any other timm name also works)."""

_SIZED = ("vit_", "deit", "beit", "eva", "cait", "xcit", "flexivit")
"""Model families whose positional embedding is built for a fixed ``img_size``."""


def num_outputs(task: str, num_classes: int) -> int:
    """Logits the head needs: one per class (classification, multilabel) or one (regression)."""
    return 1 if task == "regression" else num_classes


def create_model(name: str, *, num_classes: int, in_chans: int = 3, pretrained: str | Path | None = None,
                 image_size: int | None = None, drop_rate: float = 0.0) -> torch.nn.Module:
    """Build a timm network and optionally load local weights.

    Parameters
    ----------
    name : str
        A timm model name; an unknown name raises with the closest valid names.
    num_classes : int
        Output logits (2 for a binary task: medlens uses a softmax over two classes; 1 for
        regression).
    in_chans : {1, 3}
        Input channels; 1 adapts the stem (and any pretrained stem weights) to grey input.
    pretrained : path, optional
        Local weights file. Head tensors whose shape does not match are skipped.
    image_size : int, optional
        Training image side. Vision transformers are built for it (patch grid and
        positional embedding); it must be a multiple of the patch size.
    drop_rate : float, default=0.0
        Dropout on the pooled features before the classifier (timm ``drop_rate``); active
        in training mode only, and what MC dropout samples at inference.

    Raises
    ------
    ConfigError
        Unknown name, missing weights file, or an image size the patch size does not divide.
    """
    if not timm.is_model(name):
        raise ConfigError(f"model.name: unknown timm model '{name}'.{did_you_mean(name, timm.list_models())}")
    check_pretrained(pretrained)
    extra = {"drop_rate": drop_rate} if drop_rate else {}
    if image_size is not None and name.startswith(_SIZED):
        extra["img_size"] = image_size
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **extra)
    except (AssertionError, ValueError, RuntimeError) as err:
        raise ConfigError(f"model.name: {name} cannot be built for {in_chans} channel(s) at {image_size} px "
                          f"({err}); for a vision transformer pick a patch size that divides the image size") from None
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if image_size is not None and patch is not None and any(image_size % p for p in patch):
        raise ConfigError(f"model.name: {name} has {patch[0]}-px patches, which do not tile {image_size}-px images; "
                          f"use an image size that is a multiple of {patch[0]} or another patch size")
    if pretrained is not None:
        load_weights(model, pretrained)
    return model


def check_pretrained(path: str | Path | None) -> None:
    """Raise :class:`ConfigError` naming ``path`` if a local weights file is configured but absent."""
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"model.pretrained: weights file not found: {path} (medlens never downloads weights)")


def _fit_tensor(key: str, src: torch.Tensor, dst: torch.Tensor, model: torch.nn.Module) -> torch.Tensor | None:
    """``src`` reshaped to ``dst``'s shape where that is meaningful (stem channels, ViT grid), else None."""
    if src.shape == dst.shape:
        return src
    if src.ndim == 4 and src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:] and src.shape[1] == 3:
        from timm.models import adapt_input_conv

        return adapt_input_conv(dst.shape[1], src.float()).to(dst.dtype)
    if key.endswith("pos_embed") and src.ndim == 3 and src.shape[-1] == dst.shape[-1]:
        from timm.layers import resample_abs_pos_embed

        prefix = int(getattr(model, "num_prefix_tokens", 1))
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        if grid is not None and dst.shape[1] - prefix == grid[0] * grid[1]:
            return resample_abs_pos_embed(src.float(), list(grid), num_prefix_tokens=prefix).to(dst.dtype)
    return None


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``model``.

    A 3-channel stem is adapted to a 1-channel network, a ViT positional embedding is
    resampled to the model's patch grid, and other tensors whose shapes differ (a new head)
    are skipped and logged.
    """
    check_pretrained(path)
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    own = model.state_dict()
    usable = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        fitted = _fit_tensor(k, v, own[k], model) if k in own and isinstance(v, torch.Tensor) else None
        if fitted is not None:
            usable[k] = fitted
    if not usable:
        raise ConfigError(f"model.pretrained: no tensor in {path} fits this model (wrong architecture?)")
    skipped = sorted(set(own) - set(usable))
    if skipped:
        log.info("pretrained %s: %d tensors kept, %d newly initialised (e.g. %s)", path.name, len(usable),
                 len(skipped), ", ".join(skipped[:3]))
    model.load_state_dict(usable, strict=False)
