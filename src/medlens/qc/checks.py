"""QC checks as a registry of small classes (cleanlab Datalab style).

Each check turns a ``float32`` C×H×W image in [0, 1] into a measurement; ``judge`` turns
the measurements of all images into ``(score, reason)`` pairs. Scores are margins to the
threshold: **score < 1 means the image is flagged**, larger is safer. ``reason`` is empty
when the image passes the check.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import cv2
import numpy as np

from medlens.errors import DataError

REGISTRY: dict[str, type["QCCheck"]] = {}
_CAP = 10.0


def register(cls: type["QCCheck"]) -> type["QCCheck"]:
    """Class decorator: add a check to :data:`REGISTRY` under its ``name``."""
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        warnings.warn(f"QC check {cls.name!r} registered twice; {cls.__name__} replaces "
                      f"{REGISTRY[cls.name].__name__}", stacklevel=2)
    REGISTRY[cls.name] = cls
    return cls


def list_checks() -> list[str]:
    """Names of the registered checks."""
    return sorted(REGISTRY)


def luminance(img: np.ndarray) -> np.ndarray:
    """Mean over channels of a C×H×W image -> H×W float32."""
    if img.ndim != 3 or img.shape[0] not in (1, 3, 4):
        raise DataError(f"QC expects float32 C×H×W images with C in (1, 3, 4), got shape {img.shape}")
    return img[:3].mean(axis=0).astype(np.float32)


def _ratio(value: float, limit: float) -> float:
    """value / limit capped to [0, 10] (score < 1 when value < limit)."""
    if limit <= 0:
        return _CAP
    return float(np.clip(value / limit, 0.0, _CAP))


class QCCheck:
    """Base class: ``measure`` one image, ``judge`` all measurements.

    Parameters
    ----------
    config : QCConfig
    """

    name: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        self.config = config

    def measure(self, img: np.ndarray, lum: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def judge(self, measurements: list[Any], sample_ids: list[str]) -> list[tuple[float, str]]:
        """Default: each measurement already is ``(score, reason)``."""
        return list(measurements)


def _bright_region(lum: np.ndarray, threshold: float) -> tuple[np.ndarray, int, np.ndarray] | None:
    """The largest connected region brighter than ``threshold`` × p99 luminance.

    Returns its ``(mask, area in pixels, centroid (x, y))``, or None when no pixel is brighter.
    """
    p99 = float(np.percentile(lum, 99))
    mask = (lum > threshold * p99).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(mask)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == k, int(stats[k, cv2.CC_STAT_AREA]), centroids[k]


WHITE = 0.85
"""A pixel with every colour channel at or above this is white (217 in an 8-bit image)."""

_CORNERS = ([0, 0, -1, -1], [0, -1, 0, -1])


def white_surround(img: np.ndarray) -> np.ndarray | None:
    """Boolean H×W mask of the white surround of a colour (fundus) image, or None.

    Some fundus cameras fill the frame around the disc with white instead of black
    (RetinaMNIST: 16 of its 1,080 training images, whose disc nearly fills the frame and
    whose four corners are white, 231 to 255 in every channel as 128 px PNGs). The
    surround is the white (:data:`WHITE`) regions that hold at least three of the four
    corner pixels; an image with fewer white corners (a black surround, a white marker in
    one corner, a grey image) has none. Read as black, it leaves the field of view
    (:func:`fov_mask`, :func:`field_of_view`) and the exposure statistics.

    Parameters
    ----------
    img : ndarray of shape (C, H, W)
        float32 in [0, 1].

    Returns
    -------
    ndarray of shape (H, W), bool, or None
    """
    if img.shape[0] < 3 or (img[:3][(slice(None), *_CORNERS)] >= WHITE).all(axis=0).sum() < 3:
        return None
    _, labels = cv2.connectedComponents((img[:3] >= WHITE).all(axis=0).astype(np.uint8))
    return np.isin(labels, np.setdiff1d(labels[_CORNERS], [0]))


def _disc(img: np.ndarray, lum: np.ndarray, threshold: float) -> tuple[np.ndarray, int, np.ndarray] | None:
    """:func:`_bright_region` of a colour image, its white surround (:func:`white_surround`) read as black."""
    surround = white_surround(img)
    return _bright_region(lum if surround is None else np.where(surround, 0, lum), threshold)


def fov_mask(img: np.ndarray, lum: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean H×W mask of the field of view over which exposure is measured.

    Colour (fundus) images: the region of :func:`field_of_view` (the largest connected
    region brighter than ``threshold`` × p99 luminance, a white surround read as black),
    so that the surround, whose share of the frame varies from camera to camera, does not
    dilute the statistics. Grey images, and colour images without such a region: every pixel.
    """
    region = _disc(img, lum, threshold) if img.shape[0] >= 3 else None
    return np.ones(lum.shape, dtype=bool) if region is None else region[0]


