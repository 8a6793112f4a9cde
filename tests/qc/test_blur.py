"""The blur check: its measure against skimage's own ``blur_effect``, and learned limits that catch blurred copies.

Planted copies are blurred with a Gaussian of ``sigma`` pixels at 128 px (scaled with the
image's shorter side) and rounded to 8 bits, as a saved PNG holds them: the rounding is
what made the retired var(Laplacian) measure pass blurred X-rays.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.measure import blur_effect as skimage_blur_effect
from skimage.transform import resize

from medlens.data.images import load_image
from medlens.data.synthetic import generate
from medlens.config import QCConfig
from medlens.qc import blur_effect, run_qc
from medlens.qc.checks import luminance, resize_short_side
from medlens.qc.learn import learn_thresholds, load_thresholds, save_thresholds


def blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    """A C×H×W copy blurred by ``sigma`` px at 128 px, rounded to 8 bits."""
    s = sigma * min(img.shape[1:]) / 128
    out = np.stack([cv2.GaussianBlur(c, (0, 0), s) for c in img]) if sigma else img
    return (np.clip(out, 0, 1) * 255).round().astype(np.float32) / 255


def camera() -> np.ndarray:
    return data.camera().astype(np.float32) / 255


def test_agrees_with_skimage_on_the_same_input():
    lum = camera()  # 512 x 512
    assert blur_effect(lum, 512) == pytest.approx(skimage_blur_effect(lum, reduce_func=np.mean), abs=1e-6)
    small = resize_short_side(lum, 128)
    assert small.shape == (128, 128)
    assert blur_effect(lum, 128) == pytest.approx(skimage_blur_effect(small, reduce_func=np.mean), abs=1e-6)
    # the downscale is an ordinary one: skimage's own anti-aliased resize reads alike
    assert blur_effect(lum, 128) == pytest.approx(skimage_blur_effect(resize(lum, (128, 128), anti_aliasing=True),
                                                                      reduce_func=np.mean), abs=0.05)
    fundus = luminance(data.retina().astype(np.float32).transpose(2, 0, 1) / 255)  # a real RGB fundus, 1411 px
    assert blur_effect(fundus, 1411) == pytest.approx(skimage_blur_effect(fundus, reduce_func=np.mean), abs=1e-6)


def test_rises_with_blur_reads_alike_at_any_size_and_brightness():
    img = camera()[None]
    values = [blur_effect(luminance(blurred(img, s)), 128) for s in (0, 1, 2, 4, 6)]
    assert np.all(np.diff(values) > 0.04), values
    half = cv2.resize(img[0], (256, 256), interpolation=cv2.INTER_AREA)[None]
    assert blur_effect(luminance(blurred(half, 4)), 128) == pytest.approx(values[3], abs=0.03)
    assert blur_effect(img[0] * 0.4, 128) == pytest.approx(values[0], abs=1e-4)
    assert blur_effect(np.full((40, 60), 0.3, np.float32), 128) == 1.0  # nothing to see is fully blurred


def _pneumonia_128(npz: Path, n: int) -> list[np.ndarray]:
    """PneumoniaMNIST training images saved as 128 px PNGs by a user (bicubic), as the gate reads them."""
    x = np.load(npz)["train_images"][:n]
    return [np.asarray(Image.fromarray(a).resize((128, 128), Image.BICUBIC), np.float32)[None] / 255 for a in x]


def _drive(root: Path) -> list[np.ndarray]:
    return [load_image(str(p)) for p in sorted(root.glob("*/images/*.tif"))]


def test_agrees_with_skimage_on_real_images(shared_path):
    x = np.load(shared_path("data", "medmnist", "pneumoniamnist.npz"))["train_images"][:5]
    for a in x:  # 28 px grey X-rays: skimage reads the uint8 file itself
        assert blur_effect(a.astype(np.float32) / 255, 28) == pytest.approx(skimage_blur_effect(a, reduce_func=np.mean),
                                                                            abs=1e-6)
    for img in _drive(shared_path("data", "drive"))[:3]:  # 565 x 584 colour photographs
        lum = luminance(img)
        assert blur_effect(lum, 565) == pytest.approx(skimage_blur_effect(lum, reduce_func=np.mean), abs=1e-6)
        assert blur_effect(lum, 128) == pytest.approx(skimage_blur_effect(resize_short_side(lum, 128),
                                                                          reduce_func=np.mean), abs=1e-6)


def _caught(images: list[np.ndarray], config: QCConfig) -> float:
    return float(run_qc(images, [str(i) for i in range(len(images))], config)["is_blur"].mean())


def _check_learned_limit(images: list[np.ndarray]) -> QCConfig:
    config, report = learn_thresholds(images, QCConfig())
    assert report["max_blur"]["learned"] and report["max_blur"]["why"].startswith("blur effect")
    assert _caught(images, config) <= 0.05  # the originals pass
    for sigma in (4, 6):
        assert _caught([blurred(img, sigma) for img in images], config) >= 0.9, sigma
    return config


@pytest.mark.parametrize("modality", ["pneumoniamnist", "drive"])
def test_learned_limit_catches_blurred_real_images(shared_path, modality):
    if modality == "drive":
        images = _drive(shared_path("data", "drive"))
    else:
        images = _pneumonia_128(shared_path("data", "medmnist", "pneumoniamnist.npz"), 100)
    _check_learned_limit(images)


def test_learned_limit_catches_blurred_phantoms(tmp_path):
    manifest = generate(tmp_path, n_patients=12, seed=3, image_size=96)
    _check_learned_limit([load_image(ref, tmp_path) for ref in manifest["image"]])


def test_service_applies_the_study_limit(tmp_path):
    """``qc_verdict`` (the service) judges with the limit the study learned and wrote to qc_thresholds.json."""
    from medlens.serve.engine import qc_verdict

    manifest = generate(tmp_path, n_patients=12, seed=4, image_size=96)
    images = [load_image(ref, tmp_path) for ref in manifest["image"]]
    learned, report = learn_thresholds(images, QCConfig())
    save_thresholds(tmp_path / "qc_thresholds.json", learned, report, len(images))
    assert json.loads((tmp_path / "qc_thresholds.json").read_text())["config"]["max_blur"] == learned.max_blur
    served = load_thresholds(tmp_path / "qc_thresholds.json")
    assert served.max_blur == learned.max_blur and served.blur_size == learned.blur_size
    study = run_qc([images[0], blurred(images[0], 4)], ["a", "a_blurred"], learned)
    for img, row in zip([images[0], blurred(images[0], 4)], study.itertuples()):
        verdict = qc_verdict(img, served)
        assert verdict["scores"]["blur"] == pytest.approx(row.blur_score, abs=1e-4)
        assert any(r.startswith("blur: blurred") for r in verdict["reasons"]) == row.is_blur
    assert study["is_blur"].tolist() == [False, True]
