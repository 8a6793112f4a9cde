"""CAM methods in batches: output contract, every method, hooks released, typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from medlens.errors import ConfigError, MedlensError
from medlens.inference.cam import METHODS, CamExplainer, explain_images
from medlens.inference.layers import resolve_target


@pytest.fixture(scope="module")
def model_and_target():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=2).eval()
    return model, resolve_target(model, size=64)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_returns_maps_in_unit_range_at_input_size(method, model_and_target, tiny_images):
    model, target = model_and_target
    maps = explain_images(model, tiny_images[:2], target, method=method, batch_size=1)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def test_batches_equal_one_pass_and_layerwise_cam(model_and_target, tiny_images):
    model, target = model_and_target
    a = explain_images(model, tiny_images, target, batch_size=3)
    b = explain_images(model, tiny_images, target, batch_size=8)
    np.testing.assert_allclose(a, b, atol=1e-4)
    layer3 = resolve_target(model, size=64, layer="layer3")
    both = explain_images(model, tiny_images[:2], [target, layer3], method="layercam")
    assert both.shape == (2, 64, 64)


def test_hooks_are_released_and_do_not_pile_up(model_and_target, tiny_images):
    model, target = model_and_target
    for _ in range(5):
        explain_images(model, tiny_images[:1], target)
    assert not target.module._forward_hooks and not target.module._backward_hooks
    with pytest.raises(ConfigError):  # an exception inside is raised, never swallowed, and hooks still go
        with CamExplainer(model, target) as cam:
            cam(tiny_images[:1], target_class=7)
    assert not target.module._forward_hooks


def test_typed_errors(model_and_target, tiny_images):
    model, target = model_and_target
    with pytest.raises(ConfigError, match="Did you mean 'gradcam'"):
        explain_images(model, tiny_images, target, method="gradcma")
    with pytest.raises(MedlensError, match="uint8"):
        with CamExplainer(model, target) as cam:
            cam(tiny_images.float())


def test_explained_classes_follow_explain_target_class():
    from medlens.inference.cam import explained_classes

    five = np.array([[0.6, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.5, 0.2, 0.1], [0.0, 0.0, 0.1, 0.1, 0.8]])
    assert explained_classes("auto", five).tolist() == [0, 2, 4]  # multi-class: the reported (arg-max) class
    assert explained_classes(None, five).tolist() == [0, 2, 4]
    assert explained_classes(3, five).tolist() == [3, 3, 3]
    two = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert explained_classes("auto", two).tolist() == [1, 1]  # binary: the positive class
    assert explained_classes(None, two).tolist() == [0, 1]


def test_per_image_classes_equal_one_class_at_a_time(tiny_images):
    """A map per image for its own class equals the map of that class computed alone; so do the faithfulness curves."""
    from medlens.explain.faithfulness import deletion_insertion_curves

    torch.manual_seed(2)
    five = timm.create_model("test_resnet", num_classes=5).eval()
    target = resolve_target(five, size=64)
    classes = np.array([0, 4, 2, 2])
    x = tiny_images[:4]
    together = explain_images(five, x, target, target_class=classes, batch_size=3)
    d, i = deletion_insertion_curves(five, x, together, target_class=classes, steps=4)
    for j, c in enumerate(classes):
        alone = explain_images(five, x[j:j + 1], target, target_class=int(c))
        np.testing.assert_allclose(together[j], alone[0], atol=1e-5)
        dj, ij = deletion_insertion_curves(five, x[j:j + 1], together[j:j + 1], target_class=int(c), steps=4)
        np.testing.assert_allclose(d[j], dj[0], atol=1e-6)
        np.testing.assert_allclose(i[j], ij[0], atol=1e-6)
