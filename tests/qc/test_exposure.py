"""The exposure check: the clipped share of the field of view, white surrounds, and learned limits that catch
overexposed copies of real fundus images.

Planted copies are the image times a gain, rounded to 8 bits as a saved PNG holds them
(``benchmarks/qc_catch.py`` plants the same).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medlens.config import QCConfig
from medlens.data.images import load_image
from medlens.qc import run_qc
from medlens.qc.checks import (
    clipped_share,
    field_of_view,
    fov_mask,
    luminance,
    white_surround,
)
from medlens.qc.learn import learn_thresholds, load_thresholds, save_thresholds


def gained(img: np.ndarray, gain: float) -> np.ndarray:
    """``img`` times ``gain``, clipped and rounded to 8 bits."""
    return (np.clip(img * gain, 0, 1) * 255).round().astype(np.float32) / 255


def disc(size: int = 64) -> np.ndarray:
    """A fundus-like RGB image: a disc (radius 0.4 of the side) on black, its red channel clipped everywhere."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    inside = np.hypot(xx - 0.5, yy - 0.5) < 0.4
    return np.stack([inside * 1.0, inside * 0.5, inside * 0.2]).astype(np.float32)


def test_clipped_share_counts_two_clipped_channels_inside_the_field_of_view():
    img = disc()
    lum = luminance(img)
    fov = fov_mask(img, lum, 0.25)
    assert fov.sum() == (img[0] > 0).sum()  # the disc, not the black surround
    assert clipped_share(img, fov) == 0.0  # the red channel alone is clipped
    img[1, 28:36, 28:36] = 1.0  # a patch clipped in red and green
    assert clipped_share(img, fov_mask(img, luminance(img), 0.25)) == pytest.approx(64 / fov.sum())
    grey = np.full((1, 10, 10), 0.5, np.float32)
    grey[0, :2] = 1.0
    assert fov_mask(grey, luminance(grey), 0.25).all() and clipped_share(grey, np.ones((10, 10), bool)) == 0.2
    black = np.zeros((3, 8, 8), np.float32)  # no field of view: the whole image
    assert fov_mask(black, luminance(black), 0.25).all() and clipped_share(black, np.ones((8, 8), bool)) == 0.0


def test_clipped_fundus_fails_as_too_bright_naming_value_and_limit():
    img = disc()
    img[1, 20:44, 20:44] = 1.0
    df = run_qc([disc(), img], ["ok", "clipped"], QCConfig(checks=("exposure",), bright_p05=1.0, bright_p50=1.0))
    assert df["passed"].tolist() == [True, False]
    assert "of the field of view clipped in two or more channels > 1.00%" in df.loc[1, "reason"]


