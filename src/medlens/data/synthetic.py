"""Deterministic fundus-like phantom: the embedded default data set.

Each image is a dark frame with a circular field of view, radial vignetting, an optic
disc and a vessel tree; positive images carry small dark-red haemorrhage blobs whose
mask is the segmentation target and whose bounding box is the expert ROI (for negative
images the ROI is the optic disc). Patients have several images (camera pose and
illumination vary), and belong to one of two sites whose illumination and colour
differ, so external validation shows a real drop. With ``shared_anatomy`` a patient's
images show one eye (:class:`Eye`: colour, texture, optic disc, vessel tree and the
lesions that persist between visits); pose, illumination, focus, noise and new lesions
vary per image. Without it every image draws its own anatomy (the default, and the
demo's phantom). Three simulated annotators label each
image: an expert, a good and an unreliable one. Optional knobs plant QC defects
(dark, bright, blur, off-centre), out-of-distribution images (textures without a fundus)
and a "shortcut" marker that correlates with the label.

Everything derives from one seed through :class:`numpy.random.SeedSequence`, so the same
seed gives byte-identical PNGs and manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

QC_DEFECTS = ("dark", "bright", "blur", "off_centre")
ANNOTATORS = {"expert": 0.02, "good": 0.10, "unreliable": 0.40}
"""Annotator name -> probability of flipping the true label."""

# Site appearance: per-channel gain and overall brightness/gamma.
SITES = {
    "A": {"gain": (1.00, 1.00, 1.00), "brightness": 1.00, "gamma": 1.0, "blur": 0.0},
    "B": {"gain": (0.80, 1.08, 1.35), "brightness": 0.82, "gamma": 1.25, "blur": 0.9},
}


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides one phantom image, drawn from the generator's RNG."""

    size: int
    site: str
    n_lesions: int
    qc_defect: str = ""
    ood: bool = False
    shortcut_marker: bool = False


@dataclass(frozen=True)
class Eye:
    """One patient's eye: what stays the same across that patient's photographs.

    Lengths are fractions of the field-of-view radius, so the eye renders at any size;
    ``lesions`` holds the persistent haemorrhages as ``(angle, radial fraction, size
    fraction of the image side, strength)``.
    """

    colour: tuple[float, float, float]
    texture_seed: int
    side: float
    disc_dy: float
    disc_r: float
    vessels: tuple[tuple[float, float, float, float], ...]
    lesions: tuple[tuple[float, float, float, float], ...]


def draw_eye(rng: np.random.Generator, n_lesions: int) -> Eye:
    """Draw one eye with ``n_lesions`` persistent lesions (0 for a healthy eye)."""
    colour = tuple(float(v) for v in rng.uniform(0.9, 1.1, 3))
    texture_seed = int(rng.integers(0, 2**31 - 1))
    side, dy, disc_r = float(rng.choice([-1.0, 1.0])), float(rng.uniform(-0.08, 0.08)), float(rng.uniform(0.13, 0.17))
    vessels = tuple((float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(-1.5, 1.5)), float(rng.uniform(0.8, 1.4)),
                     float(rng.uniform(0.8, 1.6))) for _ in range(int(rng.integers(6, 10))))
    lesions = []
    for _ in range(n_lesions):
        for _attempt in range(20):
            a, rr = float(rng.uniform(0, 2 * np.pi)), float(np.sqrt(rng.uniform(0.02, 0.6)))
            if np.hypot(rr * np.cos(a) - side * 0.55, rr * np.sin(a) - dy) > 1.6 * disc_r:
                break
        lesions.append((a, rr, float(rng.uniform(0.028, 0.05)), float(rng.uniform(0.6, 0.9))))
    return Eye(colour, texture_seed, side, dy, disc_r, vessels, tuple(lesions))


