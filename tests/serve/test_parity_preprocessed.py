"""Served = evaluated, with the field-of-view crop and CLAHE on (the run of conftest.exported_run).

For every test image the real service (uvicorn, PNG upload of the raw file) takes the same
OOD verdict as the trust stage, and for every accepted one returns the ensemble probability
in ``predictions.parquet`` to 1e-4; so do the explain and trust stages for the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from helpers.serve import held_out_rows


def test_run_used_the_crop_and_clahe_and_saved_the_contract(exported_run):
    card = json.loads((exported_run / "export" / "export.json").read_text())
    assert card["preprocess"]["roi_crop"] is True and card["preprocess"]["clahe"] == "lab"
    assert card["parity"]["max_abs_diff_vs_predictions"] <= 1e-4


def test_served_probability_equals_evaluated_for_every_test_image(client, exported_run):
    """Accepted images carry the evaluated probability; the service refuses exactly those the trust stage flags.

    The OOD threshold passes 95% of validation images, so a test image may be refused.
    """
    test = held_out_rows(exported_run)
    assert len(test) >= 5
    flags = pd.read_parquet(exported_run / "trust" / "uncertainty.parquet").set_index("sample_id")["ood_flag"]
    diffs = []
    for _, row in test.iterrows():
        r = client.post("/v1/predict", files={"file": ("x.png", Path(row["image"]).read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ood"]["flagged"] == bool(flags[row["sample_id"]]), row["sample_id"]
        if body["ood"]["flagged"]:
            assert body["probabilities"] is None and body["label"] is None
            continue
        served = body["probabilities"]
        p1 = served[list(served)[-1]] if isinstance(served, dict) else served[-1]
        diffs.append(abs(float(p1) - float(row["p1"])))
    assert len(diffs) >= 0.8 * len(test)
    assert max(diffs) <= 1e-4, max(diffs)


def test_explain_and_trust_probabilities_equal_evaluated(exported_run):
    test = held_out_rows(exported_run).set_index("sample_id")
    ex = pd.read_parquet(exported_run / "explain" / "agreement.parquet").set_index("sample_id")
    shared = ex.index.intersection(test.index)
    assert len(shared) == len(test)
    np.testing.assert_allclose(ex.loc[shared, "score"], test.loc[shared, "p1"], atol=1e-4)
    unc = pd.read_parquet(exported_run / "trust" / "uncertainty.parquet")
    pred = pd.read_parquet(exported_run / "predictions.parquet")
    both = unc.merge(pred, on=["sample_id", "part"], suffixes=("_trust", ""))
    assert len(both) == len(pred)  # every evaluated row, validation (out-of-fold) rows included
    np.testing.assert_allclose(both["p1_trust"], both["p1"], atol=1e-4)


def test_served_heat_map_is_the_one_the_report_scored(client, exported_run):
    """The overlay's map (fold, layer, method, class of the explain section) equals ``explain/maps.npz``."""
    from medlens.data.images import load_image
    from medlens.data.preprocess import Preprocess
    from medlens.serve.engine import preprocess
    from medlens.serve.gradcam import GradCamOverlay

    info = json.loads((exported_run / "export" / "export.json").read_text())
    contract = Preprocess.from_dict(info["preprocess"])
    manifest = pd.read_parquet(exported_run / "manifest.parquet").set_index("sample_id")
    scored = np.load(exported_run / "explain" / "maps.npz")
    overlay = GradCamOverlay(exported_run / "export", info["cam"], info["class_names"])
    pairs = list(zip(scored["sample_id"], scored["maps"]))[:6]
    assert sum(m.astype(np.float32).std() > 0.01 for _, m in pairs) >= 3  # real maps, not constants
    p1 = held_out_rows(exported_run).set_index("sample_id")["p1"]
    for sid, expected in pairs:  # from the raw file, through the service's own preprocessing
        got, cls = overlay.heatmap(preprocess(load_image(manifest.loc[sid, "image"]), contract),
                                   np.array([1 - p1[sid], p1[sid]]))
        assert cls == 1  # binary study, explain.target_class auto: the positive class
        np.testing.assert_allclose(got, expected.astype(np.float32), atol=2e-3)  # maps.npz is float16
    summary = json.loads((exported_run / "explain" / "summary.json").read_text())
    flags = pd.read_parquet(exported_run / "trust" / "uncertainty.parquet").set_index("sample_id")["ood_flag"]
    sid = next(s for s, _ in pairs if not flags[s])
    r = client.post("/v1/predict?cam=true",
                    files={"file": ("x.png", Path(manifest.loc[sid, "image"]).read_bytes(), "image/png")})
    said = r.json()["gradcam"]
    assert (said["layer"], said["method"], said["class"]) == (summary["layer"], summary["method"], info["class_names"][1])
