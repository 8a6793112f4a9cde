import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.data.images import load_image, load_mask
from medlens.data.synthetic import generate


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_output(tmp_path):
    generate(tmp_path / "a", n_patients=8, seed=3, qc_defect_rate=0.3, ood_images=2)
    generate(tmp_path / "b", n_patients=8, seed=3, qc_defect_rate=0.3, ood_images=2)
    generate(tmp_path / "c", n_patients=8, seed=4, qc_defect_rate=0.3, ood_images=2)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) > 8 * 2 * 2  # images + masks + manifest
    assert a == b
    assert a != c


def test_phantom_structure(tmp_path):
    m = generate(tmp_path, n_patients=60, seed=0, image_size=64, ood_images=3)
    inlier = m[~m["is_ood"]]
    per_patient = inlier.groupby("patient_id").size()
    assert per_patient.min() >= 2 and per_patient.max() <= 4
    assert set(inlier["site"]) == {"A", "B"}
    assert 0.2 < inlier["label_true"].astype(float).mean() < 0.6
    # OOD rows carry no label and belong to their own patients
    ood = m[m["is_ood"]]
    assert len(ood) == 3 and ood["label"].isna().all()
    assert not set(ood["patient_id"]) & set(inlier["patient_id"])
    # positives have a lesion mask inside the expert box; negatives have none
    for _, row in inlier.head(40).iterrows():
        mask = load_mask(row["mask"], tmp_path)
        assert mask.sum() > 0 if row["label_true"] == 1 else mask.sum() == 0
        if row["label_true"] == 1:
            ys, xs = np.nonzero(mask)
            assert xs.min() >= row["roi_x0"] - 1 and xs.max() <= row["roi_x1"] + 1
            assert ys.min() >= row["roi_y0"] - 1 and ys.max() <= row["roi_y1"] + 1
    img = load_image(inlier["image"].iloc[0], tmp_path)
    assert img.shape == (3, 64, 64) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1


def test_annotators_differ_in_reliability(tmp_path):
    m = generate(tmp_path, n_patients=150, seed=1, image_size=32)
    truth = m["label_true"].astype(int)
    error = {a: float((m[f"label_{a}"].astype(int) != truth).mean()) for a in ("expert", "good", "unreliable")}
    assert error["expert"] < error["good"] < error["unreliable"]
    assert 0.3 < error["unreliable"] < 0.5


def test_sites_differ_in_appearance(tmp_path):
    m = generate(tmp_path, n_patients=30, seed=2, image_size=48)
    means = {s: np.mean([load_image(p, tmp_path).mean(axis=(1, 2)) for p in g["image"]], axis=0)
             for s, g in m.groupby("site")}
    # site B is bluer relative to red than site A
    ratio = {s: v[2] / v[0] for s, v in means.items()}
    assert ratio["B"] > 1.15 * ratio["A"]


def test_qc_defects_are_planted_and_recorded(tmp_path):
    m = generate(tmp_path, n_patients=40, seed=0, image_size=48, qc_defect_rate=0.5)
    counts = m["qc_defect"].value_counts()
    assert {"dark", "bright", "blur", "off_centre"} <= set(counts.index)
    dark = m[m["qc_defect"] == "dark"]["image"].iloc[0]
    clean = m[m["qc_defect"] == ""]["image"].iloc[0]
    assert load_image(dark, tmp_path).mean() < 0.5 * load_image(clean, tmp_path).mean()
    assert isinstance(pd.read_csv(tmp_path / "manifest.csv"), pd.DataFrame)


def test_shared_anatomy_makes_a_patients_images_alike(tmp_path):
    """One eye per patient: same-patient pairs far more alike than other-patient pairs; not so by default."""
    from medlens.ssl.pairs import pixel_similarity

    def stats(folder, shared):
        m = generate(folder, n_patients=30, seed=0, image_size=64, site_b_fraction=0.0, shared_anatomy=shared)
        x = np.stack([load_image(str(folder / p)) for p in m["image"]])
        return m, pixel_similarity(x, m["patient_id"].to_numpy())

    m, shared = stats(tmp_path / "shared", True)
    _, default = stats(tmp_path / "default", False)
    assert shared["same_patient"] > shared["other_patients"] + 0.2
    assert abs(default["same_patient"] - default["other_patients"]) < 0.05
    # labels stay what the masks show: an image without lesions (also of a diseased eye) has an empty mask
    for row in m.itertuples():
        lesion = load_mask(str(tmp_path / "shared" / row.mask)).any()
        assert lesion == bool(row.label_true) and (row.severity > 0) == lesion


def test_feature_similarity_by_hand():
    from medlens.ssl.pairs import feature_similarity

    f = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    s = feature_similarity(f, np.array(["a", "a", "b", "b"]), max_pairs=100)
    assert s["same_patient"] == 1.0 and s["pairs"][0] == 2
    assert s["other_patients"] == 0.0