def render_image(spec: ImageSpec, rng: np.random.Generator,
                 eye: Eye | None = None) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Render one phantom image.

    Parameters
    ----------
    spec : ImageSpec
        What to draw. With an ``eye``, ``spec.n_lesions`` counts the new lesions drawn
        beside the eye's persistent ones.
    rng : numpy.random.Generator
        Source of all randomness for this image.
    eye : Eye, optional
        The patient's anatomy; the image adds pose (shift, a small rotation), illumination,
        focus and noise. None: the anatomy is drawn from ``rng`` too.

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8
    mask : ndarray of shape (H, W), uint8
        1 on lesion pixels.
    roi : tuple of int
        Expert region ``(x0, y0, x1, y1)``: box around the lesions, or the optic disc.
    """
    s = spec.size
    if spec.ood:
        return _render_ood(s, rng)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    shift = 0.05 * s
    cx, cy = s / 2 + rng.uniform(-shift, shift), s / 2 + rng.uniform(-shift, shift)
    if spec.qc_defect == "off_centre":
        angle = rng.uniform(0, 2 * np.pi)
        off = s * rng.uniform(0.3, 0.45)
        cx, cy = cx + off * np.cos(angle), cy + off * np.sin(angle)
    radius = s * rng.uniform(0.42, 0.47)
    r = np.hypot(xx - cx, yy - cy) / radius
    fov = (r <= 1.0).astype(np.float32)

    colour = rng.uniform(0.9, 1.1, 3) if eye is None else np.array(eye.colour) * rng.uniform(0.92, 1.08)
    base = np.array([0.78, 0.36, 0.16], np.float32) * colour.astype(np.float32)
    vignette = np.clip(1.0 - (0.45 if eye is None else rng.uniform(0.35, 0.55)) * r**2, 0, 1)
    noise = (rng if eye is None else np.random.default_rng(eye.texture_seed)).normal(0, 1, (s, s)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), s / 24)
    texture /= texture.std() + 1e-6
    img = base[None, None, :] * (vignette * (1 + 0.05 * texture))[..., None]

    # optic disc, on the nasal side (left or right eye)
    if eye is None:
        side = rng.choice([-1.0, 1.0])
        dx, dy = cx + side * 0.55 * radius, cy + rng.uniform(-0.08, 0.08) * radius
        disc_r = radius * rng.uniform(0.13, 0.17)
    else:
        turn = rng.uniform(-0.12, 0.12)  # camera roll between visits
        ox, oy = eye.side * 0.55, eye.disc_dy
        dx = cx + (ox * np.cos(turn) - oy * np.sin(turn)) * radius
        dy = cy + (ox * np.sin(turn) + oy * np.cos(turn)) * radius
        disc_r = radius * eye.disc_r
    disc = np.exp(-(((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * (disc_r * 0.6) ** 2)))
    img += disc[..., None] * np.array([0.25, 0.35, 0.2], np.float32)
    disc_box = (dx - disc_r, dy - disc_r, dx + disc_r, dy + disc_r)

    # vessel tree: curved dark-red arcs leaving the disc
    vessels = np.zeros((s, s), np.float32)
    for k in range(len(eye.vessels) if eye is not None else int(rng.integers(6, 10))):
        theta, bend, length_f, width_f = (eye.vessels[k] if eye is not None else
                                          (rng.uniform(0, 2 * np.pi), rng.uniform(-1.5, 1.5), None, None))
        t = np.linspace(0, 1, 40)
        ang = theta + (0.0 if eye is None else turn) + bend * t
        length = radius * (rng.uniform(0.8, 1.4) if length_f is None else length_f)
        px = dx + np.cumsum(np.cos(ang)) * length / 40
        py = dy + np.cumsum(np.sin(ang)) * length / 40
        pts = np.stack([px, py], 1).round().astype(np.int32)
        width = int(max(1, round(s / 110 * (rng.uniform(0.8, 1.6) if width_f is None else width_f))))
        cv2.polylines(vessels, [pts], False, 1.0, width, lineType=cv2.LINE_AA)
    img *= 1 - 0.45 * vessels[..., None] * np.array([0.2, 1.0, 1.0], np.float32)

    # haemorrhages: small dark-red blobs inside the FOV, away from the disc
    mask = np.zeros((s, s), np.uint8)
    boxes = []
    persistent = [] if eye is None else [(a + turn, rr, size, strength) for a, rr, size, strength in eye.lesions]
    for k in range(len(persistent) + spec.n_lesions):
        if k < len(persistent):
            a, rr, size, strength = persistent[k]
            lx, ly, lr = cx + rr * radius * np.cos(a), cy + rr * radius * np.sin(a), s * size
        else:
            for _attempt in range(20):
                a, rr = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.uniform(0.02, 0.6))
                lx, ly = cx + rr * np.cos(a), cy + rr * np.sin(a)
                if np.hypot(lx - dx, ly - dy) > 1.6 * disc_r:
                    break
            lr = s * rng.uniform(0.028, 0.05)
            strength = rng.uniform(0.6, 0.9)
        blob = np.exp(-(((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * (lr * 0.7) ** 2)))
        img *= 1 - strength * blob[..., None] * np.array([0.55, 0.9, 0.9], np.float32)
        mask |= (blob > 0.5).astype(np.uint8)
        boxes.append((lx - lr, ly - lr, lx + lr, ly + lr))

    site = SITES[spec.site]
    img = img * np.array(site["gain"], np.float32) * site["brightness"]
    img = np.clip(img, 0, 1) ** site["gamma"]
    blur = site["blur"] + (0.0 if eye is None else rng.uniform(0.0, 0.8))  # focus varies between visits
    if eye is not None:
        img = img * rng.uniform(0.88, 1.12)  # illumination varies between visits
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur * s / 128)
    img = img * fov[..., None] + rng.normal(0, 0.012, img.shape).astype(np.float32)

    if spec.qc_defect == "dark":
        img = img * rng.uniform(0.08, 0.15)
    elif spec.qc_defect == "bright":
        img = img * rng.uniform(1.8, 2.4) + rng.uniform(0.3, 0.45)
    elif spec.qc_defect == "blur":
        img = cv2.GaussianBlur(img, (0, 0), s * rng.uniform(0.035, 0.05))
    if spec.shortcut_marker:
        m = max(2, s // 16)
        img[:m, :m, :] = 1.0

    box = _union(boxes) if boxes else disc_box
    roi = tuple(int(v) for v in np.clip(np.round(box), 0, s - 1))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), mask, roi  # type: ignore[return-value]


def _union(boxes: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    b = np.array(boxes)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def _render_ood(s: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """A texture with no fundus: stripes, checkerboard or smooth noise, in random colours."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    kind = int(rng.integers(0, 3))
    if kind == 0:
        f = rng.uniform(3, 9)
        g = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(f) + yy * np.sin(f)))
    elif kind == 1:
        n = int(rng.integers(3, 9))
        g = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
    else:
        g = cv2.GaussianBlur(rng.uniform(0, 1, (s, s)).astype(np.float32), (0, 0), s / 16)
        g = (g - g.min()) / (np.ptp(g) + 1e-6)
    colour = rng.uniform(0.2, 1.0, 3).astype(np.float32)
    img = g[..., None] * colour + rng.normal(0, 0.02, (s, s, 3)).astype(np.float32)
    img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return img, np.zeros((s, s), np.uint8), (0, 0, s - 1, s - 1)


