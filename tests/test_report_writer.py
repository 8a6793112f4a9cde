"""One report writer: every task's report.html comes from medlens.report, from run-directory files alone."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import grimp
import pytest
from matplotlib.figure import Figure

from medlens.report import write_report
from medlens.report.html import GENERATOR
from medlens.sections import format_ci, read_section, read_sections, section_dir, write_section

FORBIDDEN = ("stages", "train", "inference", "evaluate", "explain", "trust", "ssl", "seg", "detection",
             "lightweight", "export", "serve", "models", "qc", "dicom")


def _figure() -> Figure:
    fig = Figure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1], [0, 1])
    return fig


def _seg_run(root: Path) -> Path:
    """A segmentation run as the seg stage leaves it for the report: its section only."""
    write_section(root, "seg", title="Lesion segmentation", summary="A U-Net was trained; Dice 0.700 (0.600–0.800).",
                  figures={"overlays": _figure()},
                  tables={"metrics": [{"metric": "Dice (images with lesions)", "test": "0.700 (0.600–0.800)"}]})
    return root


def _det_run(root: Path) -> Path:
    """A detection run: hand-written det/metrics.json and export.json, the sections the det stages write."""
    import importlib.util

    from medlens.detection.report import write_det_export_section, write_det_section

    spec = importlib.util.spec_from_file_location("det_report_fixture",
                                                  Path(__file__).parent / "detection" / "test_report.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    fixture.make_run(root)
    write_det_section(root)
    write_det_export_section(root)
    return root


def _marks(html: str) -> tuple[str, str, str]:
    """The generator, the stylesheet and the page heading's prefix: the same for one template."""
    gen = re.search(r'<meta name="generator" content="([^"]+)">', html).group(1)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    h1 = re.search(r"<h1>(Study report: )", html).group(1)
    return gen, style, h1


def test_every_task_is_rendered_by_the_one_writer(tiny_run, tmp_path):
    cls = tmp_path / "cls"
    shutil.copytree(tiny_run, cls)
    pages = {"classification": write_report(cls).read_text(),
             "segmentation": write_report(_seg_run(tmp_path / "seg")).read_text(),
             "detection": write_report(_det_run(tmp_path / "det")).read_text()}
    marks = {task: _marks(html) for task, html in pages.items()}
    assert len(set(marks.values())) == 1 and marks["detection"][0] == GENERATOR
    # the classification page shows the evaluate stage's figures and every section the stages wrote
    sections = read_sections(cls)
    assert {"evaluate", "explain", "trust", "export"} <= set(sections)
    for name, sec in sections.items():
        if name != "evaluate":
            assert sec["title"] in pages["classification"], name
    assert pages["classification"].count("data:image/png;base64,") >= len(sections["evaluate"]["figures"]) + 2
    assert "Lesion segmentation" in pages["segmentation"] and "Dice 0.700 (0.600–0.800)" in pages["segmentation"]
    assert "Lesion detection" in pages["detection"] and 'id="metrics-test"' in pages["detection"]
    for html in pages.values():  # self-contained: every figure inline
        assert not re.search(r'<img[^>]+src="(?!data:image/png;base64,)', html)


def test_the_report_computes_nothing_it_reads_pngs(tiny_run, tmp_path):
    """Replacing a stage's PNG changes the page: the figure is the file, not redrawn at render time."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = write_report(run).read_text()
    roc = section_dir(run, "evaluate") / "roc_test.png"
    shutil.copy(section_dir(run, "explain") / "gallery.png", roc)
    after = write_report(run).read_text()
    assert before != after
    import base64

    assert base64.b64encode(roc.read_bytes()).decode() in after


def test_the_report_imports_no_stage_engine_or_functional_package():
    graph = grimp.build_graph("medlens", cache_dir=None)
    upstream = graph.find_upstream_modules("medlens.report", as_package=True)
    bad = sorted(m for m in upstream if m.split(".")[1:2] and m.split(".")[1] in FORBIDDEN)
    assert "medlens.sections" in upstream  # it reads the sections the stages wrote
    assert not bad, f"medlens.report imports {bad}"


def test_section_round_trip_and_stale_figures(tmp_path):
    path = write_section(tmp_path, "demo", title="Demo", summary="s", flags=["careful"],
                         figures={"a curve": _figure(), "b": {"figure": _figure(), "title": "B", "caption": "c"},
                                  "none": None},
                         tables={"t": [{"x": 1, "y": 0.5}], "u": {"rows": [], "title": "U", "note": "n"}},
                         methods=["how"])
    sec = read_section(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == 1 and list(sec["figures"]) == ["a curve", "b"]
    assert sec["figures"]["a curve"]["file"] == "a_curve.png" and sec["figures"]["b"]["caption"] == "c"
    assert len(sec["figures"]["b"]["sha256"]) == 64
    assert sec["tables"]["t"]["rows"] == [{"x": 1, "y": 0.5}] and sec["methods"] == ["how"]
    write_section(tmp_path, "demo", title="Demo", summary="s", figures={"b": _figure()})
    assert not (path.parent / "a_curve.png").exists() and (path.parent / "b.png").is_file()
    (path.parent / "b.png").unlink()
    from medlens.errors import DataError

    with pytest.raises(DataError, match="missing"):
        read_section(path)


def test_one_ci_formatter():
    assert format_ci({"value": 0.9123, "low": 0.87, "high": 0.95}) == "0.912 (0.870–0.950)"
    assert format_ci(0.5, 0.25, 0.75, label="95% CI ") == "0.500 (95% CI 0.250–0.750)"
    assert format_ci({"value": 0.5, "low": float("nan"), "high": 1.0}) == "0.500"  # no interval: the value alone
    assert format_ci(None) == format_ci({"value": float("nan")}) == "n/a"
    assert format_ci({"value": None}, undefined="–") == "–"
