"""The report sections of a lesion-detection study: FROC plot, metric tables, per-size sensitivity, box overlays.

:func:`write_det_section` writes ``run/sections/det/`` from ``run/det/metrics.json`` and
``run/det/overlays.npz`` at the end of the evaluation (:func:`medlens.detection.stage.det_stage`);
:func:`write_det_export_section` writes the deployment section ``run/sections/det_export/`` from
``run/det/export/export.json`` at the end of the export. :func:`medlens.report.write_report`
renders them, from those files only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from medlens.sections import format_ci, write_section

__all__ = ["write_det_export_section", "write_det_section"]

METHODS = {"detector": "detector", "segmentation": "detection by segmentation"}
PARTS = {"test": "internal test", "external": "external site"}
RATES = ("0.125", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0")
RATE_LABELS = ("1/8", "1/4", "1/2", "1", "2", "4", "8")
TRUTH_COLOUR, PRED_COLOUR = "#00e000", "#ff2bd6"
LEGEND = ("green boxes: reference lesions; magenta boxes: detector boxes at the operating point "
          "(labelled with their score)")


def _num(x: float | None) -> str:
    """``x`` to 3 decimals, ``"n/a"`` for None or NaN."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _ci(e: dict | None) -> str:
    """An estimate with its 95% CI, e.g. ``"0.912 (0.870–0.950)"``; ``"n/a"`` when the value is undefined."""
    return format_ci(e)


def froc_figure(curves: dict, metrics: dict) -> Figure:
    """FROC curves, one line per method and part (test solid, external dashed), operating points marked.

    Parameters
    ----------
    curves : dict
        ``metrics["curves"]``: part -> method -> ``{"fp_per_image": [...], "sensitivity": [...]}``.
    metrics : dict
        The whole ``metrics.json`` (for the operating points).
    """
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    colours = {"detector": "#2b6cb0", "segmentation": "#dd6b20"}
    for part, style, marker in (("test", "-", "o"), ("external", "--", "s")):
        for method, c in (curves.get(part) or {}).items():
            x, y = np.asarray(c.get("fp_per_image", []), float), np.asarray(c.get("sensitivity", []), float)
            if not x.size:
                continue
            colour = colours.get(method, "grey")
            ax.plot(x, y, ls=style, color=colour, label=f"{METHODS.get(method, method)}, {PARTS[part]}")
            op = ((metrics.get(part) or {}).get(method) or {}).get("operating_point")
            if op:
                ax.plot(op["fp_per_image"]["value"], op["sensitivity"]["value"], marker, color=colour)
    ax.set_xscale("log")
    ax.set_xlim(1 / 8, 8)
    ax.set_xticks([float(r) for r in RATES], RATE_LABELS)
    ax.minorticks_off()
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("lesion sensitivity")
    ax.grid(alpha=0.3)
    ax.set_title("FROC (markers: operating points)", fontsize=10)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower right")
    return fig


