"""`/v1/detect` on a real uvicorn over the tiny detection study: served boxes are the evaluated ones, bad inputs
get 4xx, the gates and auth hold, and the audit log has one line per request. The export folder alone (the run
that wrote it deleted) serves the same answers and names no patient, sample or path."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from helpers.serve import BAD_INPUTS, TOKEN, identifiers_in, phantom_png, running_server, ship_alone
from medlens.detection.export import compare_boxes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def det_server(det_run, tmp_path_factory):
    with running_server(det_run, tmp_path_factory.mktemp("det_serve")) as served:
        yield served


@pytest.fixture(scope="module")
def client(det_server):
    with httpx.Client(base_url=det_server[0], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def det_shipped(det_run, tmp_path_factory):
    """``(det/export of a copy of the run, exported again there and copied away, the path the deleted copy had)``."""
    from medlens.detection.export import export_detector
    from medlens.export import run_config

    return ship_alone(det_run, tmp_path_factory.mktemp("det_alone"), lambda run: export_detector(run, run_config(run)),
                      "det/export")


@pytest.fixture(scope="module")
def alone(det_shipped, tmp_path_factory):
    """A client of ``medlens serve EXPORT`` on the detector's export folder alone."""
    with running_server(det_shipped[0], tmp_path_factory.mktemp("det_alone_serve")) as (url, _), \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def _detect(client, data: bytes, ctype: str = "image/png", **params):
    return client.post("/v1/detect", files={"file": ("x", data, ctype)}, params=params)


def test_served_boxes_equal_the_evaluated_ones(client, det_run):
    """Every test image, uploaded as its raw PNG: every candidate box IoU >= 0.99, scores within 1e-4."""
    manifest = pd.read_parquet(det_run / "manifest.parquet").set_index("sample_id")
    pred = pd.read_parquet(det_run / "det" / "predictions.parquet")
    pred = pred[pred["part"] == "test"]
    ids = sorted(set(json.loads((det_run / "splits.json").read_text())["test"]) & set(manifest.index))
    groups = {k: g for k, g in pred.groupby("sample_id")}
    served, evaluated, flagged = [], [], 0
    for sid in ids:
        with open(manifest.loc[sid, "image"], "rb") as f:
            r = _detect(client, f.read(), all="true")
        assert r.status_code == 200, r.text
        body = r.json()
        flagged += body["ood"]["flagged"]
        found = body["boxes"] or []
        served.append((np.array([b["box_model"] for b in found]).reshape(-1, 4), np.array([b["score"] for b in found])))
        g = groups.get(sid)
        evaluated.append((np.zeros((0, 4)), np.zeros(0)) if g is None else
                         (g[["x0", "y0", "x1", "y1"]].to_numpy(float), g["score"].to_numpy(float)))
    assert flagged <= len(ids) // 4  # the gate lets most in-distribution test images through
    ok = [i for i, (b, _) in enumerate(served) if len(b) or not len(evaluated[i][0])]
    agree = compare_boxes([served[i] for i in ok], [evaluated[i] for i in ok])
    assert len(ok) >= len(ids) - flagged and agree["count_mismatches"] == 0
    assert agree["min_iou"] >= 0.99 and agree["max_score_diff"] <= 1e-4 and agree["n_boxes"] > 0


def test_default_answer_shows_boxes_at_the_operating_point_in_image_pixels(client, det_run):
    threshold = json.loads((det_run / "det" / "metrics.json").read_text())["threshold"]
    r = _detect(client, phantom_png(size=64, seed=3, n_lesions=3))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] in ("accepted",) or body["ood"]["flagged"]
    for b in body["boxes"] or []:
        assert b["score"] >= threshold
        np.testing.assert_allclose(b["box"], np.array(b["box_model"]) * 2, atol=2e-3)  # 64-px upload, 32-px model
    assert body["operating_point"]["threshold"] == pytest.approx(threshold)


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_uploads_are_4xx_with_message(client, name):
    make, ctype = BAD_INPUTS[name]
    r = _detect(client, make(), ctype)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert len(r.json()["error"]["message"]) > 10


def test_qc_ood_auth_and_audit(client, det_server):
    url, audit = det_server
    dark = _detect(client, phantom_png(seed=0, qc_defect="dark"))
    assert dark.status_code == 422 and "too dark" in dark.json()["error"]["message"]
    ood = _detect(client, phantom_png(size=96, seed=6, ood=True))  # dim checkerboard; seed 0: QC blurred, 1: too bright
    assert ood.status_code == 200 and ood.json()["ood"]["flagged"] and ood.json()["boxes"] is None
    assert httpx.post(url + "/v1/detect", files={"file": ("x", phantom_png(), "image/png")}).status_code == 401
    bad = httpx.post(url + "/v1/detect", files={"file": ("x", phantom_png(), "image/png")},
                     headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    assert client.post("/v1/predict", content=phantom_png(), headers={"Content-Type": "image/png"}).status_code == 404
    assert client.get("/v1/model").json()["task"] == "detection"
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert {"ood", "qc", "input_sha256"} <= set(next(x for x in reversed(lines) if x["path"] == "/v1/detect"
                                                     and x["status"] == 200))
    assert TOKEN not in audit.read_text()


def test_export_folder_alone_serves_the_run_services_answers(alone, client, det_run, det_shipped):
    """Every test image: the same boxes, scores and OOD verdict as `medlens serve RUN`; the same gates and card."""
    manifest = pd.read_parquet(det_run / "manifest.parquet").set_index("sample_id")
    ids = sorted(set(json.loads((det_run / "splits.json").read_text())["test"]) & set(manifest.index))
    n_boxes = 0
    for sid in ids:
        with open(manifest.loc[sid, "image"], "rb") as f:
            data = f.read()
        body, before = _detect(alone, data, all="true").json(), _detect(client, data, all="true").json()
        for key in ("boxes", "n_boxes", "ood", "qc", "decision", "operating_point"):
            assert body[key] == before[key], (sid, key)
        n_boxes += body["n_boxes"] or 0
    assert n_boxes > 0
    answers = []
    for png in (phantom_png(seed=0, qc_defect="dark"), phantom_png(size=96, seed=0, ood=True)):
        r, before = _detect(alone, png), _detect(client, png)
        body, was = ({k: v for k, v in x.json().items() if k != "request_id"} for x in (r, before))
        assert r.status_code == before.status_code and body == was
        answers.append((r.status_code, body))
    (dark_status, dark), (texture_status, texture) = answers
    assert dark_status == 422 and not dark["qc"]["passed"]
    assert texture_status == 422 or (texture["ood"]["flagged"] and texture["boxes"] is None)  # QC or the gate
    card, before = alone.get("/v1/model").json(), client.get("/v1/model").json()
    assert card["task"] == "detection" and card["metrics_95ci"] == before["metrics_95ci"]
    assert card["operating_point"] == before["operating_point"]
    assert card["operating_point"]["rule"] == json.loads((det_run / "det" / "metrics.json").read_text())["threshold_rule"]


def test_detector_export_names_no_patient_sample_or_path(det_run, det_shipped):
    folder, deleted_run = det_shipped
    assert "config.yaml" not in {p.name for p in folder.iterdir()}
    for export in (det_run / "det" / "export", folder):
        assert identifiers_in(export, det_run, deleted_run) == []
