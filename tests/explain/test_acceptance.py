"""The issue's acceptance criteria on trained phantom runs (the explain stage end to end)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medlens.explain import agreement_comparison, explain_stage, write_explain_section
from medlens.sections import read_section, section_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plain_summary(plain_run):
    return explain_stage(plain_run)


@pytest.fixture(scope="module")
def shortcut_summary(shortcut_run):
    return explain_stage(shortcut_run)


def test_trained_model_points_at_the_lesion_box(plain_summary):
    e = plain_summary["agreement"]["energy"]
    # the model's maps put clearly more mass in the lesion box than random maps of the same smoothness
    assert e["model"]["value"] > e["random"]["value"] + 0.15, e
    assert e["model"]["low"] > e["random"]["value"], e
    assert plain_summary["rationale_ok"] and not plain_summary["shortcut_suspected"]
    assert plain_summary["agreement"]["pointing"]["model"]["value"] > plain_summary["agreement"]["pointing"]["random"]["value"]


def test_shortcut_model_has_high_auc_but_low_agreement_and_is_flagged(shortcut_summary, shortcut_run):
    assert shortcut_summary["auc"] > 0.75
    e = shortcut_summary["agreement"]["energy"]
    assert shortcut_summary["scope"] == "true positives"
    assert e["model"]["value"] < e["random"]["value"], e  # the maps sit on the corner marker, outside the box
    assert shortcut_summary["shortcut_suspected"] and not shortcut_summary["rationale_ok"]
    assert any("wrong reason" in f for f in shortcut_summary["flags"])
    section = read_section(section_dir(shortcut_run, "explain") / "section.json")  # written by the stage
    assert any("wrong reason" in f for f in section["flags"])
    assert "NOT point" in section["summary"]


def test_randomising_weights_changes_gradcam_maps(plain_summary, plain_run):
    s = plain_summary["sanity"]
    assert s["passed"] and s["final_rank_correlation"] < 0.5
    steps = pd.read_csv(plain_run / "explain" / "sanity.csv")
    assert steps["randomised"].iloc[0] == "fc" and len(steps) >= 4
    assert (steps["rank_correlation"] < 0.5).iloc[-1]


def test_outputs_follow_the_contract(plain_summary, plain_run):
    out = plain_run / "explain"
    z = np.load(out / "maps.npz")
    maps, ids = z["maps"], z["sample_id"]
    assert maps.dtype == np.float16 and maps.shape[1:] == (64, 64) and len(ids) == plain_summary["n_images"]
    assert 0 <= maps.min() and maps.max() <= 1
    table = pd.read_parquet(out / "agreement.parquet")
    assert list(table["sample_id"]) == list(ids)
    assert {"pointing", "energy", "iou", "dice", "energy_random", "deletion_auc", "insertion_auc", "road"} <= set(table)
    assert len(list((out / "overlays").glob("*.png"))) == len(ids)
    assert json.loads((out / "summary.json").read_text())["layer"] == "layer2"  # 8×8 at 64 px
    f = plain_summary["faithfulness"]
    assert f["deletion_auc"]["value"] < f["deletion_auc_random"]["value"]


def test_report_section(plain_summary, plain_run, tmp_path):
    section = read_section(write_explain_section(plain_run))
    assert section["figures"]["gallery"]["path"].read_bytes()[:4] == b"\x89PNG"
    assert section["figures"]["sanity"]["path"].read_bytes()[:4] == b"\x89PNG"
    assert [r["score"].split(" ")[0] for r in section["tables"]["agreement"]["rows"]][:2] == ["Pointing", "Energy"]
    assert section["tables"]["faithfulness"]["rows"] and not section["flags"]
    assert write_explain_section(tmp_path) is None


def test_agreement_comparison_paired_wilcoxon(plain_summary, plain_run, tmp_path):
    # a second "run" with the same test set: the same model explained with another method
    import shutil

    from medlens.config import load_config

    other = tmp_path / "other"
    shutil.copytree(plain_run, other, ignore=shutil.ignore_patterns("explain"))
    cfg = load_config(other / "config.yaml")
    cfg = cfg.model_copy(update={"explain": cfg.explain.model_copy(update={
        "method": "eigencam", "faithfulness_images": 0, "sanity_images": 0})})
    explain_stage(other, cfg)
    res = agreement_comparison(plain_run, other)
    assert res["shared_test_set"] and res["n_pairs"] == plain_summary["n_positive_with_roi"]
    assert res["p_value"] is not None and 0 <= res["p_value"] <= 1
    assert "Wilcoxon" in res["message"]
