"""Acceptance: the gate on the phantom with planted defects (recall >= 0.9, false rejection <= 5%)."""

from __future__ import annotations

import pytest

from medlens.data.images import load_image
from medlens.data.synthetic import QC_DEFECTS, generate
from medlens.qc import run_qc

EXPECTED_CHECK = {"dark": "exposure", "bright": "exposure", "blur": "blur", "off_centre": "fov"}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    manifest = generate(out, n_patients=90, seed=11, qc_defect_rate=0.5)
    result = run_qc((load_image(ref, out) for ref in manifest["image"]), manifest["sample_id"].tolist())
    return manifest.merge(result, on="sample_id")


def test_each_defect_caught(phantom):
    for defect in QC_DEFECTS:
        rows = phantom[phantom["qc_defect"] == defect]
        assert len(rows) >= 15, defect
        assert (~rows["passed"]).mean() >= 0.9, defect
        assert rows[f"is_{EXPECTED_CHECK[defect]}"].mean() >= 0.9, defect  # for the right reason


def test_clean_images_pass(phantom):
    clean = phantom[phantom["qc_defect"].fillna("") == ""]
    assert len(clean) >= 100
    assert (~clean["passed"]).mean() <= 0.05
    assert set(clean["site"]) == {"A", "B"}  # the darker, softer site is among them


def test_columns_and_reasons(phantom):
    for name in ("exposure", "contrast", "blur", "fov", "near_duplicate"):
        assert phantom[f"is_{name}"].dtype == bool
        assert ((phantom[f"{name}_score"] < 1) == phantom[f"is_{name}"]).all()
    failed = phantom[~phantom["passed"]]
    assert (failed["reason"] != "").all() and (phantom.loc[phantom["passed"], "reason"] == "").all()


@pytest.mark.parametrize("size", [64, 192])
def test_thresholds_hold_at_other_sizes(tmp_path, size):
    manifest = generate(tmp_path, n_patients=30, seed=size, qc_defect_rate=0.5, image_size=size)
    result = run_qc((load_image(ref, tmp_path) for ref in manifest["image"]), manifest["sample_id"].tolist())
    defect = manifest["qc_defect"].fillna("").to_numpy() != ""
    assert (~result["passed"].to_numpy()[defect]).mean() >= 0.9
    assert (~result["passed"].to_numpy()[~defect]).mean() <= 0.05
