"""The service runs from export/ alone (issue 32).

The shared run (conftest.exported_run: field-of-view crop and CLAHE on) is copied, exported
again in the copy, its export/ copied elsewhere and the run copy deleted. ``medlens serve``
on that folder, on a real uvicorn, answers every test image as the run-directory service
does and as the study evaluated (``predictions.parquet``, the gate's recorded refusals),
serves the heat map the report scored and applies the run's QC limits; export/ names no
patient, sample or path.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.serve import TOKEN, held_out_rows, identifiers_in, phantom_png, running_server, ship_alone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shipped(exported_run, tmp_path_factory) -> tuple[Path, Path]:
    """``(the export folder alone, the path the deleted run had)``."""
    from medlens.export import export_run

    return ship_alone(exported_run, tmp_path_factory.mktemp("alone"), lambda run: export_run(run, benchmark=False),
                      "export")


@pytest.fixture(scope="module")
def alone(shipped, tmp_path_factory):
    """A client of ``medlens serve EXPORT`` (the CLI entry point, uvicorn on 127.0.0.1) on the folder alone."""
    with running_server(shipped[0], tmp_path_factory.mktemp("alone_serve")) as (url, _), \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c


def _predict(client: httpx.Client, image: str, **params) -> dict:
    r = client.post("/v1/predict", files={"file": ("x.png", Path(image).read_bytes(), "image/png")}, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_export_folder_names_no_patient_sample_or_path(exported_run, shipped):
    folder, deleted_run = shipped
    names = {p.name for p in folder.iterdir()}
    assert {"model.onnx", "ood.safetensors", "ood.json", "cam.safetensors", "export.json"} <= names
    assert "config.yaml" not in names and not any(n.endswith(".parquet") for n in names)
    for export in (exported_run / "export", folder):  # as `medlens run` wrote it, and the re-export
        assert identifiers_in(export, exported_run, deleted_run) == []
    assert identifiers_in(exported_run / "explain", exported_run)  # the search finds what is there


def test_every_test_image_is_answered_as_evaluated(alone, client, exported_run, shipped):
    """The evaluated probability to 1e-4, the run-directory service's answer, and the refusals export.json recorded."""
    info = json.loads((shipped[0] / "export.json").read_text())
    test = held_out_rows(exported_run)
    assert len(test) >= 5
    refused, diffs = [], []
    for _, row in test.iterrows():
        body = _predict(alone, row["image"])
        before = _predict(client, row["image"])  # `medlens serve RUN`, the run directory beside it
        for key in ("probabilities", "label", "uncertainty", "ood", "qc", "decision", "operating_point"):
            assert body[key] == before[key], (row["sample_id"], key)
        refused.append(body["ood"]["flagged"])
        if not body["ood"]["flagged"]:
            diffs.append(abs(body["probabilities"][info["class_names"][1]] - float(row["p1"])))
    assert np.mean(refused) == pytest.approx(info["ood"]["flagged"]["test"], abs=1e-9)
    assert len(diffs) >= 0.8 * len(test) and max(diffs) <= 1e-4, max(diffs)


