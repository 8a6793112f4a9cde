"""Report section of a segmentation study: overlays, metric tables, per-size sensitivity.

:func:`write_seg_section` writes it (``run/sections/seg/``: title, plain-language summary,
tables, the overlay figure) at the end of the seg stage, from ``run/seg/metrics.json`` and
``run/seg/overlays.npz``; :func:`medlens.report.write_report` renders it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from medlens.sections import format_ci, write_section

__all__ = ["overlay_figure", "write_seg_section"]

_LABELS = {
    "dice": "Dice (images with lesions)", "dice_all": "Dice (all images; none vs none = 1)",
    "dice_global": "Dice (pooled pixels)", "iou": "IoU (images with lesions)", "hd95": "HD95 (px)",
    "asd": "Average surface distance (px)", "sensitivity": "Pixel sensitivity", "precision": "Pixel precision",
    "lesion_sensitivity": "Per-lesion sensitivity", "lesion_precision": "Per-lesion precision",
    "lesion_count_error": "Lesion count error (mean |pred − true|)", "auc_mask": "Image AUC from mask (max prob.)",
    "auc_cls": "Image AUC, multi-task classification head", "auc_classifier": "Image AUC, classification-only model",
    "auc_difference": "AUC difference (ours − classification-only)",
}


def overlay_figure(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, fov: np.ndarray,
                   titles: list[str]) -> Figure:
    """Cases side by side: the photograph, and the errors coloured on it.

    True positives are green, false positives red, false negatives blue; pixels outside
    the field of view are dimmed.

    Parameters
    ----------
    image : ndarray of shape (N, 3, H, W), uint8
    truth, pred, fov : ndarray of shape (N, H, W)
        Reference, thresholded prediction and field of view (non-zero is on).
    titles : list of str
    """
    n = len(image)
    h, w = truth.shape[1:]
    fig = Figure(figsize=(3.2 * n, 2 * 3.2 * h / w + 0.6))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        t, q, f = truth[i] > 0, pred[i] > 0, fov[i] > 0
        rgb = image[i].transpose(1, 2, 0).astype(np.float32) / 255
        err = rgb * 0.35
        err[t & q] = (0.1, 0.85, 0.1)
        err[~t & q] = (0.95, 0.15, 0.1)
        err[t & ~q] = (0.2, 0.45, 1.0)
        err[~f] *= 0.3
        axes[0, i].imshow(rgb)
        axes[0, i].set_title(titles[i], fontsize=9)
        axes[1, i].imshow(err, interpolation="nearest")
        for a in axes[:, i]:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle("green: true positive, red: false positive, blue: false negative", fontsize=9)
    fig.tight_layout()
    return fig


def _fmt(e: dict) -> str:
    return format_ci(e)


def write_seg_section(run: Path) -> Path | None:
    """Write the report's segmentation section (``run/sections/seg/``).

    Returns
    -------
    Path or None
        The written ``section.json`` (``title``, ``summary`` (one paragraph), the figure
        ``overlays``, tables), or None when the run has no segmentation results.
    """
    path = Path(run) / "seg" / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    figures = {}
    ov = Path(run) / "seg" / "overlays.npz"
    if ov.is_file():
        z = np.load(ov)
        word = "F1" if m.get("structure") == "vessels" else "Dice"
        titles = [f"{c} ({word} {d:.3f})" for c, d in zip(z["case"], z["dice"])]
        figures["overlays"] = overlay_figure(z["image"], z["truth"], z["pred"], z["fov"], titles)
    if m.get("structure") == "vessels":
        return write_section(run, "seg", **_vessel_section(m, figures))
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
        det = m[p].get("detection", {})
        if det.get("n_lesions"):
            tables[f"scored as a detector ({p})"] = (
                [{"metric": "CPM (mean sensitivity at 1/8-8 FP per image)", "value": _fmt(det["cpm"])}]
                + [{"metric": f"lesion sensitivity at {r} FP per image", "value": _fmt(e)}
                   for r, e in det["sensitivity_at"].items()]
                + [{"metric": "COCO mAP@0.5", "value": _fmt(det["map_50"])},
                   {"metric": "COCO mAP@[.5:.95]", "value": _fmt(det["map"])}])
        if "severity" in m[p]:
            sv = m[p]["severity"]
            tables[f"severity ({p})"] = [{"metric": k, "value": _fmt(sv[k])} for k in ("mae", "rmse", "spearman",
                                                                                        "accuracy_rounded")]
    t = m.get("test", {})
    summary = ""
    if t:
        small = t["lesion_size"][0]
        heads = "segmentation, classification" + (", severity" if "severity" in t else "")
        net = f"multi-task U-Net ({heads})" if m["task"] == "multitask" else "U-Net"
        summary = (
            f"A {net} was trained on {m['folds_trained']} fold(s) at {m['image_size']} px"
            f"{' with CLAHE' if m.get('clahe') else ''}; {_threshold_words(m)}. On the {t['n_images']} held-out test images "
            f"({t['n_lesions']} lesions) the mean Dice on images with lesions was {_fmt(t['dice'])} and "
            f"{_fmt(t['lesion_sensitivity'])} of lesions were found (smallest lesions, {small['lesion size']}: "
            f"{small['detected']} of {small['lesions']}). Intervals are 95% patient-level bootstrap intervals "
            f"({m['n_bootstrap']} resamples).")
        if t.get("detection", {}).get("n_lesions"):
            summary += (f" Scored as a detector (each component of the thresholded map a box, scored by its highest "
                        f"probability; a hit when the box centre lies in a lesion's box, as in LUNA16): CPM "
                        f"{_fmt(t['detection']['cpm'])}, COCO mAP@0.5 {_fmt(t['detection']['map_50'])}.")
        if "auc_classifier" in t:
            ours = t.get("auc_cls", t.get("auc_mask"))
            summary += (f" Image-level AUC {_fmt(ours)} versus {_fmt(t['auc_classifier'])} for the same encoder "
                        f"trained as a classifier only on the same split.")
    return write_section(run, "seg", title="Lesion segmentation" + (" and multi-task learning" if m["task"] == "multitask"
                                                                    else ""),
                         summary=summary, figures=figures, tables=tables)


_PIXEL_LABELS = {"f1": "F1 (Dice)", "auc": "Pixel AUC", "sensitivity": "Sensitivity", "specificity": "Specificity",
                 "accuracy": "Accuracy", "mcc": "MCC", "cldice": "clDice (topology)"}


def _threshold_words(m: dict) -> str:
    if m.get("threshold_rule") == "validation":
        return (f"pixels above {m['threshold']:.3f} are foreground, the threshold that maximised pooled F1 on the "
                f"{m['validation']['n_images']} out-of-fold validation images (F1 {m['validation']['f1']:.3f} there), "
                "never on test images")
    return f"pixels above the fixed threshold {m['threshold']:.3f} are foreground"


def _vessel_section(m: dict, figures: dict) -> dict:
    """Vessel segmentation: pixel metrics inside the FOV, beside the second observer and published results."""
    parts = [p for p in ("test", "external") if p in m]
    tables = {"pixel metrics inside the field of view (pooled over images)": [
        {"metric": label, **{p: _fmt(m[p]["pixels"][k]) for p in parts}} for k, label in _PIXEL_LABELS.items()]}
    t = m.get("test")
    summary = ""
    if t:
        px = t["pixels"]
        rows = [{"who": "medlens U-Net (this study)", **{label: _fmt(px[k]) for k, label in _PIXEL_LABELS.items()}}]
        obs = t.get("second_observer")
        if obs:
            rows.append({"who": "second human observer (same images)",
                         **{label: _fmt(obs[k]) if k in obs else "—" for k, label in _PIXEL_LABELS.items()}})
        for b in m.get("published", []):
            rows.append({"who": f"{b['name']} (published{', ' + b['source'] if b.get('source') else ''})",
                         **{label: f"{b[k]:.3f}" if b.get(k) is not None else "—" for k, label in _PIXEL_LABELS.items()}})
        tables["ours, the second observer and published results (test images)"] = rows
        sc = t.get("scale", {"min": 1.0, "max": 1.0})
        if m["resample"] == "square":
            scale = f"images resized to {m['image_size']} px"
        elif sc["min"] == sc["max"] == 1.0:
            scale = "at the photographs' own resolution"
        else:
            scale = (f"photographs rescaled by {sc['min']:.3f}–{sc['max']:.3f} so that the field of view has the "
                     "width the recipe was designed at")
        net = "U-Net on a timm encoder" if m.get("architecture") == "timm_unet" else "U-Net"
        summary = (f"A {net} ({m.get('parameters', 0) / 1e6:.2f} M parameters) was trained on random "
                   f"{m['patch_size']} px patches ({m['channels']} channel"
                   f"{', CLAHE' if m.get('clahe') else ''}; {scale}) in {m['folds_trained']} fold(s), and "
                   f"predicts whole images by sliding window; {_threshold_words(m)}. On the {px['n_images']} test "
                   f"images, pixels inside the field of view pooled, F1 was {_fmt(px['f1'])} and the pixel AUC "
                   f"{_fmt(px['auc'])}.")
        if obs:
            verdict = "above" if px["f1"]["low"] > obs["f1"]["value"] else (
                "below" if px["f1"]["high"] < obs["f1"]["value"] else "not distinguishable from")
            summary += (f" The second human observer, scored the same way against the reference, has F1 "
                        f"{_fmt(obs['f1'])}; the model's interval lies {verdict} that figure.")
        summary += (f" Intervals are 95% bootstrap intervals over patients ({m['n_bootstrap']} resamples); "
                    "metrics are computed on the original pixels.")
    return {"title": "Vessel segmentation", "summary": summary, "figures": figures, "tables": tables}
