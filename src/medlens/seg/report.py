"""Report section of a segmentation study: overlays, metric tables, per-size sensitivity.

:func:`report_section` returns the context the study report needs (figures as data
URIs, tables as lists of dicts, a title and a plain-language summary);
:func:`write_seg_report` renders it alone as ``run/report.html`` for a ``task: segmentation`` study.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
from matplotlib.figure import Figure

__all__ = ["overlay_figure", "report_section", "write_seg_report"]

_LABELS = {
    "dice": "Dice (images with lesions)", "dice_all": "Dice (all images; none vs none = 1)",
    "dice_global": "Dice (pooled pixels)", "iou": "IoU (images with lesions)", "hd95": "HD95 (px)",
    "asd": "Average surface distance (px)", "sensitivity": "Pixel sensitivity", "precision": "Pixel precision",
    "lesion_sensitivity": "Per-lesion sensitivity", "lesion_precision": "Per-lesion precision",
    "lesion_count_error": "Lesion count error (mean |pred − true|)", "auc_mask": "Image AUC from mask (max prob.)",
    "auc_cls": "Image AUC, multi-task classification head", "auc_classifier": "Image AUC, classification-only model",
    "auc_difference": "AUC difference (ours − classification-only)",
}


def overlay_figure(image: np.ndarray, truth: np.ndarray, prob: np.ndarray, titles: list[str], *,
                   threshold: float = 0.5) -> Figure:
    """Cases side by side: the image with expert (green) and predicted (magenta) outlines, and the probability map.

    Parameters
    ----------
    image : ndarray of shape (N, 3, H, W), uint8
    truth : ndarray of shape (N, H, W)
    prob : ndarray of shape (N, H, W)
    titles : list of str
    """
    n = len(image)
    fig = Figure(figsize=(2.4 * n, 4.9))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(image[i].transpose(1, 2, 0))
        if truth[i].any():
            ax.contour(truth[i], levels=[0.5], colors="lime", linewidths=0.9)
        if (prob[i] > threshold).any():
            ax.contour(prob[i].astype(np.float32), levels=[threshold], colors="magenta", linewidths=0.9)
        ax.set_title(titles[i], fontsize=9)
        axes[1, i].imshow(prob[i].astype(np.float32), vmin=0, vmax=1, cmap="magma")
        axes[1, i].set_title("lesion probability", fontsize=8)
        for a in axes[:, i]:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle("green: expert mask, magenta: prediction", fontsize=9)
    return fig


def _fmt(e: dict) -> str:
    return "n/a" if e["value"] != e["value"] else f"{e['value']:.3f} ({e['low']:.3f}–{e['high']:.3f})"


def report_section(run: Path) -> dict | None:
    """Context for the study report, or None when the run has no segmentation results.

    Returns
    -------
    dict or None
        ``title``, ``summary`` (one paragraph), ``figures`` (name -> data URI) and
        ``tables`` (name -> list of row dicts).
    """
    from medlens.report.html import figure_uri

    path = Path(run) / "seg" / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    parts = [p for p in ("test", "external") if p in m]
    rows = []
    for key, label in _LABELS.items():
        if any(key in m[p] for p in parts):
            rows.append({"metric": label, **{p: _fmt(m[p][key]) if key in m[p] else "" for p in parts}})
    tables = {"metrics": rows}
    for p in parts:
        tables[f"lesion size ({p})"] = [
            {"lesion size": r["lesion size"], "lesions": r["lesions"], "detected": r["detected"],
             "sensitivity (95% CI)": _fmt({"value": r["sensitivity"], "low": r["low"], "high": r["high"]})}
            for r in m[p]["lesion_size"]]
        if "severity" in m[p]:
            sv = m[p]["severity"]
            tables[f"severity ({p})"] = [{"metric": k, "value": _fmt(sv[k])} for k in ("mae", "rmse", "spearman",
                                                                                        "accuracy_rounded")]
    figures = {}
    ov = Path(run) / "seg" / "overlays.npz"
    if ov.is_file():
        z = np.load(ov)
        titles = [f"{c} (Dice {d:.2f})" for c, d in zip(z["case"], z["dice"])]
        fig = overlay_figure(z["image"], z["truth"], z["prob"], titles, threshold=m["threshold"])
        figures["overlays"] = figure_uri(fig)
    t = m.get("test", {})
    summary = ""
    if t:
        small = t["lesion_size"][0]
        heads = "segmentation, classification" + (", severity" if "severity" in t else "")
        net = f"multi-task U-Net ({heads})" if m["task"] == "multitask" else "U-Net"
        summary = (
            f"A {net} was trained on {m['folds_trained']} fold(s) at {m['image_size']} px"
            f"{' with CLAHE' if m.get('clahe') else ''}. On the {t['n_images']} held-out test images "
            f"({t['n_lesions']} lesions) the mean Dice on images with lesions was {_fmt(t['dice'])} and "
            f"{_fmt(t['lesion_sensitivity'])} of lesions were found (smallest lesions, {small['lesion size']}: "
            f"{small['detected']} of {small['lesions']}). Intervals are 95% patient-level bootstrap intervals "
            f"({m['n_bootstrap']} resamples).")
        if "auc_classifier" in t:
            ours = t.get("auc_cls", t.get("auc_mask"))
            summary += (f" Image-level AUC {_fmt(ours)} versus {_fmt(t['auc_classifier'])} for the same encoder "
                        f"trained as a classifier only on the same split.")
    return {"title": "Lesion segmentation" + (" and multi-task learning" if m["task"] == "multitask" else ""),
            "summary": summary, "figures": figures, "tables": tables}


_TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><title>{{ s.title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}</style></head><body>
<h1>{{ s.title }}</h1><p>{{ s.summary }}</p>
{% for name, uri in s.figures.items() %}<h2>{{ name }}</h2><img src="{{ uri }}" alt="{{ name }}">{% endfor %}
{% for name, rows in s.tables.items() %}<h2>{{ name }}</h2>
<table><tr>{% for k in rows[0].keys() %}<th>{{ k }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% for v in r.values() %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}</body></html>"""


def write_seg_report(run: Path) -> Path:
    """Render :func:`report_section` alone as ``run/report.html`` (self-contained, offline)."""
    section = report_section(run)
    out = Path(run) / "report.html"
    if section is None:
        from medlens.errors import StageInputMissing

        raise StageInputMissing(f"{Path(run) / 'seg' / 'metrics.json'} not found; run `medlens run <config>` with `task: segmentation` first")
    out.write_text(jinja2.Environment(autoescape=True).from_string(_TEMPLATE).render(s=section))
    return out