def pale_disc(surround: float, size: int = 64) -> np.ndarray:
    """A pale fundus-like disc (radius 0.52 of the side) that nearly fills the frame, on a grey level ``surround``."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    r = np.hypot(xx - 0.5, yy - 0.5) / 0.52
    inside = r < 1
    disc = np.stack([0.85 - 0.2 * r**2, 0.55 - 0.2 * r**2, 0.4 - 0.2 * r**2])
    return np.where(inside, disc, surround).astype(np.float32)


def test_white_surround_is_neither_field_of_view_nor_black_level():
    """A camera that puts a white surround around the disc (RetinaMNIST, 16 of 1080 training images)."""
    white, black = pale_disc(1.0), pale_disc(0.0)
    surround = white_surround(white)
    assert surround is not None and (surround == (black[0] == 0)).all()  # the corners outside the disc
    assert white_surround(black) is None
    fov = fov_mask(white, luminance(white), 0.25)
    assert (fov == ~surround).all() and clipped_share(white, fov) == 0.0  # its clipped white is not counted
    offset, cover = field_of_view(white, luminance(white), 0.25)
    assert offset < 0.01 and cover == pytest.approx(1 - surround.mean())
    marker = black.copy()
    marker[:, :6, :6] = 1.0  # a white marker in one corner is no surround
    grey = np.ones((1, 16, 16), np.float32)
    assert white_surround(marker) is None and white_surround(grey) is None
    # the 5th percentile of the white-surround image (0.41, the disc) is above bright_p05 (0.2), but a white
    # surround has no black level to read; its median and clipped share are still read
    config = QCConfig(checks=("exposure",), learn=False)
    veiled = gained(black * 0.7 + 0.3, 1)  # a lifted black level (haze) on a black surround still fails
    df = run_qc([white, black, veiled, gained(white, 2)], ["white", "black", "veiled", "overexposed"], config)
    assert df["passed"].tolist() == [True, True, False, False]
    assert df.loc[2, "reason"] == "exposure: too bright (p05 luminance 0.298 > 0.2)"
    assert df.loc[3, "reason"] == "exposure: too bright (median luminance in the field of view 0.835 > 0.8)"
    clipped = white.copy()
    clipped[:2, 24:40, 24:40] = 1.0  # a flare clipped in red and green
    assert "of the field of view clipped in two or more channels" in run_qc([clipped], ["c"], config)["reason"][0]


def test_black_level_is_learned_from_images_without_a_white_surround():
    _, report = learn_thresholds([pale_disc(0.0)] * 20 + [pale_disc(1.0)] * 5, QCConfig())
    assert report["bright_p05"]["learned"] and report["bright_p05"]["n_images"] == 20
    assert report["bright_p50"]["n_images"] == 25
    _, report = learn_thresholds([pale_disc(0.0)] * 19 + [pale_disc(1.0)] * 5, QCConfig())
    assert not report["bright_p05"]["learned"] and report["bright_p05"]["why"] == "fixed: only 19 of the 24 images measure it"


def test_thresholds_written_before_the_clipped_share_still_load(tmp_path):
    """A ``qc_thresholds.json`` without ``bright_clipped`` (an older study or export) applies the default."""
    config, report = learn_thresholds([disc()] * 20, QCConfig())
    save_thresholds(tmp_path / "qc_thresholds.json", config, report, 20)
    stored = json.loads((tmp_path / "qc_thresholds.json").read_text())
    del stored["config"]["bright_clipped"]
    (tmp_path / "qc_thresholds.json").write_text(json.dumps(stored))
    assert load_thresholds(tmp_path / "qc_thresholds.json").bright_clipped == QCConfig().bright_clipped


def _flagged(images: list[np.ndarray], config: QCConfig) -> float:
    return float(run_qc(images, [str(i) for i in range(len(images))], config)["is_exposure"].mean())


def test_learned_limits_catch_overexposed_drive_photographs(shared_path):
    """DRIVE: a gain of 2 or 3 barely moves the whole-image quantiles (the black surround stays black)."""
    images = [load_image(str(p)) for p in sorted(shared_path("data", "drive").glob("*/images/*.tif"))]
    assert len(images) == 40
    config, report = learn_thresholds(images, QCConfig())
    assert report["bright_clipped"]["learned"]
    assert report["bright_clipped"]["why"].startswith("share of the field of view clipped in two channels")
    exposure = config.model_copy(update={"checks": ("exposure",)})
    assert _flagged(images, exposure) <= 0.05  # the originals pass
    for gain in (2, 3):  # caught: 36 and 40 of 40 (without the clipped share: 20 and 36)
        assert _flagged([gained(img, gain) for img in images], exposure) >= 0.9, gain
    reasons = run_qc([gained(img, 2) for img in images], [str(i) for i in range(40)], exposure)["reason"]
    assert reasons.str.contains(f"clipped in two or more channels > {config.bright_clipped:.2%}", regex=False).any()


def test_learned_limits_catch_overexposed_retinamnist(shared_path, tmp_path):
    """RetinaMNIST saved as 128 px PNGs (28 px upsampled): overexposed x 2 and x 3."""
    x = np.load(shared_path("data", "medmnist", "retinamnist.npz"))["train_images"][:300]
    for i, a in enumerate(x):
        Image.fromarray(a).resize((128, 128), Image.BICUBIC).save(tmp_path / f"{i:03d}.png")
    images = [load_image(str(p)) for p in sorted(tmp_path.glob("*.png"))]
    config, _ = learn_thresholds(images, QCConfig())
    exposure = config.model_copy(update={"checks": ("exposure",)})
    assert _flagged(images, exposure) <= 0.05
    white = [i for i, img in enumerate(images) if white_surround(img) is not None]
    assert white == [109, 219, 223, 289]  # pale discs that nearly fill the frame, white corners
    flagged = run_qc([images[i] for i in white], [str(i) for i in white], exposure)["is_exposure"]
    assert not flagged.any()  # all four were "too bright" by the 5th percentile of the whole image
    assert _flagged([gained(img, 2) for img in images], exposure) >= 0.85  # 89 %; without the clipped share 16 %
    assert _flagged([gained(img, 3) for img in images], exposure) >= 0.9  # 98 %; 40 %
