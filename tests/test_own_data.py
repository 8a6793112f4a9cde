"""Issue 17: a user's own images through `medlens init` and `medlens run`, and clear stops on bad data.

The X-ray folder is PneumoniaMNIST's *test* split (the QC limits were designed looking at
its train split) saved as 128 px PNGs in normal/ and pneumonia/, as a hospital would hand
them over.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from helpers.dicom import SHARED
from helpers.privacy import HANGUL, leaks, private_map
from PIL import Image

MEDMNIST = SHARED / "data" / "medmnist"


def _png_folder(npz: str, root: Path, n_per_class: int, classes: dict[int, str], split: str = "test") -> Path:
    data = np.load(MEDMNIST / npz)
    x, y = data[f"{split}_images"], data[f"{split}_labels"][:, 0]
    rng = np.random.default_rng(0)
    for label, name in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        pool = np.flatnonzero(y == label)
        for i in rng.choice(pool, min(n_per_class, len(pool)), replace=False):
            Image.fromarray(x[i]).resize((128, 128), Image.BICUBIC).save(root / name / f"img{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def xray(tmp_path_factory) -> Path:
    if not (MEDMNIST / "pneumoniamnist.npz").is_file():
        pytest.skip(f"PneumoniaMNIST not found under {MEDMNIST} (../shared is absent)")
    return _png_folder("pneumoniamnist.npz", tmp_path_factory.mktemp("own") / "xray", 150, {0: "normal", 1: "pneumonia"})


def _defects(img: np.ndarray) -> dict[str, np.ndarray]:
    """Planted copies: darkened, overexposed (saturating gain), blurred (sigma 4 px at 128 px), cropped (40 % off)."""
    w = img.shape[-1]
    shifted = np.zeros_like(img)
    shifted[..., int(0.4 * w):] = img[..., : w - int(0.4 * w)]
    return {"dark": img * 0.3, "overexposed": np.clip(img * 2.0, 0, 1),
            "blurred": np.stack([cv2.GaussianBlur(c, (0, 0), w / 32) for c in img]), "cropped": shifted}


def _qc(folder: Path):
    from medlens.data.images import load_image
    from medlens.config import QCConfig
    from medlens.qc import run_qc
    from medlens.qc.learn import learn_thresholds

    images = [load_image(str(p)) for p in sorted(folder.rglob("*.png"))]
    config, _ = learn_thresholds(images, QCConfig())
    clean = run_qc(images, [str(i) for i in range(len(images))], config)
    caught = {}
    single = config.model_copy(update={"checks": tuple(c for c in config.checks if c != "near_duplicate")})
    for kind in ("dark", "overexposed", "blurred", "cropped"):
        bad = [_defects(img)[kind] for img in images]
        caught[kind] = float((~run_qc(bad, [str(i) for i in range(len(bad))], single)["passed"]).mean())
    return float(clean["passed"].mean()), caught


def test_quality_gate_learns_real_xrays(xray):
    passed, caught = _qc(xray)
    assert passed >= 0.95, passed
    assert min(caught.values()) >= 0.90, caught
    from medlens.data.images import load_image
    from medlens.config import QCConfig
    from medlens.qc import run_qc

    images = [load_image(str(p)) for p in sorted(xray.rglob("*.png"))]
    fixed = run_qc(images, [str(i) for i in range(len(images))], QCConfig(learn=False))
    assert fixed["passed"].mean() < 0.2  # the phantom's constants reject most (exposure): as the first real run met


def test_quality_gate_learns_fundus_too(tmp_path):
    if not (MEDMNIST / "retinamnist.npz").is_file():
        pytest.skip(f"RetinaMNIST not found under {MEDMNIST}")
    # the train split: the limits' spread floors were set looking at RetinaMNIST test images
    folder = _png_folder("retinamnist.npz", tmp_path / "fundus", 80, {k: f"grade{k}" for k in range(5)}, "train")
    passed, caught = _qc(folder)
    # Measured 2026-12-07: 0.953 (368 of 386; 0.920 before the median moved into the field of view
    # and white surrounds stopped reading as overexposure, 25 of its 31 rejections "too bright").
    # The 18 rejections: 7 too bright (4 by the clipped share: white flares at the rim; 3 by the
    # median luminance in the field of view), 5 field of view off-centre or too small, 5
    # near-duplicates, 1 too dark. Caught: dark 87 %, overexposed 88 %, blurred 99 %, cropped 100 %.
    # 0.93 leaves 9 of the 386 images as margin for this one seeded sample.
    assert passed >= 0.93, passed
    assert caught["dark"] >= 0.8 and caught["cropped"] >= 0.9 and caught["blurred"] >= 0.9, caught
    assert caught["overexposed"] >= 0.85, caught


def _medlens(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medlens.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **(env or {})})


def _as_a_hospital_names_it(xray: Path, root: Path) -> list[str]:
    """A copy of the folder whose sub-folders and files carry names, record numbers and dates (Latin and Hangul)."""
    planted = []
    for i, f in enumerate(sorted(xray.rglob("*.png"))):
        who = f"{HANGUL[i % len(HANGUL)]}_PT{i:04d}Q"
        folder = root / f.parent.name / f"{who}_2024{(i % 12) + 1:02d}{(i % 27) + 1:02d}"
        stem = f"KIM_JH_{10_000_000 + i * 7919}_2024110{i % 10}"
        folder.mkdir(parents=True)
        shutil.copyfile(f, folder / f"{stem}.png")
        planted += [folder.name, stem, who]
    return planted


def test_init_then_run_on_the_xray_folder(xray, tmp_path):
    """A new user's X-ray folder, named as a hospital names it: the study runs, and names none of its files."""
    planted = _as_a_hospital_names_it(xray, tmp_path / "xray")
    xray = tmp_path / "xray"
    init = res = _medlens("init", str(xray), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "300 images, 300 patients" in res.stdout and "normal 150, pneumonia 150" in res.stdout
    assert "privacy: `medlens run` replaces file names and patient IDs by keyed pseudonyms" in res.stdout
    study = yaml.safe_load((tmp_path / "xray.yaml").read_text())
    assert study["data"] == {"source": "imagefolder", "path": str(xray)} and study["split"]["external_site"] is None
    assert "engine" not in study and "fundus-like" not in res.stdout  # an X-ray keeps the default preprocessing
    # the written YAML as it is, but 1 epoch instead of 20: the whole default study, every stage, in a fraction
    # of the time (the assertions are about ingest, QC, the report and the exit status, not the model)
    study["train"] = {"epochs": 1}
    (tmp_path / "xray.yaml").write_text(yaml.safe_dump(study))
    res = _medlens("run", "xray.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "runs" / "xray"
    import pandas as pd

    qc = pd.read_parquet(run / "qc.parquet")
    assert qc["passed"].mean() >= 0.95
    html = (run / "report.html").read_text()
    assert "Thresholds: learned from the 300 internal images" in html and "test" in res.stdout
    # issue 32: no folder or file name anywhere in the run directory or the output; the map outside maps back
    assert not leaks(run, planted + [str(xray)], init.stdout, init.stderr, res.stdout, res.stderr)
    key = private_map(run).set_index("sample_id")
    manifest = pd.read_parquet(run / "manifest.parquet")
    back = key.loc[manifest["sample_id"], "original_image"]
    assert all(Path(p).is_file() and Path(p).is_relative_to(xray) for p in back)
    from medlens.data.images import load_image

    for ref, original in list(zip(manifest["image"], back))[:20]:  # the staged copy holds the original's pixels
        assert np.array_equal(load_image(ref), load_image(original))


def _stop(tmp_path: Path, study: dict) -> str:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    res = _medlens("run", "s.yaml", cwd=tmp_path, env={"MEDLENS_DEID_SECRET": "a-test-secret-of-32-characters!!"})
    assert res.returncode == 2, (res.stdout, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not re.match(r"\d\d:\d\d:\d\d stage ", ln)]
    assert len(lines) <= 3, lines  # one message (rich may wrap it), after the stages' start and end lines
    return " ".join(ln.strip() for ln in lines)


def test_stop_every_image_rejected(xray, tmp_path):
    msg = _stop(tmp_path, {"data": {"source": "imagefolder", "path": str(xray)}, "qc": {"max_blur": 0.1}})
    assert "rejected all 300 images" in msg and "blur: 300" in msg and "qc_thresholds.json" in msg
    assert "{checks: [exposure, contrast]}" in msg  # the hint is printed as written, not eaten as markup


def test_stop_external_site_that_does_not_exist(xray, tmp_path):
    msg = _stop(tmp_path, {"data": {"source": "imagefolder", "path": str(xray)}, "split": {"external_site": "B"}})
    assert "external_site 'B' names no image" in msg and "['local']" in msg


def _csv(tmp_path: Path, n_pos: int, n_neg: int, missing: bool = False) -> Path:
    rows = ["image,label,patient_id"]
    rng = np.random.default_rng(0)
    for i in range(n_pos + n_neg):
        name = f"i{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / name)
        rows.append(f"{name},{int(i < n_pos)},P{i}")
    if missing:
        rows.append("gone.png,0,P999")
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "table.csv"


def test_stop_fold_without_a_positive(tmp_path):
    table = _csv(tmp_path, n_pos=2, n_neg=40)
    msg = _stop(tmp_path, {"data": {"source": "csv", "path": str(table), "csv_columns": {"site": None}},
                           "qc": {"learn": False, "checks": ["exposure"]}})
    assert "of class 1" in msg and "lower split.folds" in msg


def test_stop_csv_row_whose_image_is_missing(tmp_path):
    table = _csv(tmp_path, n_pos=10, n_neg=10, missing=True)
    msg = _stop(tmp_path, {"data": {"source": "csv", "path": str(table), "csv_columns": {"site": None}}})
    assert "row 22, column 'image'" in msg and "gone.png not found" in msg


def test_csv_with_annotators_boxes_and_metadata_drives_audit_agreement_and_subgroups(tmp_path):
    """A user's table (the phantom's images, renamed columns as a hospital would have them)."""
    import json

    import pandas as pd

    from medlens.data.synthetic import generate
    from medlens.stages.runner import run_study
    from helpers.study import make_tiny_config

    m = generate(tmp_path / "images", n_patients=40, seed=1, image_size=64)
    rng = np.random.default_rng(0)
    patients = sorted(m["patient_id"].unique())
    sex = dict(zip(patients, rng.choice(["F", "M"], len(patients))))
    age = dict(zip(patients, rng.integers(20, 90, len(patients))))
    table = pd.DataFrame({
        "file": [str(Path("images") / p) for p in m["image"]], "subject": m["patient_id"], "hospital": m["site"],
        "expert": m["label_expert"], "reader_1": m["label_good"], "reader_2": m["label_unreliable"],
        "bx0": m["roi_x0"], "by0": m["roi_y0"], "bx1": m["roi_x1"], "by1": m["roi_y1"],
        "sex": m["patient_id"].map(sex), "age": m["patient_id"].map(age)})
    table.to_csv(tmp_path / "study.csv", index=False)
    columns = {"image": "file", "label": "expert", "patient_id": "subject", "site": "hospital",
               "annotators": ["expert", "reader_1", "reader_2"], "roi": ["bx0", "by0", "bx1", "by1"],
               "metadata": ["sex", "age"]}
    cfg = make_tiny_config(tmp_path / "runs", data={"source": "csv", "path": str(tmp_path / "study.csv"),
                                                    "csv_columns": columns},
                           split={"external_site": None}, evaluate={"subgroups": ["site", "sex", "age"]})
    run = run_study(cfg)
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert {"label_expert", "label_reader_1", "label_reader_2", "roi_x0", "sex", "age"} <= set(manifest.columns)
    trust = json.loads((run / "trust" / "summary.json").read_text())
    assert set(trust["annotators"]["ranking"]) == {"expert", "reader_1", "reader_2"}
    assert trust["annotators"]["least_reliable"] == "reader_2"  # the phantom's unreliable reader
    explain = json.loads((run / "explain" / "summary.json").read_text())
    assert explain["roi"] == "box" and explain["n_scored"] > 0
    groups = json.loads((run / "metrics.json").read_text())["subgroups"]["columns"]
    assert set(groups) == {"site", "sex", "age"}
    assert {r["level"] for r in groups["age"]["levels"]} <= {"<40", "40-59", "60-74", ">=75"}
    assert sum(r["n_images"] for r in groups["sex"]["levels"]) == len(pd.read_parquet(run / "predictions.parquet")
                                                                      .query("part != 'val'"))
    html = (run / "report.html").read_text()
    assert "Subgroups (held-out images)" in html and "heterogeneity p" in html


def test_stop_mask_whose_size_differs_from_its_image(tmp_path):
    table = _csv(tmp_path, n_pos=10, n_neg=10)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "small_mask.png")
    rows = table.read_text().splitlines()
    rows = [rows[0] + ",mask"] + [r + ",small_mask.png" for r in rows[1:]]
    table.write_text("\n".join(rows) + "\n")
    msg = _stop(tmp_path, {"data": {"source": "csv", "path": str(table), "csv_columns": {"site": None, "mask": "mask"}}})
    assert "row 2, column 'mask'" in msg and "32x32 but its image is 64x64" in msg


def test_drive_from_a_csv_is_a_segmentation_study_scored_inside_the_fov(tmp_path):
    """DRIVE (real fundus photographs) as a user would list it; the official 20/20 split as a split column."""
    import json

    import pandas as pd

    from helpers.study import make_tiny_config
    from medlens.stages.runner import run_study

    drive = SHARED / "data" / "drive"
    if not drive.is_dir():
        pytest.skip(f"DRIVE not found at {drive} (../shared is absent)")
    rows = []
    for part, tag in (("training", "training"), ("testing", "test")):
        for img in sorted((drive / part / "images").glob("*.tif")):
            n = img.name.split("_")[0]
            split = "test" if part == "testing" else ("val" if int(n) > 36 else "train")
            rows.append({"image": str(img), "vessels": str(drive / part / "1st_manual" / f"{n}_manual1.gif"),
                         "fov": str(drive / part / "mask" / f"{n}_{tag}_mask.gif"), "eye": f"D{n}", "label": 1,
                         "split": split})
    pd.DataFrame(rows).to_csv(tmp_path / "drive.csv", index=False)
    columns = {"patient_id": "eye", "site": None, "mask": "vessels", "fov_mask": "fov", "metadata": ["split"]}
    cfg = make_tiny_config(tmp_path / "runs", task="segmentation",
                           data={"source": "csv", "path": str(tmp_path / "drive.csv"), "csv_columns": columns},
                           split={"strategy": "predefined", "external_site": None},
                           train={"epochs": 2, "image_size": 96})
    run = run_study(cfg)
    metrics = json.loads((run / "seg" / "metrics.json").read_text())
    assert metrics["inside_fov"] is True and "test" in metrics
    overlays = np.load(run / "seg" / "overlays.npz")
    from medlens.seg.data import load_masks

    manifest = pd.read_parquet(run / "manifest.parquet").set_index("sample_id")
    test_ids = json.loads((run / "splits.json").read_text())["test"]
    fov = load_masks(manifest.loc[test_ids].reset_index(), size=96, column="fov_mask")[:, 0].numpy().astype(bool)
    outside = ~fov.any(axis=0)  # pixels outside every test image's field of view (the corners)
    assert outside.sum() > 0.1 * outside.size
    assert overlays["pred"][:, outside].max() == 0 and overlays["truth"][:, outside].max() == 0


def test_init_on_fundus_photographs_turns_on_the_fundus_preprocessing(shared_path, tmp_path):
    """DRIVE's photographs in two class folders: init writes the crop to the field of view and CLAHE on L of LAB."""
    drive = shared_path("data", "drive", "training", "images")
    for i, f in enumerate(sorted(drive.iterdir())[:8]):
        (tmp_path / "fundus" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, tmp_path / "fundus" / "ab"[i % 2] / f.name)
    res = _medlens("init", str(tmp_path / "fundus"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "fundus-like images" in res.stdout
    study = yaml.safe_load((tmp_path / "fundus.yaml").read_text())
    assert study["engine"] == {"preprocess": {"roi_crop": True, "clahe": "lab"}}
