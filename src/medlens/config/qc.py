"""Thresholds of the image quality gate, with the calibration behind each default.

Defaults were calibrated on the embedded phantom (``medlens synth``, 96 px, both sites,
``qc_defect_rate=0.5``, 351 images): every threshold sits in the gap between the clean
images (site A and the darker, softer site B) and the planted defects, with at least a
factor ~1.5 of margin on each side. Measured ranges (clean vs defect):

========================  ===================  ==========================
measure                   clean images         defect
========================  ===================  ==========================
p99 luminance             0.25 - 0.52          dark: 0.02 - 0.07
p99 luminance in FOV (*)  0.27 - 0.54          dark: 0.03 - 0.07
p05 luminance             0.00                 bright: 0.28 - 0.43
median in FOV (*)         0.17 - 0.36          bright: 0.64 - 0.89
clipped share (*)         0.00                 bright: 0.003 - 0.50
p95 - p05 luminance       0.23 - 0.47          dark: 0.02 - 0.07
blur effect (see blur)    0.43 - 0.55          blur: 0.91 - 0.96
FOV centre offset         0.01 - 0.07          off-centre: 0.19 - 0.31
pHash distance, 256 bit   >= 30 (pairs)        copies: <= 12
========================  ===================  ==========================

The blur effect is bounded by 1, so ``max_blur`` sits near the middle of the gap on the
logit scale (64 to 192 px phantoms) rather than a factor 1.5 from each side.

(*) Measured later, on the phantom of the QC tests (90 patients, seed 11, 267 images):
``dark_p99`` is now taken inside the field of view, where the gap is as wide. The clipped
share has no gap on the phantom (its clean images clip nothing, some bright defects
0.3 %); they are caught by ``bright_p05``. ``bright_clipped`` defaults to 1 % of the field
of view, above every real image of the benchmark sets but one (RetinaMNIST, 2.5 %; see
:func:`medlens.qc.checks.clipped_share`). The median has been taken in the field of view
since 2026-12-07 (clean images and defects of every kind but bright: at most 0.37), so
``bright_p50`` stays 0.8, a factor 2 above them; most bright defects fail ``bright_p05``
first.

Real data differ (X-ray, other cameras): so by default these are only starting values.
``medlens run`` learns every threshold the config does not pin from the study's own
development images (:mod:`medlens.qc.learn`), writes them to ``qc_thresholds.json`` and
ships them with the model; ``learn: false`` keeps the constants.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medlens.errors import did_you_mean

CHECKS = ("exposure", "contrast", "blur", "fov", "near_duplicate")
"""The checks of :mod:`medlens.qc.checks` (its registry holds exactly these; a test keeps them equal)."""


class QCConfig(BaseModel):
    """Which checks run and where they draw the line. Unknown fields are rejected.

    Parameters
    ----------
    checks : tuple of str
        Registered checks to run, in column order (see :func:`medlens.qc.list_checks`).
    dark_p99 : float, default=0.15
        Too dark when the 99th percentile of luminance in the field of view
        (:func:`medlens.qc.checks.fov_mask`: colour images, the bright disc; grey images,
        the whole image) is below this.
    bright_p05 : float, default=0.2
        Too bright (washed out) when the 5th percentile of luminance, the black level, is
        above this. Not read on a colour image with a white surround
        (:func:`medlens.qc.checks.white_surround`), which has no black level.
    bright_p50 : float, default=0.8
        Too bright when the median luminance in the field of view
        (:func:`medlens.qc.checks.fov_mask`) is above this.
    bright_clipped : float, default=0.01
        Too bright when a larger share of the field of view is clipped (at the top of the
        range) in at least two colour channels (:func:`medlens.qc.checks.clipped_share`;
        grey images: their one channel). Catches overexposed fundus photographs, whose
        whole-image quantiles barely move (the black surround stays black).
    min_contrast : float, default=0.1
        Low contrast when the 95th minus 5th percentile of luminance is below this.
    max_blur : float, default=0.8
        Blurred when the blur effect (Crété-Roffet 2007, :func:`medlens.qc.blur_effect`:
        0 sharp, 1 fully blurred) of the luminance is above this. It replaces
        ``min_sharpness`` (var(Laplacian) / var(image)), which on 8-bit images mistook
        quantisation noise for detail and passed blurred X-rays.
    blur_size : int, default=128
        Blur is measured on the luminance resized so that its shorter side has this many
        pixels, so that it reads alike at every resolution.
    fov_threshold : float, default=0.25
        Field-of-view pixels are brighter than this fraction of the 99th percentile.
    fov_max_offset : float, default=0.12
        Largest distance between the field-of-view centroid and the image centre,
        as a fraction of the image side.
    fov_min_coverage : float, default=0.3
        Smallest share of the image the field of view must cover.
    duplicate_max_distance : int, default=20
        Near-duplicate when the 256-bit pHashes differ in at most this many bits
        (phantom: copies <= 12, distinct images >= 30).
    fail_on : tuple of str or None, default=None
        Checks whose flag fails an image; None means all checks that ran.
    learn : bool, default=True
        Learn the thresholds not set in the config from the development images
        (robust outlier limits, :func:`medlens.qc.learn.learn_thresholds`). A threshold
        written in the config is pinned.
    learn_k : float, default=4.0
        Distance of a learned limit from the median, in robust standard deviations.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checks: tuple[str, ...] = ("exposure", "contrast", "blur", "fov", "near_duplicate")
    dark_p99: float = Field(0.15, ge=0, le=1)
    bright_p05: float = Field(0.2, ge=0, le=1)
    bright_p50: float = Field(0.8, ge=0, le=1)
    bright_clipped: float = Field(0.01, ge=0, le=1)
    min_contrast: float = Field(0.1, ge=0, le=1)
    max_blur: float = Field(0.8, gt=0, le=1)
    blur_size: int = Field(128, ge=16)
    fov_threshold: float = Field(0.25, gt=0, lt=1)
    fov_max_offset: float = Field(0.12, gt=0, le=1)
    fov_min_coverage: float = Field(0.3, ge=0, le=1)
    duplicate_max_distance: int = Field(20, ge=0, le=255)
    fail_on: tuple[str, ...] | None = None
    learn: bool = True
    learn_k: float = Field(4.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        if isinstance(data, dict) and "min_sharpness" in data:
            raise ValueError(
                "qc.min_sharpness is retired: blur is now measured by the blur effect (0 sharp, 1 fully blurred; "
                "see medlens.qc.blur_effect). Replace it by qc.max_blur (e.g. max_blur: 0.9; blurred above it) or "
                "remove it to learn the limit. A run or export made before this change: run `medlens run` again "
                "(its qc stage re-learns the limits), then `medlens export`")
        return data

    @field_validator("checks", "fail_on")
    @classmethod
    def _known(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in v or ():
            if name not in CHECKS:
                raise ValueError(f"unknown QC check {name!r}, must be in {sorted(CHECKS)}.{did_you_mean(name, sorted(CHECKS))}")
        return v
