"""The inference service against a real uvicorn on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from helpers.serve import BAD_INPUTS, TOKEN, phantom_png

pytestmark = pytest.mark.slow


def _upload(client, data: bytes, ctype: str = "image/png", **params):
    return client.post("/v1/predict", files={"file": ("x", data, ctype)}, params=params)


def test_health_and_model_card(client):
    assert client.get("/health").json()["status"] == "ok"
    card = client.get("/v1/model").json()
    for key in ("version", "training_data", "metrics_95ci", "operating_point", "intended_use", "class_names"):
        assert key in card
    auc = card["metrics_95ci"]["test"]["auc"]
    assert {"value", "low", "high"} <= set(auc)
    assert card["operating_point"]["threshold"] is not None


def test_valid_image_returns_all_fields(client):
    r = _upload(client, phantom_png(seed=1), cam="true")
    assert r.status_code == 200, r.text
    body = r.json()
    for key in ("probabilities", "label", "uncertainty", "qc", "ood", "operating_point", "decision", "request_id"):
        assert key in body
    assert body["decision"] == "accepted" and body["qc"]["passed"] and not body["ood"]["flagged"]
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["label"] in body["probabilities"]
    overlay = Image.open(io.BytesIO(base64.b64decode(body["gradcam_png_base64"])))
    assert overlay.size == (32, 32)


def test_raw_body_upload(client):
    r = client.post("/v1/predict", content=phantom_png(seed=2), headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and "gradcam_png_base64" not in r.json()


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", "Basic abc", f"Bearer {TOKEN}x"])
def test_missing_or_invalid_token_is_401(server, header):
    url, _ = server
    headers = {"Authorization": header} if header else {}
    r = httpx.post(url + "/v1/predict", files={"file": ("x", phantom_png(), "image/png")}, headers=headers)
    assert r.status_code == 401 and r.json()["error"]["message"]


def test_20mb_upload_is_413(client):
    r = client.post("/v1/predict", content=b"\0" * (20 * 1024 * 1024), headers={"Content-Type": "image/png"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_uploads_are_4xx_with_message(client, name):
    make, ctype = BAD_INPUTS[name]
    r = _upload(client, make(), ctype)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert len(r.json()["error"]["message"]) > 10


def test_ood_image_is_flagged(client):
    r = _upload(client, phantom_png(size=96, seed=6, ood=True))  # dim checkerboard; seed 0: QC blurred, 1: too bright
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["qc"]["passed"] and body["ood"]["flagged"]
    assert body["label"] is None and body["decision"].startswith("refused")


def test_dark_image_is_rejected_by_qc_with_reason(client):
    r = _upload(client, phantom_png(seed=0, qc_defect="dark"))
    assert r.status_code == 422
    body = r.json()
    assert not body["qc"]["passed"] and "too dark" in body["error"]["message"]


def test_kserve_v2_infer(client, exported_run):
    info = json.loads((exported_run / "export" / "export.json").read_text())
    name = info["triton_name"]
    meta = client.get(f"/v2/models/{name}").json()
    assert meta["inputs"][0]["shape"] == [-1, 3, 32, 32]
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    r = client.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": "image", "shape": [2, 3, 32, 32],
                                                                  "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    p = np.asarray(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    assert p.shape == (2, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    bad = client.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": "image", "shape": [1, 3, 8, 8],
                                                                    "datatype": "FP32", "data": [0.0] * 192}]})
    assert bad.status_code == 400 and "got" in bad.json()["error"]["message"]
    assert client.post("/v2/models/nope/infer", json={}).status_code == 404


def _dicom_with_phi() -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from medlens.data.synthetic import ImageSpec, render_image

    img, _, _ = render_image(ImageSpec(64, "A", 0), np.random.default_rng(3))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Janeqx", "PHI-998877", "19610203"
    ds.InstitutionName, ds.AccessionNumber = "St Example Hospital", "ACC445566"
    ds.Modality = "OP"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 64, 3, "RGB"
    ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 0, 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(img).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_audit_log_one_line_per_request_and_no_phi(client, server):
    _, audit = server
    time.sleep(0.3)
    before = len(_lines(audit))
    responses = [
        _upload(client, _dicom_with_phi(), "application/dicom"),
        client.post("/v1/predict", content=_dicom_with_phi(), headers={"Content-Type": "application/dicom"}),
        _upload(client, phantom_png(seed=4)),
        httpx.get(str(client.base_url) + "/v1/model"),  # no token: 401, still logged
        client.get("/health"),
    ]
    assert responses[0].status_code == 200, responses[0].text
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 200]
    for _ in range(50):
        if len(_lines(audit)) >= before + len(responses):
            break
        time.sleep(0.05)
    time.sleep(0.2)
    lines = _lines(audit)
    assert len(lines) == before + len(responses)
    rows = [json.loads(line) for line in lines]
    assert rows[before]["input_kind"] == "dicom" and rows[before]["token_id"] == "clinic-a"
    text = audit.read_text()
    for phi in ("Doe", "Janeqx", "PHI-998877", "19610203", "St Example", "ACC445566", TOKEN):
        assert phi not in text
    assert all(r["status"] != 500 for r in rows)