CLIPPED = 1 - 0.5 / 255
"""A channel value at or above this is clipped: 255 in an 8-bit image (a 16-bit one: its top 128 levels)."""


def clipped_share(img: np.ndarray, fov: np.ndarray) -> float:
    """Share of the field of view that is clipped in at least two of the three colour channels.

    Overexposure clips the sensor: a pixel at the top of the range (:data:`CLIPPED`)
    has lost its detail. One clipped channel is not counted: fundus cameras often clip
    the red channel alone in well-exposed photographs (DRIVE: the median photograph has
    1.5 % of its field of view red-clipped, one 81 %), which keep their detail in green
    and blue. Two clipped channels are rare in real images (largest share among the images
    of ``benchmarks/qc_catch.py``: DRIVE 0.3 %, RetinaMNIST 2.5 %, PneumoniaMNIST 0.05 %)
    and common in overexposed copies, whose gain barely moves the whole-image quantiles of
    a fundus photograph (its black surround stays black). A grey image has one channel:
    its clipped share.

    Parameters
    ----------
    img : ndarray of shape (C, H, W)
        float32 in [0, 1].
    fov : ndarray of shape (H, W), bool
        The field of view (:func:`fov_mask`).

    Returns
    -------
    float
        In [0, 1].
    """
    channels = img[:3]
    clipped = (channels >= CLIPPED).sum(axis=0) >= min(2, len(channels))
    return float(clipped[fov].mean())


@register
class Exposure(QCCheck):
    """Too dark or too bright.

    Too dark: the 99th percentile of luminance in the field of view (:func:`fov_mask`) is
    low. Too bright: the median luminance in the field of view or the 5th percentile of the
    image's luminance is high, or too much of the field of view is clipped
    (:func:`clipped_share`). The median is taken in the field of view for the reason the
    99th percentile is: on a fundus photograph the whole image's median falls in the disc
    or in the surround depending on how much of the frame the disc fills. The 5th
    percentile reads the black level (a fundus photograph's black surround, an X-ray's
    darkest anatomy), which a washed-out image lifts; an image with a white surround
    (:func:`white_surround`) has no black level to read, and the 5th percentile of its
    disc says how far the frame crops the disc's dark rim, not how it is exposed.
    """

    name = "exposure"

    def measure(self, img: np.ndarray, lum: np.ndarray) -> tuple[float, str]:
        c = self.config
        fov = fov_mask(img, lum, c.fov_threshold)
        p50, p99 = np.percentile(lum[fov], [50, 99])
        p05 = np.percentile(lum, 5) if white_surround(img) is None else None
        clipped = clipped_share(img, fov)
        dark = _ratio(p99, c.dark_p99)
        median = _ratio(c.bright_p50, p50)
        black = _CAP if p05 is None else _ratio(c.bright_p05, p05)
        bright = min(median, black, _ratio(c.bright_clipped, clipped) if clipped > 0 else _CAP)
        if dark < 1:
            return dark, f"too dark (p99 luminance in the field of view {p99:.3f} < {c.dark_p99:.4g})"
        if median < 1:
            return bright, f"too bright (median luminance in the field of view {p50:.3f} > {c.bright_p50:.4g})"
        if black < 1:
            return bright, f"too bright (p05 luminance {p05:.3f} > {c.bright_p05:.4g})"
        if bright < 1:
            return bright, (f"too bright ({clipped:.1%} of the field of view clipped in two or more channels "
                            f"> {c.bright_clipped:.2%})")
        return min(dark, bright), ""


