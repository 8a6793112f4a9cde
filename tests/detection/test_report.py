"""The detection report from a hand-written run directory: numbers as in metrics.json, the winner, figures, NaN.

The detection stages write their sections (``write_det_section``, ``write_det_export_section``) and the one
report writer (:func:`medlens.report.write_report`) renders them, as for every task."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from medlens.detection.report import write_det_export_section, write_det_section
from medlens.report import write_report

BINS = ("< 16", "16-36", "36-64", ">= 64")


def est(v: float, d: float = 0.04) -> dict:
    return {"value": v, "low": v - d, "high": v + d}


def summary(cpm: float, sens: list[float], n_lesions: int = 120, nan_precision: bool = False) -> dict:
    """A SUMMARY as medlens.evaluate.lesions.detection_summary writes it."""
    rates = ("0.125", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0")
    return {"cpm": est(cpm), "sensitivity_at": {r: est(min(1.0, cpm - 0.3 + 0.1 * k)) for k, r in enumerate(rates)},
            "n_lesions": n_lesions, "n_images": 150, "n_patients": 50, "n_boot_used": 200,
            "map": est(cpm - 0.2), "map_50": est(cpm - 0.1),
            "operating_point": {"threshold": 0.2, "sensitivity": est(cpm + 0.05), "fp_per_image": est(0.4, 0.1),
                                "precision": {"value": math.nan, "low": math.nan, "high": math.nan} if nan_precision
                                else est(0.7), "count_error": est(0.3, 0.1),
                                "by_size": [{"bin": b, "n_lesions": 30, "sensitivity": est(s)}
                                            for b, s in zip(BINS, sens)]},
            "hit_rule": "centre"}


def curve(scale: float) -> dict:
    x = [0.0, 0.1, 0.3, 1.0, 3.0, 9.0]
    return {"fp_per_image": x, "sensitivity": [min(1.0, scale * (0.3 + 0.1 * k)) for k in range(len(x))]}


def make_run(root: Path, *, seg_cpm: float = 0.7, overlays: bool = True, external: dict | None = None,
             segmentation: bool = True) -> Path:
    test = {"detector": summary(0.812, [0.5, 0.8, 0.9, 0.95])}
    ext = external or {"detector": summary(0.654, [0.4, 0.6, 0.7, 0.8], n_lesions=80, nan_precision=True)}
    curves = {"test": {"detector": curve(1.0)}, "external": {"detector": curve(0.8)}}
    if segmentation:
        test["segmentation"] = summary(seg_cpm, [0.6, 0.8, 0.85, 0.9])
        curves["test"]["segmentation"] = curve(0.9)
        if "segmentation" not in ext and external is None:
            ext["segmentation"] = summary(0.601, [0.3, 0.5, 0.7, 0.9], n_lesions=80)
    m = {"folds_trained": 3, "threshold": 0.206, "threshold_rule": "max lesion F1 on the out-of-fold validation images",
         "hit_rule": "centre", "image_size": 64, "parameters": 123456, "max_detections": 20, "n_bootstrap": 2000,
         "validation": {"n_images": 400, "n_lesions": 300, "sensitivity": 0.95, "fp_per_image": 0.1},
         "segmentation_threshold": 0.4 if segmentation else None, "preprocess": {}, "seconds": 12.3,
         "test": test, "external": ext, "curves": curves}
    det = root / "det"
    (det / "export").mkdir(parents=True)
    (det / "metrics.json").write_text(json.dumps(m))  # NaN is written as JSON NaN, as the stage does
    (det / "export" / "export.json").write_text(json.dumps(
        {"parity": {"n_images": 8, "max_box_iou_deficit": 0.0012, "passed": True}, "onnx_size_bytes": 2_500_000,
         "triton_name": "medlens_det"}))
    if overlays:
        rng = np.random.default_rng(0)
        boxes = [np.array([[2, 3, 10, 12], [15, 15, 25, 28]]), np.array([[4, 4, 8, 8]]), np.array([[20, 1, 30, 9]])]
        np.savez_compressed(det / "overlays.npz", image=rng.integers(0, 255, (3, 3, 32, 32), dtype=np.uint8),
                            case=np.array(["best", "median", "worst"]), sample_id=np.array(["a1", "b2", "c3"]),
                            f1=np.array([1.0, 0.5, 0.0]), truth=np.array(boxes, dtype=object),
                            boxes=np.array([boxes[0] + 1, np.zeros((0, 4)), np.array([[0, 0, 5, 5]])], dtype=object),
                            scores=np.array([np.array([0.9, 0.8]), np.zeros(0), np.array([0.3])], dtype=object))
    return root


class Tables(HTMLParser):
    """Cell texts of every ``<table id=...>``, the ``<p id="summary">`` text, and all text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.summary, self.text, self.images = "", [], []
        self._table = self._cell = None
        self._in_summary = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "p" and a.get("id") == "summary-det":
            self._in_summary = True
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table is not None:
            self._table[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "p":
            self._in_summary = False

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell += data
        if self._in_summary:
            self.summary += data


def parse(run: Path) -> Tables:
    p = Tables()
    write_det_section(run)
    write_det_export_section(run)
    p.feed(write_report(run).read_text())
    return p


def cell(p: Tables, table: str, row: str, column: str) -> str:
    head, *rows = p.tables[table]
    return next(r for r in rows if r[0] == row)[head.index(column)]


def test_numbers_figures_and_winner_detector(tmp_path):
    p = parse(make_run(tmp_path, seg_cpm=0.7))
    assert cell(p, "metrics-test", "detector", "CPM") == "0.812 (0.772–0.852)"
    assert cell(p, "metrics-test", "detection by segmentation", "CPM") == "0.700 (0.660–0.740)"
    assert cell(p, "metrics-external", "detector", "CPM") == "0.654 (0.614–0.694)"
    assert cell(p, "metrics-test", "detector", "sensitivity at 1 FP/image") == "0.812 (0.772–0.852)"
    assert cell(p, "metrics-external", "detector", "precision") == "n/a"
    assert cell(p, "size-test", "< 16", "sensitivity, detection by segmentation") == "0.600 (0.560–0.640)"
    assert ("The detector wins on test CPM: 0.812 versus 0.700 for detection by segmentation, higher by 0.112"
            in p.summary)
    assert "detector higher for 36-64 and >= 64" in p.summary
    assert "detection by segmentation higher for < 16" in p.summary and "tie for 16-36" in p.summary
    assert "0.654 (0.614–0.694)" in p.summary  # external CPM
    assert [c[1] for c in p.tables["deployment"][1:]] == ["8", "0.0012", "yes", "2.5 MB", "medlens_det"]
    uris = [i for i in p.images if i["src"].startswith("data:image/png;base64,")]
    assert len(uris) == len(p.images) == 2 and all(i.get("alt") for i in uris)
    text = " ".join(p.text)
    assert not re.search(r"\bnan\b", text, re.I)
    assert "LUNA16" in text and "2000 replicates" in text and "green boxes" in text


def test_segmentation_wins_and_no_overlays(tmp_path):
    p = parse(make_run(tmp_path, seg_cpm=0.9, overlays=False))
    assert ("Detection by segmentation wins on test CPM: 0.900 versus 0.812 for the detector, higher by 0.088"
            in p.summary)
    assert len(p.images) == 1 and "FROC" in p.images[0]["alt"]


def test_part_without_lesions_and_no_segmentation(tmp_path):
    run = make_run(tmp_path, segmentation=False, external={"detector": {"n_lesions": 0, "n_images": 5}})
    p = parse(run)
    assert cell(p, "metrics-external", "detector", "CPM") == "no lesions"
    assert cell(p, "metrics-external", "detector", "images") == "5"
    assert "size-external" not in p.tables
    assert "not run" in p.summary and "no lesions" in p.summary
    assert not re.search(r"\bnan\b", " ".join(p.text), re.I)


def test_missing_metrics(tmp_path):
    from medlens.errors import StageInputMissing

    with pytest.raises(StageInputMissing):
        write_det_section(tmp_path)
    with pytest.raises(StageInputMissing):
        write_report(tmp_path)  # nothing to report
