"""Automatic target-layer choice for CNNs and ViTs, the override, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from medlens.errors import ConfigError
from medlens.inference.cam import explain_images
from medlens.inference.layers import resolve_target


@pytest.mark.parametrize(("name", "size", "layer", "grid"), [
    ("resnet18", 64, "layer2", (8, 8)),      # last stage is 2×2 at 64 px: the 8×8 stage is taken
    ("resnet18", 224, "layer4", (7, 7)),     # the usual choice at 224 px
    ("test_efficientnet", 64, "blocks.2", (8, 8)),
])
def test_cnn_layer_is_the_deepest_stage_with_a_fine_enough_grid(name, size, layer, grid):
    model = timm.create_model(name, num_classes=2)
    t = resolve_target(model, size=size)
    assert (t.name, t.grid, t.reshape) == (layer, grid, None)


def test_vit_tiny_target_layer_and_reshape_without_user_input(tiny_images):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=2)
    t = resolve_target(model, size=64)
    assert t.name == "blocks.11.norm1" and t.grid == (4, 4) and t.reshape is not None
    maps = explain_images(model, tiny_images[:4], t, method="gradcam")
    assert maps.shape == (4, 64, 64) and maps.dtype == np.float32
    assert 0 <= maps.min() and maps.max() <= 1 and maps.reshape(4, -1).std(1).min() > 0  # not flat


def test_override_by_name_and_errors():
    model = timm.create_model("test_resnet", num_classes=2)
    assert resolve_target(model, size=64, layer="layer3").grid == (4, 4)
    with pytest.raises(ConfigError, match="Did you mean 'layer3'"):
        resolve_target(model, size=64, layer="layr3")
    with pytest.raises(ConfigError, match="'fc'.*not a spatial map"):
        resolve_target(model, size=64, layer="fc")
