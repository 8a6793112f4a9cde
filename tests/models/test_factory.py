"""Model factory: every listed backbone at 64 px with 1 and 3 channels; local weights only."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from medlens.errors import ConfigError
from medlens.models import BACKBONES, create_model, load_weights, num_outputs


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_forward_backward_64px(name, in_chans):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_chans=in_chans, image_size=64)
    model.train()
    out = model(torch.randn(2, in_chans, 64, 64))
    assert out.shape == (2, 2)
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("task,k,expected", [("classification", 5, 5), ("multilabel", 3, 3), ("regression", 5, 1)])
def test_heads(task, k, expected):
    model = create_model("resnet18", num_classes=num_outputs(task, k), in_chans=3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, expected)


def test_missing_weights_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "w.safetensors"
    with pytest.raises(ConfigError, match=str(missing)):
        create_model("resnet18", num_classes=2, pretrained=missing)


def test_unknown_name_suggests():
    with pytest.raises(ConfigError, match="resnet18"):
        create_model("resnet1_8", num_classes=2)


def test_vit_patch_must_divide_size():
    with pytest.raises(ConfigError, match="patch"):
        create_model("vit_tiny_patch16_224", num_classes=2, image_size=40)


def test_rgb_weights_adapt_to_grey_stem(tmp_path):
    torch.manual_seed(0)
    rgb = create_model("resnet18", num_classes=1000, in_chans=3)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    grey = create_model("resnet18", num_classes=2, in_chans=1, pretrained=path)
    assert torch.allclose(grey.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(grey.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)
    assert grey.fc.weight.shape == (2, 512)  # the new head is not taken from the file


def test_vit_pos_embed_resampled_from_224(tmp_path):
    torch.manual_seed(0)
    src = create_model("vit_tiny_patch16_224", num_classes=1000)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    model = create_model("vit_tiny_patch16_224", num_classes=2, image_size=64)
    load_weights(model, path)
    assert model.pos_embed.shape == (1, 17, 192)
    assert torch.equal(model.pos_embed[:, 0], src.pos_embed[:, 0])  # class token kept
    assert torch.equal(model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