def overlay_figure(z) -> Figure:
    """The best, median and worst test images with reference (green) and predicted (magenta) boxes.

    Parameters
    ----------
    z : mapping
        The content of ``overlays.npz`` (``image`` uint8 (N, C, S, S), ``case``, ``sample_id``,
        ``f1``, ``truth``, ``boxes``, ``scores``); boxes are x0, y0, x1, y1 pixels, ends exclusive.
    """
    n = len(z["image"])
    fig = Figure(figsize=(3.2 * n, 3.6))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, ax in enumerate(axes):
        img = np.asarray(z["image"][i]).transpose(1, 2, 0)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for boxes, colour, scores in ((z["truth"][i], TRUTH_COLOUR, None),
                                      (z["boxes"][i], PRED_COLOUR, z["scores"][i])):
            for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, float).reshape(-1, 4)):
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.5))
                if scores is not None:
                    ax.text(x0 - 0.5, y0 - 0.5, f"{float(scores[k]):.2f}", color=colour, fontsize=7, va="top",
                            clip_on=True, bbox={"fc": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
        ax.set_title(f"{z['case'][i]}: {z['sample_id'][i]} (F1 {float(z['f1'][i]):.3f})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(LEGEND, fontsize=8)
    fig.tight_layout()
    return fig


_COLUMNS = ["method", "CPM", "mAP@0.5", "COCO mAP", "sensitivity at 1/8 FP/image", "sensitivity at 1 FP/image",
            "sensitivity at 8 FP/image", "threshold", "sensitivity", "FP/image", "precision", "count error",
            "images", "lesions", "patients"]


def _method_rows(part: dict) -> list[dict]:
    """One table row per method of a part of ``metrics.json``."""
    rows = []
    for key, label in METHODS.items():
        s = part.get(key)
        if s is None:
            continue
        counts = {"images": s.get("n_images", "—"), "lesions": s.get("n_lesions", 0),
                  "patients": s.get("n_patients", "—")}
        if not s.get("n_lesions"):
            rows.append({"method": label, "CPM": "no lesions", **{c: "—" for c in _COLUMNS[2:-3]}, **counts})
            continue
        op, at = s["operating_point"], s["sensitivity_at"]
        rows.append({"method": label, "CPM": _ci(s["cpm"]), "mAP@0.5": _ci(s["map_50"]), "COCO mAP": _ci(s["map"]),
                     **{f"sensitivity at {lab} FP/image": _ci(at.get(r)) for r, lab in (("0.125", "1/8"), ("1.0", "1"),
                                                                                          ("8.0", "8"))},
                     "threshold": _num(op["threshold"]), "sensitivity": _ci(op["sensitivity"]),
                     "FP/image": _ci(op["fp_per_image"]), "precision": _ci(op["precision"]),
                     "count error": _ci(op["count_error"]), **counts})
    return rows


def _size_rows(part: dict) -> list[dict]:
    """Rows = lesion size bins; lesion count and operating-point sensitivity per method."""
    bins = {key: {b["bin"]: b for b in part[key]["operating_point"]["by_size"]}
            for key in METHODS if part.get(key, {}).get("n_lesions")}
    if not bins:
        return []
    first = next(iter(bins.values()))
    return [{"lesion box area (px²)": name, "lesions": b["n_lesions"],
             **{f"sensitivity, {METHODS[k]}": _ci(bins[k].get(name, {}).get("sensitivity")) for k in bins}}
            for name, b in first.items()]


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _comparison(det: dict, seg: dict | None, where: str = "test") -> str:
    """Which method has the higher CPM on ``where`` (test, external), by how much, and which is more sensitive per size bin."""
    if seg is None:
        return " The comparison with detection by segmentation was not run."
    if not seg.get("n_lesions"):
        return " Detection by segmentation could not be scored (no lesions)."
    a, b = _num(det["cpm"]["value"]), _num(seg["cpm"]["value"])
    if "n/a" in (a, b):
        text = f" The {where} CPMs of the two methods cannot be compared (undefined)."
    elif a == b:
        text = f" The detector and detection by segmentation have the same {where} CPM ({a})."
    else:
        pair = [("the detector", a, det["cpm"]), ("detection by segmentation", b, seg["cpm"])]
        (w, wv, we), (lo, lv, le) = sorted(pair, key=lambda t: -float(t[1]))
        overlap = we["low"] <= le["high"] and le["low"] <= we["high"]
        text = (f" {w[0].upper() + w[1:]} wins on {where} CPM: {wv} versus {lv} for {lo}, higher by "
                f"{float(wv) - float(lv):.3f}{' (the two intervals overlap)' if overlap else ''}.")
    d_bins = {r["bin"]: _num(r["sensitivity"]["value"]) for r in det["operating_point"]["by_size"]}
    s_bins = {r["bin"]: _num(r["sensitivity"]["value"]) for r in seg["operating_point"]["by_size"]}
    groups: dict[str, list[str]] = {"detector higher": [], "detection by segmentation higher": [], "tie": [],
                                    "no lesions of that size": []}
    for name, x in d_bins.items():
        y = s_bins.get(name, "n/a")
        key = ("no lesions of that size" if "n/a" in (x, y) else "tie" if x == y else
               "detector higher" if float(x) > float(y) else "detection by segmentation higher")
        groups[key].append(name)
    text += (f" {where[0].upper() + where[1:]} sensitivity at each method's operating point by lesion box area (px²): "
             + "; ".join(f"{k} for {_join(v)}" for k, v in groups.items() if v) + ".")
    return text


def _summary(m: dict) -> str:
    """The plain-language paragraph at the top of the report."""
    t = m.get("test") or {}
    det = t.get("detector")
    if not det:
        return "The run has no test results."
    if not det.get("n_lesions"):
        return f"The {det.get('n_images', 0)} internal test images have no lesions, so detection could not be scored."
    op = det["operating_point"]
    text = (f"On the {det['n_images']} internal test images ({det['n_lesions']} lesions, {det.get('n_patients', '?')} "
            f"patients) the detector's CPM (mean lesion sensitivity at 1/8 to 8 false positives per image) was "
            f"{_ci(det['cpm'])}. At its operating point (score ≥ {_num(op['threshold'])}, chosen on validation "
            f"images) its lesion sensitivity was {_ci(op['sensitivity'])} with {_ci(op['fp_per_image'])} false "
            "positives per image.")
    text += _comparison(det, t.get("segmentation"))
    e = m.get("external") or {}
    ext = e.get("detector")
    if ext and ext.get("n_lesions"):
        text += f" On the external site ({ext.get('n_images', 0)} images) the detector's CPM was {_ci(ext['cpm'])}."
        if e.get("segmentation"):
            text += _comparison(ext, e["segmentation"], "external")
    elif ext:
        text += " The external site's images have no lesions."
    return text + " Intervals are 95% patient-level bootstrap intervals."


def _deployment(path: Path) -> list[dict]:
    """Scalar items of ``export.json``'s parity check, the ONNX size and the Triton model name."""
    if not path.is_file():
        return []
    e = json.loads(path.read_text())

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3g}"
        return ("yes" if v else "no") if isinstance(v, bool) else str(v)

    rows = [{"item": f"parity: {k.replace('_', ' ')}", "value": fmt(v)} for k, v in (e.get("parity") or {}).items()
            if isinstance(v, (bool, int, float, str))]
    if isinstance(e.get("onnx_size_bytes"), (int, float)):
        rows.append({"item": "ONNX file size", "value": f"{e['onnx_size_bytes'] / 1e6:.1f} MB"})
    if isinstance(e.get("triton_name"), str):
        rows.append({"item": "Triton model name", "value": e["triton_name"]})
    for part, share in sorted(((e.get("ood") or {}).get("flagged") or {}).items()):
        rows.append({"item": f"OOD gate: {part} images refused", "value": f"{share:.1%}"})
    return rows


CPM_NOTE = ("CPM: mean lesion sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image. "
            "COCO mAP: mean over IoU 0.50–0.95. Count error: mean |boxes shown − true lesions| per image.")


def _notes(m: dict) -> list[str]:
    """The methods list: hit rule, operating point, validation, CIs, models."""
    v = m.get("validation") or {}
    hit = m.get("hit_rule", "centre")
    seg_t = m.get("segmentation_threshold")
    return [("Hit rule: a predicted box hits a lesion when its centre lies inside the lesion's box, as in LUNA16."
             if hit == "centre" else f"Hit rule: a predicted box hits a lesion when their overlap is {hit}."),
            f"Operating point: {m.get('threshold_rule', 'not recorded')}; detector threshold "
            f"{_num(m.get('threshold'))}{'' if seg_t is None else f', segmentation threshold {_num(seg_t)}'}.",
            f"Validation (out-of-fold, {v.get('n_images', '?')} images, {v.get('n_lesions', '?')} lesions) at that "
            f"threshold: sensitivity {_num(v.get('sensitivity'))}, {_num(v.get('fp_per_image'))} false positives "
            "per image.",
            f"95% confidence intervals: patient-level bootstrap, {m.get('n_bootstrap', '?')} replicates (each draws "
            "patients with replacement and keeps all their images).",
            f"{m.get('folds_trained', '?')} fold model(s) at {m.get('image_size', '?')} px, "
            f"{m.get('parameters', 0) / 1e6:.2f} M parameters each, at most {m.get('max_detections', '?')} boxes "
            "per image."]


def write_det_section(run: Path) -> Path:
    """Write the detection study's report section (``run/sections/det/``).

    Parameters
    ----------
    run : Path
        The run directory; reads ``det/metrics.json`` and, when present, ``det/overlays.npz``.

    Returns
    -------
    Path
        The written ``section.json``: the summary paragraph, the figures ``froc`` and ``overlays``,
        the tables ``metrics-<part>`` and ``size-<part>`` and the methods list.

    Raises
    ------
    StageInputMissing
        When ``det/metrics.json`` is absent.
    """
    run = Path(run)
    path = run / "det" / "metrics.json"
    if not path.is_file():
        from medlens.errors import StageInputMissing

        raise StageInputMissing(f"{path} not found; run `medlens run <config>` with `task: detection` first")
    m = json.loads(path.read_text())
    parts = {p: label for p, label in PARTS.items() if m.get(p)}
    curves = m.get("curves") or {}
    figures = {}
    if any(c.get("fp_per_image") for p in curves.values() for c in p.values()):
        figures["froc"] = {"figure": froc_figure(curves, m), "title": "Figure 1. FROC curves",
                           "alt": "FROC curves: lesion sensitivity against false positives per image (1/8 to 8, "
                                  "log scale) for each method; test solid, external dashed"}
    ov = run / "det" / "overlays.npz"
    if ov.is_file():
        with np.load(ov, allow_pickle=True) as z:
            figures["overlays"] = {
                "figure": overlay_figure({k: z[k] for k in z.files}),
                "title": "Figure 2. Best, median and worst test images",
                "alt": f"Test images with reference and predicted lesion boxes: {LEGEND}",
                "caption": f"{LEGEND}. Ranked by lesion F1 at the operating point among test images with lesions."}
    tables = {}
    metrics = {p: _method_rows(m[p]) for p in parts}
    shown = [p for p in parts if metrics[p]]
    for p in shown:
        tables[f"metrics-{p}"] = {"rows": metrics[p], "title": f"Metrics: {parts[p]}",
                                  "note": CPM_NOTE if p == shown[-1] else None}
    for p in parts:
        rows = _size_rows(m[p])
        if rows:
            tables[f"size-{p}"] = {"rows": rows, "title": f"Sensitivity by lesion size (operating point): {parts[p]}"}
    return write_section(run, "det", title="Lesion detection", summary=_summary(m), figures=figures, tables=tables,
                         methods=_notes(m))


def write_det_export_section(run: Path) -> Path | None:
    """Write the detection export's deployment section (``run/sections/det_export/``) from
    ``run/det/export/export.json``; None when the detectors were not exported."""
    rows = _deployment(Path(run) / "det" / "export" / "export.json")
    if not rows:
        return None
    return write_section(run, "det_export", title="Deployment", summary="", tables={"deployment": rows})
