"""Transforms: field-of-view crop, CLAHE (measured contrast gain), augmentation, mixup/cutmix targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlens.data.arrays import load_tensor
from medlens.data.synthetic import ImageSpec, generate, render_image
from medlens.data.sources import read_synthetic
from medlens.data.preprocess import Preprocess, clahe, fov_box
from medlens.data.transforms import cutmix, mixup, one_hot, random_augment, rms_contrast
from medlens.config.engine import AugmentConfig, PreprocessConfig


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    img, _, _ = render_image(ImageSpec(size=128, site="A", n_lesions=3), np.random.default_rng(0))
    return img.transpose(2, 0, 1).astype(np.float32) / 255.0


@pytest.mark.parametrize("mode", ["lab", "channels"])
def test_clahe_raises_contrast_of_low_contrast_phantom(phantom, mode):
    fov = phantom.mean(0) > 0.08
    flat = 0.4 + 0.15 * phantom  # a washed-out, low-contrast version of the fundus
    before = rms_contrast(flat, fov)
    after = rms_contrast(clahe(flat, mode=mode, clip_limit=3.0, tiles=8), fov)
    assert after > 1.5 * before, (before, after)


def test_clahe_keeps_contract(phantom):
    out = clahe(phantom[:1])
    assert out.shape == (1, 128, 128) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="lab"):
        clahe(phantom, mode="hsv")


def test_fov_crop_margin_and_border():
    img = np.zeros((1, 10, 10), np.float32)
    img[0, 3:5, 2:6] = 1.0  # a bright 2x4 field of view
    assert fov_box(img) == (2, 3, 6, 5)
    assert Preprocess(size=8, in_chans=1, roi_crop=True, roi_margin=0).crop(img) == (2, 3, 6, 5)
    assert Preprocess(size=8, in_chans=1, roi_crop=True, roi_margin=0.5).crop(img) == (0, 2, 8, 6)
    assert Preprocess(size=8, in_chans=1, roi_crop=True, roi_margin=3.0).crop(img) == (0, 0, 10, 10)  # clipped
    assert fov_box(np.zeros((1, 4, 4), np.float32)) is None
    assert Preprocess(size=8, in_chans=1).crop(img) == (0, 0, 10, 10)  # crop off: the whole image


def test_the_default_contract_equals_load_tensor_and_round_trips(tmp_path):
    generate(tmp_path / "d", n_patients=4, seed=0, image_size=48)
    m = read_synthetic(tmp_path / "d").head(4)
    refs = m["image"].tolist()
    assert torch.equal(Preprocess(size=32, in_chans=3).load(refs), load_tensor(m, size=32, in_chans=3))
    pre = Preprocess(size=32, in_chans=1, **PreprocessConfig(roi_crop=True, clahe="lab").model_dump())
    cropped = pre.load(refs)
    assert cropped.shape == (4, 1, 32, 32)
    assert not torch.equal(cropped, Preprocess(size=32, in_chans=1).load(refs))
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_random_augment_is_seeded_and_rotation_draws_only_when_on():
    x = torch.randn(4, 3, 16, 16)
    a = random_augment(x, torch.Generator().manual_seed(1))
    b = random_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(1)
    rot = random_augment(x, g, AugmentConfig(rotation=30, flip=False, brightness=0, contrast=0))
    assert rot.shape == x.shape and not torch.equal(rot, x)
    g0 = torch.Generator().manual_seed(1)
    assert torch.equal(random_augment(x, g0, AugmentConfig(flip=False, brightness=0, contrast=0)), x)
    assert torch.equal(g0.get_state(), torch.Generator().manual_seed(1).get_state())  # nothing drawn


def _augment_before_zoom_and_shift(batch, gen, rotation, brightness, contrast):
    """random_augment as it was before vertical_flip/scale/translate (flips both ways, rotation)."""
    n = batch.shape[0]
    flip_h, flip_v = torch.rand(n, generator=gen) < 0.5, torch.rand(n, generator=gen) < 0.5
    batch = torch.where(flip_h[:, None, None, None], batch.flip(3), batch)
    batch = torch.where(flip_v[:, None, None, None], batch.flip(2), batch)
    rad = (torch.rand(n, generator=gen) * 2 - 1) * rotation * (math.pi / 180)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    batch = F.grid_sample(batch, F.affine_grid(theta, list(batch.shape), align_corners=False), mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    gain = 1 + 2 * contrast * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return batch * gain + 2 * brightness * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)


def test_random_augment_without_zoom_or_shift_reproduces_earlier_batches():
    x = torch.randn(6, 3, 16, 16)
    new = random_augment(x, torch.Generator().manual_seed(3), AugmentConfig(rotation=10, brightness=0.1, contrast=0.1))
    old = _augment_before_zoom_and_shift(x, torch.Generator().manual_seed(3), 10, 0.1, 0.1)
    assert torch.equal(new, old)


def test_horizontal_flip_only_never_turns_an_image_upside_down():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, :2, 0] = 1.0  # a mark in the top-left corner
    out = random_augment(x, torch.Generator().manual_seed(0),
                         AugmentConfig(vertical_flip=False, brightness=0, contrast=0))
    top = out[:, 0, :2].sum((1, 2))
    assert torch.equal(top, torch.full((64,), 2.0))  # the mark stays in the top rows
    assert 0 < int((out[:, 0, 0, -1] == 1).sum()) < 64  # ...and moves left/right at random


def test_shift_and_zoom_move_and_enlarge_the_content():
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0, 12:20, 12:20] = 1.0  # an 8 px square at the centre
    shifted = F.grid_sample(x, F.affine_grid(torch.tensor([[[1.0, 0, -2 * 0.25], [0, 1, 0]]]), [1, 1, 32, 32],
                                             align_corners=False), align_corners=False)
    assert shifted[0, 0, 16, 24] == 1 and shifted[0, 0, 16, 16] == 0  # reference: 0.25 of the side to the right
    from medlens.data.transforms import _affine

    moved = _affine(x, torch.zeros(1), torch.ones(1), torch.tensor([[0.25, 0.0]]))
    assert torch.allclose(moved, shifted)
    zoomed = _affine(x, torch.zeros(1), torch.tensor([2.0]), torch.zeros(1, 2))
    assert float(zoomed.sum()) == pytest.approx(4 * float(x.sum()), rel=0.05)  # twice the side: four times the area
    out = random_augment(x.repeat(16, 1, 1, 1), torch.Generator().manual_seed(0),
                         AugmentConfig(flip=False, scale=0.2, translate=0.1, brightness=0, contrast=0))
    areas = out.sum((1, 2, 3))
    assert ((areas > 0.8**2 * 64 - 1) & (areas < 1.2**2 * 64 + 1)).all() and areas.std() > 1


@pytest.mark.parametrize("fn,alpha", [(mixup, 0.4), (cutmix, 1.0)])
def test_mixing_gives_soft_targets_summing_to_one(fn, alpha):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    y = one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), 3)
    for _ in range(5):
        xm, ym, lam = fn(x, y, gen, alpha=alpha)
        assert xm.shape == x.shape and ym.shape == (8, 3)
        torch.testing.assert_close(ym.sum(1), torch.ones(8))
        assert 0 <= lam <= 1 and (ym >= 0).all()


def test_cutmix_lambda_is_the_kept_area():
    gen = torch.Generator().manual_seed(3)
    x = torch.zeros(2, 1, 20, 20)
    x[1] = 1
    checked = 0
    for _ in range(20):
        xm, ym, lam = cutmix(x, one_hot(torch.tensor([0, 1]), 2), gen, alpha=1.0)
        if ym[0, 1] > 0:  # image 0 received a box from image 1: its mean is the pasted share
            assert float(xm[0].mean()) == pytest.approx(1 - lam) == pytest.approx(float(ym[0, 1]))
            checked += 1
    assert checked > 0