def test_served_heat_map_is_the_one_the_report_scored(alone, exported_run, shipped):
    """The map of the shipped CAM model equals explain/maps.npz; the served overlay is that map."""
    from medlens.data.images import load_image
    from medlens.data.preprocess import Preprocess
    from medlens.serve.engine import preprocess
    from medlens.serve.gradcam import GradCamOverlay

    folder = shipped[0]
    info = json.loads((folder / "export.json").read_text())
    contract = Preprocess.from_dict(info["preprocess"])
    overlay = GradCamOverlay(folder, info["cam"], info["class_names"])
    manifest = pd.read_parquet(exported_run / "manifest.parquet").set_index("sample_id")
    scored = np.load(exported_run / "explain" / "maps.npz")
    p1 = held_out_rows(exported_run).set_index("sample_id")["p1"]
    for sid, expected in list(zip(scored["sample_id"], scored["maps"]))[:4]:
        got, cls = overlay.heatmap(preprocess(load_image(manifest.loc[sid, "image"]), contract),
                                   np.array([1 - p1[sid], p1[sid]]))
        assert cls == 1
        np.testing.assert_allclose(got, expected.astype(np.float32), atol=2e-3)  # maps.npz is float16
    summary = json.loads((exported_run / "explain" / "summary.json").read_text())
    for sid in scored["sample_id"]:
        body = _predict(alone, manifest.loc[sid, "image"], cam="true")
        if body["decision"] == "accepted":
            break
    assert (body["gradcam"]["layer"], body["gradcam"]["method"]) == (summary["layer"], summary["method"])
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["gradcam_png_base64"]))), np.int16)
    x = preprocess(load_image(manifest.loc[sid, "image"]), contract)
    local = overlay(x, np.array(list(body["probabilities"].values())))[0]
    assert np.abs(served - np.asarray(Image.open(io.BytesIO(base64.b64decode(local))), np.int16)).max() <= 2


def test_qc_ood_and_model_card_from_the_folder_alone(alone, client, exported_run, shipped):
    """The QC limits and the OOD gate answer as in the run-directory service; the card holds the study's aggregates."""
    from medlens.data.preprocess import Preprocess
    from medlens.data.synthetic import ImageSpec, render_image
    from medlens.serve.engine import preprocess

    answers = []
    for png in (phantom_png(seed=0, qc_defect="dark"), phantom_png(size=96, seed=0, ood=True)):
        r, before = (c.post("/v1/predict", files={"file": ("x", png, "image/png")}) for c in (alone, client))
        body, was = ({k: v for k, v in x.json().items() if k != "request_id"} for x in (r, before))
        assert r.status_code == before.status_code and body == was
        answers.append((r.status_code, body))
    (dark_status, dark), (texture_status, texture) = answers
    assert dark_status == 422 and not dark["qc"]["passed"]
    assert texture_status == 422 or texture["ood"]["flagged"]  # refused by QC or by the gate
    info = json.loads((shipped[0] / "export.json").read_text())
    rng = np.random.default_rng(0)
    x = np.stack([preprocess(render_image(ImageSpec(64, "A", 0, ood=ood), rng)[0].transpose(2, 0, 1) / 255.0,
                             Preprocess.from_dict(info["preprocess"])) for ood in (True, True, False)])
    payload = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    out, was = (c.post(f"/v2/models/{info['triton_name']}/infer", json=payload).json()["outputs"] for c in (alone, client))
    assert out == was and out[1]["data"][:2] == [True, True]  # the gate refuses texture images
    card = alone.get("/v1/model").json()
    manifest = pd.read_parquet(exported_run / "manifest.parquet")
    splits = json.loads((exported_run / "splits.json").read_text())
    dev = manifest[manifest["sample_id"].isin({s for f in splits["folds"] for s in f["train"] + f["val"]})]
    assert card["training_data"]["development_images"] == len(dev)
    assert card["training_data"]["development_patients"] == dev["patient_id"].nunique()
    assert card["training_data"]["test_images"] == len(splits["test"])
    assert {"value", "low", "high"} <= set(card["metrics_95ci"]["test"]["auc"])
    assert card["operating_point"] == json.loads((exported_run / "metrics.json").read_text())["operating_point"]


def test_old_or_missing_export_is_refused_with_the_fix(exported_run, tmp_path):
    from medlens.errors import StageInputMissing
    from medlens.serve.engine import locate_export

    assert locate_export(exported_run)[0] == exported_run / "export"  # a run directory: its export/
    with pytest.raises(StageInputMissing, match="no export.json"):
        locate_export(tmp_path)
    info = json.loads((exported_run / "export" / "export.json").read_text())
    for key in ("cam", "card"):
        (tmp_path / "export.json").write_text(json.dumps({k: v for k, v in info.items() if k != key}))
        with pytest.raises(StageInputMissing, match=f"no {key} .*medlens export RUN"):
            locate_export(tmp_path)
