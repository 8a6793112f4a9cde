"""Every TP/FP/FN/TN and image count in report.html and metrics.json equals predictions.parquet at the threshold."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd


def _counts(frame: pd.DataFrame, threshold: float) -> dict[str, int]:
    y, pred = frame["label"].to_numpy(int) == 1, frame["p1"].to_numpy() >= threshold
    return {"images": len(frame), "tp": int((y & pred).sum()), "fn": int((y & ~pred).sum()),
            "fp": int((~y & pred).sum()), "tn": int((~y & ~pred).sum())}


def test_every_count_in_report_and_metrics_derives_from_predictions(tiny_run):
    pred = pd.read_parquet(tiny_run / "predictions.parquet")
    m = json.loads((tiny_run / "metrics.json").read_text())
    t = m["operating_point"]["threshold"]
    expected = {part: _counts(g, t) for part, g in pred.groupby("part")}
    local = set(m["new_site"]["local_sample_ids"]) if "new_site" in m else set()
    if local:
        ext = pred[pred["part"] == "external"]
        expected["new_site"] = _counts(ext[~ext["sample_id"].isin(local)], m["new_site"]["threshold"])

    for part in ("val", "test", "external"):  # metrics.json
        (tn, fp), (fn, tp) = m[part]["confusion_matrix"]
        assert {"images": m[part]["n_images"], "tp": tp, "fn": fn, "fp": fp, "tn": tn} == expected[part], part
    for op in m["operating_points"]:
        for part in ("val", "test", "external"):
            (tn, fp), (fn, tp) = op[part]["confusion_matrix"]
            assert {"tp": tp, "fn": fn, "fp": fp, "tn": tn} == {k: v for k, v in _counts(
                pred[pred["part"] == part], op["threshold"]).items() if k != "images"}, (op["name"], part)

    html = (tiny_run / "report.html").read_text()
    cells = re.findall(r'data-count="([a-z_]+)\.([a-z]+)">(\d+)<', html)
    assert len(cells) >= 15
    for part, key, value in cells:  # the summary table, the new-site paragraph
        assert int(value) == expected[part][key], (part, key)

    # the explain section: "N true positives (of M positive images)" over the explained test images
    ex = json.loads((tiny_run / "explain" / "summary.json").read_text())
    test = pred[pred["part"] == "test"]
    if ex["scope"] == "true positives":
        assert ex["n_scored"] == expected["test"]["tp"]
        assert f"{ex['n_scored']} true positives (of {ex['n_positive_with_roi']} positive images)" in html
    assert ex["n_images"] == len(test)

    # the trust section's referral table: accuracy at the operating point over all test images
    tr = json.loads((tiny_run / "trust" / "summary.json").read_text())
    sel = tr["selective"][f"test/{tr['referral_score']}"]
    acc = (expected["test"]["tp"] + expected["test"]["tn"]) / len(test)
    assert sel["n_all"] == len(test) and np.isclose(sel["accuracy_all"], acc)
    assert np.isclose(m["test"]["accuracy"]["value"], acc)