@register
class Contrast(QCCheck):
    """Low contrast: the 95th minus the 5th percentile of luminance is small."""

    name = "contrast"

    def measure(self, img: np.ndarray, lum: np.ndarray) -> tuple[float, str]:
        p05, p95 = np.percentile(lum, [5, 95])
        score = _ratio(p95 - p05, self.config.min_contrast)
        return score, (f"low contrast (p95-p05 {p95 - p05:.3f} < {self.config.min_contrast})" if score < 1 else "")


def resize_short_side(lum: np.ndarray, size: int) -> np.ndarray:
    """The H×W luminance resized, aspect kept, so that its shorter side is ``size`` pixels.

    Area averaging when shrinking, bilinear when enlarging; unchanged at that size already.
    """
    h, w = lum.shape
    factor = size / min(h, w)
    if factor == 1:
        return lum
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(lum, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=interp)


def blur_effect(lum: np.ndarray, size: int) -> float:
    """Blur effect of Crété-Roffet et al. (2007): 0 sharp, 1 fully blurred.

    :func:`skimage.measure.blur_effect` (re-blurring filter of 11 pixels) on the luminance
    resized so that its shorter side is ``size`` (:func:`resize_short_side`), averaged over
    the two axes (``reduce_func=np.mean``; the paper takes the larger). A Gaussian blur of
    a given fraction of the image side then scores alike at any resolution. The mean
    rather than the maximum: on X-rays, whose anatomy (ribs) is blurrier along one axis,
    the maximum spreads the clean images' values so that the learned limit caught 79 %
    of copies blurred by 4 px at 128 px instead of 99 % (300 PneumoniaMNIST images as
    128 px PNGs, ``benchmarks/qc_catch.py``).

    Parameters
    ----------
    lum : ndarray of shape (H, W)
        Luminance in [0, 1] (:func:`luminance`).
    size : int
        Side, in pixels, at which blur is measured (``QCConfig.blur_size``).

    Returns
    -------
    float
        In [0, 1]; a constant image scores 1.

    References
    ----------
    F. Crété-Roffet, T. Dolmière, P. Ladret, M. Nicolas, "The blur effect: perception and
    estimation with a new no-reference perceptual blur metric", Proc. SPIE 6492 (2007).
    """
    return crete_roffet(resize_short_side(lum, size))


def crete_roffet(image: np.ndarray, h_size: int = 11) -> float:
    """:func:`skimage.measure.blur_effect` of a 2-D image with ``reduce_func=np.mean``, 3x faster.

    The same steps (uniform re-blur of ``h_size`` pixels along each axis, absolute Sobel
    derivatives floored at float64 epsilon, sums inside a 2-pixel border) in float64 with
    :mod:`scipy.ndimage` directly: skimage's ``sobel`` is ``ndimage.sobel / 4``, and its
    input checks cost two thirds of the time on a 128 px image. The QC tests check it
    against skimage on real images.
    """
    from scipy import ndimage as ndi

    im = np.asarray(image, np.float64)
    inner = tuple(slice(2, s - 1) for s in im.shape)
    eps = np.finfo(np.float64).eps
    ratios = []
    for ax in range(im.ndim):
        sharp = np.maximum(eps, np.abs(ndi.sobel(im, axis=ax)) / 4)
        blurred = np.maximum(eps, np.abs(ndi.sobel(ndi.uniform_filter1d(im, h_size, axis=ax), axis=ax)) / 4)
        m1 = sharp[inner].sum()
        ratios.append(abs(m1 - np.maximum(0, sharp - blurred)[inner].sum()) / m1)
    return float(np.mean(ratios))


