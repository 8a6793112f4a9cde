"""One entry point that builds every network medlens trains.

Names are timm model names (``resnet18``, ``efficientnet_b0``, ``mobilenetv3_small_100``,
``vit_tiny_patch16_224`` …). Weights are never downloaded: ``pretrained`` is a local
``.safetensors`` / ``.pth`` file or nothing.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from medlens.errors import ConfigError, did_you_mean


def create_model(name: str, *, num_classes: int, in_chans: int = 3, pretrained: str | Path | None = None) -> torch.nn.Module:
    """Build a timm classifier and optionally load local weights.

    Parameters
    ----------
    name : str
        A timm model name; an unknown name raises with the closest valid names.
    num_classes : int
        Output logits (2 for a binary task: medlens uses a softmax over two classes).
    in_chans : {1, 3}
        Input channels.
    pretrained : path, optional
        Local weights file. Classifier-head tensors whose shape does not match are skipped.
    """
    if not timm.is_model(name):
        raise ConfigError(f"model.name: unknown timm model '{name}'.{did_you_mean(name, timm.list_models())}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if pretrained is not None:
        load_weights(model, pretrained)
    return model


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local state dict, skipping tensors whose shapes differ (e.g. a new head)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.pretrained: weights file not found: {path} (medlens never downloads weights)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"model.pretrained: no tensor in {path} fits this model (wrong architecture?)")
    model.load_state_dict(usable, strict=False)
