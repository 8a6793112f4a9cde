from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medlens.data.images import load_image
from medlens.data.manifest import load_manifest, save_manifest
from medlens.data.sources import NO_PATIENT_IDS, read_csv, read_imagefolder, read_medmnist, read_synthetic
from medlens.data.synthetic import generate
from medlens.errors import DataError


def _png(path: Path, value: int, size=(20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_read_synthetic_roundtrips_through_parquet(tmp_path):
    generate(tmp_path / "ph", n_patients=6, seed=0, image_size=32)
    m = read_synthetic(tmp_path / "ph")
    assert m["label"].dtype == "Int64" and m["patient_id_source"].iloc[0] == "synthetic"
    assert all(Path(p).is_absolute() for p in m["image"])
    save_manifest(m, tmp_path / "manifest.parquet")
    back = load_manifest(tmp_path / "manifest.parquet")
    pd.testing.assert_frame_equal(back, m)
    assert load_image(back["image"].iloc[0]).shape == (3, 32, 32)


def test_read_synthetic_missing_folder_names_the_command(tmp_path):
    with pytest.raises(DataError, match="medlens synth"):
        read_synthetic(tmp_path / "nothing")


def _fake_medmnist(path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 5)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    np.savez(path, **arrays)


def test_read_medmnist_layout(tmp_path):
    _fake_medmnist(tmp_path / "x.npz")
    m = read_medmnist(tmp_path / "x.npz")
    assert len(m) == 19 and m["split"].value_counts().to_dict() == {"train": 10, "test": 5, "val": 4}
    assert (m["patient_id"] == m["sample_id"]).all() and (m["patient_id_source"] == NO_PATIENT_IDS).all()
    with np.load(tmp_path / "x.npz") as z:
        row = m[m["sample_id"] == "val_000002"].iloc[0]
        assert row["label"] == z["val_labels"][2, 0]
        np.testing.assert_allclose(load_image(row["image"])[0], z["val_images"][2] / 255.0)


def test_read_medmnist_real_files(shared_path):
    for name, n, classes in (("pneumoniamnist.npz", 5856, 2), ("retinamnist.npz", 1600, 5)):
        m = read_medmnist(shared_path("data", "medmnist", name))
        assert len(m) == n
        assert m["label"].nunique() == classes
        assert load_image(m["image"].iloc[0]).shape[1:] == (28, 28)


def test_read_medmnist_rejects_other_files(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 2)))
    with pytest.raises(DataError, match="bad.npz"):
        read_medmnist(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="never downloads"):
        read_medmnist(tmp_path / "absent.npz")


def test_read_imagefolder(tmp_path):
    _png(tmp_path / "normal" / "a.png", 10)
    _png(tmp_path / "normal" / "b.png", 20)
    _png(tmp_path / "lesion" / "sub" / "c.png", 30)
    m = read_imagefolder(tmp_path)
    assert dict(zip(m["sample_id"], m["label"])) == {"lesion/sub/c.png": 0, "normal/a.png": 1, "normal/b.png": 1}
    assert set(m["label_name"]) == {"lesion", "normal"}


def test_read_imagefolder_corrupt_file_raises_or_skips(tmp_path):
    _png(tmp_path / "a" / "ok.png", 10)
    _png(tmp_path / "b" / "ok.png", 10)
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="broken.png"):
        read_imagefolder(tmp_path)
    assert len(read_imagefolder(tmp_path, on_error="skip")) == 2


def test_read_csv_maps_columns(tmp_path):
    from medlens.config import CsvColumns

    _png(tmp_path / "img" / "1.png", 10)
    _png(tmp_path / "img" / "2.png", 200)
    pd.DataFrame({"file": ["img/1.png", "img/2.png"], "dx": ["benign", "malignant"],
                  "mrn": ["p1", "p1"], "hospital": ["x", "x"]}).to_csv(tmp_path / "t.csv", index=False)
    cols = CsvColumns(image="file", label="dx", patient_id="mrn", site="hospital")
    m = read_csv(tmp_path / "t.csv", cols)
    assert list(m["label"]) == [0, 1] and list(m["label_name"]) == ["benign", "malignant"]
    assert list(m["patient_id"]) == ["p1", "p1"] and m["patient_id_source"].iloc[0] == "manifest"
    with pytest.raises(DataError, match="not found; have"):
        read_csv(tmp_path / "t.csv")  # default column names do not exist


def test_read_csv_missing_image(tmp_path):
    _png(tmp_path / "1.png", 10)
    pd.DataFrame({"image": ["1.png", "gone.png"], "label": [0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    from medlens.config import CsvColumns

    cols = CsvColumns(patient_id=None, site=None)
    with pytest.raises(DataError, match="gone.png"):
        read_csv(tmp_path / "t.csv", cols)
    assert list(read_csv(tmp_path / "t.csv", cols, on_error="skip")["sample_id"]) == ["1.png"]


def test_read_dicom_requires_deidentified_input(tmp_path):
    import shutil

    from pydicom.data import get_testdata_file

    from medlens.dicom import DeidOptions
    from medlens.dicom.tree import deidentify_tree
    from medlens.data.sources import read_dicom

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), raw / name)
    with pytest.raises(DataError, match="not de-identified.*medlens deid"):
        read_dicom(raw)
    deidentify_tree(raw, tmp_path / "out", options=DeidOptions(), secret=b"0123456789abcdef0123",
                    map_path=tmp_path / "private" / "pseudonyms.csv", audit_path=tmp_path / "audit.jsonl")
    m = read_dicom(tmp_path / "out")
    assert len(m) == 2 and m["label"].isna().all()
    originals = {"CompressedSamples^CT1", "CompressedSamples^MR1"}
    assert not originals & set(m["patient_id"])
    assert load_image(m["image"].iloc[0]).ndim == 3


def test_fundus_like_tells_the_phantom_from_grey_and_uniform_images(tmp_path):
    """`medlens init` turns the fundus preprocessing on only for a bright field of view in a dark surround."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from medlens.data.detect import fundus_like
    from medlens.data.sources import read_synthetic
    from medlens.data.synthetic import generate

    generate(tmp_path / "phantom", n_patients=4, seed=0, image_size=64)
    phantom = read_synthetic(tmp_path / "phantom")
    assert fundus_like(phantom)
    rng = np.random.default_rng(0)
    refs = []
    for i in range(4):
        grey = (rng.random((64, 64)) * 255).astype(np.uint8)  # an X-ray: one channel, no dark surround
        colour = np.full((64, 64, 3), (200, 120, 90), np.uint8)  # a dermoscopy-like colour image filling the frame
        for name, arr in ((f"g{i}.png", grey), (f"c{i}.png", colour)):
            Image.fromarray(arr).save(tmp_path / name)
            refs.append(str(tmp_path / name))
    assert not fundus_like(pd.DataFrame({"image": refs}))
