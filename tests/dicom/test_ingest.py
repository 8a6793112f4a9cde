"""DICOM ingest: manifest rows, skipped files and the float image contract."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.dicom import make_ds, save

from medlens.dicom import MANIFEST_COLUMNS, dataset_to_image, load_dicom_image, read_dicom_tree
from medlens.errors import DataError


def test_manifest_rows_frames_and_skips(tmp_path):
    save(make_ds(sop_uid="1.2.3.1"), tmp_path / "a" / "scan_without_suffix")
    multi = make_ds(sop_uid="1.2.3.2", patient_id="P2", pixels=np.arange(3 * 16, dtype=np.uint16).reshape(3, 4, 4))
    save(multi, tmp_path / "b.dcm")
    no_pix = make_ds(sop_uid="1.2.3.3")
    del no_pix.PixelData
    save(no_pix, tmp_path / "sr.dcm")
    (tmp_path / "notes.dcm").write_text("not an image")
    manifest, skipped = read_dicom_tree(tmp_path)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 4 and manifest["sample_id"].is_unique
    assert manifest.groupby("patient_id")["frame"].apply(list).to_dict() == {"P2": [0, 1, 2], "PID-4711": [0]}
    assert manifest["label"].isna().all() and set(manifest["modality"]) == {"CT"}
    reasons = {p.split("/")[-1]: r for p, r in skipped}
    assert set(reasons) == {"sr.dcm", "notes.dcm"} and "no pixel data" in reasons["sr.dcm"]


def test_rescale_window_and_monochrome1():
    px = np.array([[0, 100], [200, 300]], np.uint16)
    ds = make_ds(pixels=px, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=200, WindowWidth=201)
    img = dataset_to_image(ds)
    assert img.shape == (1, 2, 2) and img.dtype == np.float32
    # HU = 2*px - 100 -> [-100, 100, 300, 500]; window 100..300
    np.testing.assert_allclose(img[0].ravel(), [0.0, 0.0, 1.0, 1.0], atol=0.01)
    inverted = dataset_to_image(make_ds(pixels=px, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inverted[0].ravel(), [1.0, 2 / 3, 1 / 3, 0.0], atol=1e-6)


def test_colour_and_frames(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255
    img = load_dicom_image(save(make_ds(pixels=rgb, photometric="RGB"), tmp_path / "rgb.dcm"))
    assert img.shape == (3, 4, 5) and img[0].min() == 1.0 and img[1:].max() == 0.0
    multi = make_ds(pixels=np.stack([np.zeros((4, 4)), np.eye(4) * 9]).astype(np.uint16))
    assert dataset_to_image(multi, 1).max() == 1.0 and dataset_to_image(multi, 0).max() == 0.0
    with pytest.raises(DataError, match="out of range"):
        dataset_to_image(multi, 2)


def test_reads_public_test_file():
    import pydicom.data

    img = load_dicom_image(pydicom.data.get_testdata_file("CT_small.dcm"))
    assert img.shape == (1, 128, 128) and 0.0 <= img.min() < img.max() <= 1.0
