"""Quality-gate thresholds learned from the study's own images (robust outlier limits).

Constants calibrated on one kind of image reject another: on real chest X-rays the
phantom's brightness limits reject 85 % of the images. So each threshold that the user
has not pinned is learned from the development images: the measure is put on a scale
where outliers are symmetric (logit for measures in [0, 1]: quantiles of luminance and
the blur effect; log for contrast; linear for field-of-view geometry), and the limit sits
``k`` robust standard deviations (1.4826 x MAD) from the median, on the failing side. The
spread is floored (``_Measure.floor``) so that a tight cluster of clean images does not
turn a modest, legitimate shift (another scanner, a darker or softer site) into a
rejection; exposure limits also stay at least ``MIN_SHIFT`` of the luminance range from
the median (on the phantom, whose 5th percentile is black, the logit floor alone would
fail any image with grey corners as "too bright"), and the clipped share at least
``CLIPPED_SHIFT`` of the field of view: real images rarely clip two channels, so its median
is 0, its spread the floor, and the floor alone (a limit of 0.27 %) would fail a clipped
reflex of a few pixels. With 0.5 % (a limit of 0.6 %) every real image of
``benchmarks/qc_catch.py`` stays below it (DRIVE at most 0.33 %, PneumoniaMNIST 0.05 %)
except one RetinaMNIST image (2.5 %, a white flare at the rim; the clipped white corners
of two frame-filling photographs, 0.9 % each, are a white surround, which the field of view
leaves out: :func:`medlens.qc.checks.white_surround`), and 90 % of DRIVE copies
overexposed x 2 are caught (a shift of 1 %: 80 %). Images with a white surround have no
black level: ``bright_p05`` is learned from the others.

The blur floor, 0.1 on the logit scale, is below the spread of real images (logit SD of
the blur effect: PneumoniaMNIST 0.19, RetinaMNIST 0.20, DRIVE 0.09, all at 128 px) and
above the phantom's (0.05), whose softer site B would otherwise fail limits learned on
site A alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medlens.qc.checks import blur_effect, clipped_share, field_of_view, fov_mask, luminance, white_surround
from medlens.config.qc import QCConfig

_EPS = 1e-3
#: Smallest distance, on the [0, 1] luminance range, between a learned exposure limit and the median.
MIN_SHIFT = 0.15
#: Smallest distance between the learned limit of the clipped share and its median, as a share of the field of view.
CLIPPED_SHIFT = 0.005


@dataclass(frozen=True)
class _Measure:
    field: str  # QCConfig field the limit is written to
    check: str  # check that uses it
    side: str  # "low": small values fail; "high": large values fail
    scale: str  # logit | log | linear
    floor: float  # smallest spread on that scale
    describe: str
    min_shift: float = 0.0  # smallest distance of the limit from the median, on the measure's own scale
    shift_unit: str = "of the luminance range"  # what min_shift is a share of


MEASURES = (
    _Measure("dark_p99", "exposure", "low", "logit", 0.25, "99th percentile of luminance in the field of view", MIN_SHIFT),
    _Measure("bright_p05", "exposure", "high", "logit", 0.25, "5th percentile of luminance (black level)", MIN_SHIFT),
    _Measure("bright_p50", "exposure", "high", "logit", 0.25, "median luminance in the field of view", MIN_SHIFT),
    _Measure("bright_clipped", "exposure", "high", "logit", 0.25, "share of the field of view clipped in two channels",
             CLIPPED_SHIFT, "of the field of view"),
    _Measure("min_contrast", "contrast", "low", "log", 0.25, "95th minus 5th percentile of luminance"),
    _Measure("max_blur", "blur", "high", "logit", 0.1, "blur effect (Crété-Roffet 2007)"),
    _Measure("fov_max_offset", "fov", "high", "linear", 0.03, "field-of-view centre offset"),
    _Measure("fov_min_coverage", "fov", "low", "linear", 0.05, "field-of-view coverage"),
)


def _forward(x: np.ndarray, scale: str) -> np.ndarray:
    if scale == "logit":
        x = np.clip(x, _EPS, 1 - _EPS)
        return np.log(x / (1 - x))
    if scale == "log":
        return np.log(np.maximum(x, 1e-8))
    return x


def _inverse(z: float, scale: str) -> float:
    if scale == "logit":
        return 1 / (1 + math.exp(-z))
    if scale == "log":
        return math.exp(z)
    return z


def measure(img: np.ndarray, config: QCConfig) -> dict[str, float]:
    """The raw measures of one C×H×W float32 image in [0, 1], keyed by the QCConfig field they set.

    ``bright_p05`` is NaN for an image with a white surround (:func:`medlens.qc.checks.white_surround`),
    which the exposure check does not judge by its 5th percentile.
    """
    lum = luminance(img)
    p05, p95 = np.percentile(lum, [5, 95])
    fov = fov_mask(img, lum, config.fov_threshold)
    p50, p99 = np.percentile(lum[fov], [50, 99])
    offset, cover = field_of_view(img, lum, config.fov_threshold)
    black_level = float(p05) if white_surround(img) is None else math.nan
    return {"dark_p99": float(p99), "bright_p05": black_level, "bright_p50": float(p50),
            "bright_clipped": clipped_share(img, fov), "min_contrast": float(p95 - p05),
            "max_blur": blur_effect(lum, config.blur_size), "fov_max_offset": offset, "fov_min_coverage": cover}


def learn_thresholds(images: Iterable[np.ndarray], config: QCConfig,
                     progress: Callable[[Iterable], Iterable] | None = None) -> tuple[QCConfig, dict]:
    """Learn every threshold of ``config`` that is not pinned from ``images``.

    Parameters
    ----------
    images : iterable of ndarray (C, H, W), float32 in [0, 1]
        The development images (never the test or external ones); consumed once.
    config : QCConfig
        Fields set explicitly (``config.model_fields_set``) are pinned and kept; with
        ``config.learn`` False nothing is learned.

    Returns
    -------
    config : QCConfig
        With learned limits.
    report : dict
        Per field: ``value``, ``learned`` (bool), ``median``, ``n_images`` (the images that
        measure it: ``bright_p05`` skips those with a white surround) and a sentence.
    """
    active = [m for m in MEASURES if m.check in config.checks]
    pinned = set(config.model_fields_set)
    values: dict[str, list[float]] = {m.field: [] for m in active}
    n = 0
    for img in (progress(images) if progress else images):
        found = measure(np.asarray(img, dtype=np.float32), config)
        for m in active:
            values[m.field].append(found[m.field])
        n += 1
    update, report = {}, {}
    for m in active:
        data = np.asarray(values[m.field], dtype=np.float64)
        data = data[~np.isnan(data)]
        fixed = getattr(config, m.field)
        if not config.learn or m.field in pinned or len(data) < 20:
            why = "pinned in the config" if m.field in pinned else (
                "fixed (qc.learn: false)" if not config.learn else
                f"fixed: only {len(data)} images to learn from" if len(data) == n else
                f"fixed: only {len(data)} of the {n} images measure it")
            report[m.field] = {"value": fixed, "learned": False, "n_images": len(data), "why": why}
            continue
        z = _forward(data, m.scale)
        med = float(np.median(z))
        spread = max(1.4826 * float(np.median(np.abs(z - med))), m.floor)
        robust = _inverse(med - config.learn_k * spread if m.side == "low" else med + config.learn_k * spread, m.scale)
        limit = robust
        how = f"{config.learn_k:g} robust SD on the {m.scale} scale"
        if m.min_shift:  # never fail a shift of less than min_shift (of the luminance range, of the field of view)
            centre = _inverse(med, m.scale)
            limit = min(limit, centre - m.min_shift) if m.side == "low" else max(limit, centre + m.min_shift)
            if limit != robust:
                how = f"the smallest allowed distance, {m.min_shift:g} {m.shift_unit}"
        limit = float(np.clip(limit, 0.0, 1.0)) if m.scale != "log" else limit
        update[m.field] = limit
        report[m.field] = {
            "value": limit, "learned": True, "n_images": len(data), "median": _inverse(med, m.scale),
            "why": f"{m.describe}: {'below' if m.side == 'low' else 'above'} {limit:.4g} fails "
                   f"(median {_inverse(med, m.scale):.4g}; {how})",
        }
    learned = config.model_copy(update=update)
    return learned, report


def save_thresholds(path: Path, config: QCConfig, report: dict, n_images: int) -> None:
    """Write ``qc_thresholds.json``: the applied config, the per-threshold report, the images learned from."""
    Path(path).write_text(json.dumps({"config": config.model_dump(mode="json"), "thresholds": report,
                                      "learned_on": n_images}, indent=1))


def load_thresholds(path: Path) -> QCConfig:
    """The QC config stored in a ``qc_thresholds.json`` (every threshold fixed)."""
    return QCConfig(**json.loads(Path(path).read_text())["config"])


def applied_config(run: Path, default: QCConfig) -> QCConfig:
    """The QC config a run applied (its ``qc_thresholds.json``), or ``default`` for runs without one."""
    path = Path(run) / "qc_thresholds.json"
    return load_thresholds(path) if path.is_file() else default