def _flip(label: int, p: float, rng: np.random.Generator) -> int:
    return int(1 - label) if rng.uniform() < p else int(label)


def generate(
    out_dir: str | Path,
    *,
    n_patients: int = 150,
    seed: int = 0,
    image_size: int = 96,
    images_per_patient: tuple[int, int] = (2, 4),
    prevalence: float = 0.4,
    site_b_fraction: float = 0.3,
    qc_defect_rate: float = 0.0,
    ood_images: int = 0,
    shortcut: bool = False,
    shared_anatomy: bool = False,
) -> pd.DataFrame:
    """Write a phantom data set: ``images/*.png``, ``masks/*.png`` and ``manifest.csv``.

    Parameters
    ----------
    out_dir : path
        Folder to write into (created).
    n_patients : int
        Number of simulated patients; each has ``images_per_patient`` images (inclusive range).
    seed : int
        Same seed, same bytes.
    image_size : int
        Side of the square images in pixels.
    prevalence : float
        Fraction of patients with disease; a diseased patient's image shows lesions with
        probability 0.85, so patients can have positive and negative images.
    site_b_fraction : float
        Fraction of patients imaged at site "B" (the external site by default).
    qc_defect_rate : float
        Fraction of images given one of :data:`QC_DEFECTS`, recorded in ``qc_defect``.
    ood_images : int
        Extra images without a fundus (``is_ood`` = True, no label) from their own patients.
    shortcut : bool
        Draw a bright corner marker on 90% of positive and 10% of negative images: a model
        can reach high AUC from the marker alone, which the explainability audit must flag.
    shared_anatomy : bool
        One :class:`Eye` per patient (a diseased eye keeps 1–3 lesions between visits; an
        image with lesions adds 0–2 new ones, an image without shows none): repeat photographs
        of one eye, as MICLe assumes. False (default): each image draws its own anatomy.

    Returns
    -------
    pandas.DataFrame
        The manifest that was written to ``manifest.csv``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    patient_seeds = root.spawn(n_patients + ood_images)
    rows = []
    for p, pseq in enumerate(patient_seeds):
        prng = np.random.default_rng(pseq)
        is_ood = p >= n_patients
        pid = f"P{p:05d}"
        site = "B" if prng.uniform() < site_b_fraction else "A"
        diseased = prng.uniform() < prevalence
        n_img = 1 if is_ood else int(prng.integers(images_per_patient[0], images_per_patient[1] + 1))
        eye = draw_eye(prng, int(prng.integers(1, 4)) if diseased else 0) if shared_anatomy and not is_ood else None
        for i, iseq in enumerate(pseq.spawn(n_img)):
            rng = np.random.default_rng(iseq)
            has_lesion = (not is_ood) and diseased and rng.uniform() < 0.85
            if eye is None:
                n_lesions = int(rng.integers(1, 6)) if has_lesion else 0
            else:  # new lesions beside the persistent ones; an image without lesions shows none
                n_lesions = int(rng.integers(0, 3)) if has_lesion else 0
                image_eye = eye if has_lesion else replace(eye, lesions=())
            defect = ""
            if not is_ood and rng.uniform() < qc_defect_rate:
                defect = QC_DEFECTS[int(rng.integers(0, len(QC_DEFECTS)))]
            marker = shortcut and rng.uniform() < (0.9 if has_lesion else 0.1)
            spec = ImageSpec(image_size, site, n_lesions, defect, is_ood, marker)
            img, mask, roi = render_image(spec, rng, None if eye is None else image_eye)
            total = n_lesions + (len(image_eye.lesions) if eye is not None else 0)
            sid = f"{pid}_{i}"
            _save_png(out / "images" / f"{sid}.png", img)
            _save_png(out / "masks" / f"{sid}.png", mask * 255)
            true = int(has_lesion)
            row = {
                "sample_id": sid,
                "patient_id": pid,
                "site": site,
                "image": f"images/{sid}.png",
                "mask": f"masks/{sid}.png",
                "roi_x0": roi[0], "roi_y0": roi[1], "roi_x1": roi[2], "roi_y1": roi[3],
                "label_true": pd.NA if is_ood else true,
                "severity": pd.NA if is_ood else min(total, 4),
                "qc_defect": defect,
                "is_ood": is_ood,
                "shortcut_marker": marker,
            }
            for name, p_flip in ANNOTATORS.items():
                row[f"label_{name}"] = pd.NA if is_ood else _flip(true, p_flip, rng)
            row["label"] = row["label_expert"]
            rows.append(row)
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out / "manifest.csv", index=False)
    return manifest


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)