@register
class Blur(QCCheck):
    """Blurred: the blur effect (:func:`blur_effect`) is above ``max_blur``."""

    name = "blur"

    def measure(self, img: np.ndarray, lum: np.ndarray) -> tuple[float, str]:
        c = self.config
        value = blur_effect(lum, c.blur_size)
        score = _ratio(c.max_blur, value)
        return score, (f"blurred (blur effect {value:.3f} > {c.max_blur:.3g})" if score < 1 else "")


def field_of_view(img: np.ndarray, lum: np.ndarray, threshold: float) -> tuple[float, float]:
    """Return ``(centre offset, coverage)`` of the field of view, both as fractions of the image.

    Colour (fundus) images: the largest connected region brighter than ``threshold`` × p99
    luminance (the circular FOV), a white surround (:func:`white_surround`) read as black.
    Grey (X-ray) images: the bounding box of rows and columns that are not uniform
    (collimation and borders are uniform).
    """
    h, w = lum.shape
    if img.shape[0] >= 3:
        region = _disc(img, lum, threshold)
        if region is None:
            return 1.0, 0.0
        _, area, (cx, cy) = region
        return float(np.hypot(cx / w - 0.5, cy / h - 0.5)), float(area / (h * w))
    rows = np.flatnonzero(lum.std(axis=1) > 0.01)
    cols = np.flatnonzero(lum.std(axis=0) > 0.01)
    if rows.size == 0 or cols.size == 0:
        return 1.0, 0.0
    cy, cx = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
    cover = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) / (h * w)
    return float(np.hypot(cx / w - 0.5, cy / h - 0.5)), float(cover)


@register
class FieldOfView(QCCheck):
    """Field of view off-centre or too small (fundus disc; X-ray collimation/border)."""

    name = "fov"

    def measure(self, img: np.ndarray, lum: np.ndarray) -> tuple[float, str]:
        c = self.config
        offset, cover = field_of_view(img, lum, c.fov_threshold)
        centred = _ratio(c.fov_max_offset, offset) if offset > 0 else _CAP
        covered = _ratio(cover, c.fov_min_coverage)
        if centred < 1:
            return centred, f"field of view off-centre (offset {offset:.2f} > {c.fov_max_offset})"
        if covered < 1:
            return covered, f"field of view too small (coverage {cover:.2f} < {c.fov_min_coverage})"
        return min(centred, covered), ""


def dhash(lum: np.ndarray, size: int = 8) -> np.ndarray:
    """Difference hash: ``size``² bits, signs of horizontal gradients on a (size+1)×size thumbnail."""
    small = cv2.resize(lum, (size + 1, size), interpolation=cv2.INTER_AREA)
    return (small[:, 1:] > small[:, :-1]).ravel()


def phash(lum: np.ndarray, size: int = 16) -> np.ndarray:
    """Perceptual hash: ``size``² bits, low DCT coefficients of a 4·size thumbnail vs their median."""
    small = cv2.resize(lum, (4 * size, 4 * size), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:size, :size].ravel()
    return low > np.median(low[1:])


@register
class NearDuplicate(QCCheck):
    """Near-duplicate of an earlier image: 256-bit pHashes within ``duplicate_max_distance`` bits.

    Only the later image of a pair is flagged; its reason names the earlier sample. On the
    phantom, re-encoded/resized/re-exposed copies differ by <= 12 bits and distinct images
    (which all share the dark frame and circular field of view) by >= 30.
    """

    name = "near_duplicate"

    def measure(self, img: np.ndarray, lum: np.ndarray) -> np.ndarray:
        return phash(lum, 16)

    def judge(self, measurements: list[np.ndarray], sample_ids: list[str]) -> list[tuple[float, str]]:
        limit = self.config.duplicate_max_distance
        if not measurements:
            return []
        bits = np.stack(measurements)
        out = []
        for i in range(len(measurements)):
            if i == 0:
                out.append((_CAP, ""))
                continue
            dist = (bits[:i] != bits[i]).sum(axis=1)
            j = int(np.argmin(dist))
            score = float(np.clip(dist[j] / (limit + 0.5), 0, _CAP))
            out.append((score, f"near-duplicate of {sample_ids[j]} ({int(dist[j])} bits)" if score < 1 else ""))
        return out
