"""Render ``report.html`` from the run directory with Jinja2 and matplotlib.

The page is self-contained: figures are inline PNG (base64), styles are inline, and
nothing is fetched from the network — hospital servers are offline.
"""

from __future__ import annotations

import base64
import io
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import pandas as pd
import torch
from matplotlib.figure import Figure

import medlens
from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.data.splits import load_splits
from medlens.evaluate import Estimate, plots


def figure_uri(fig: Figure) -> str:
    """A matplotlib figure as a ``data:image/png;base64`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def qc_summary(qc_path: Path) -> dict | None:
    """Number of images rejected by the quality gate and the count of each reason."""
    if not qc_path.is_file():
        return None
    qc = pd.read_parquet(qc_path)
    flags = [c for c in qc.columns if c.startswith("is_")]
    reasons = [(c[3:].replace("_", " "), int(qc[c].sum())) for c in flags if qc[c].any()]
    out = {"checked": len(qc), "rejected": int((~qc["passed"]).sum()), "reasons": reasons, "thresholds": []}
    learned = qc_path.with_name("qc_thresholds.json")
    if learned.is_file():
        info = json.loads(learned.read_text())
        out["learned_on"] = info["learned_on"]
        out["thresholds"] = [(name, t["value"], "learned" if t["learned"] else "fixed", t["why"])
                             for name, t in info["thresholds"].items()]
    return out


def data_summary(manifest: pd.DataFrame, splits: dict) -> dict:
    """Patients, images, sites and class balance, overall and per split part."""
    parts = {"test": splits["test"], "external": splits["external"]}
    parts["development (train+val)"] = sorted({s for f in splits["folds"] for s in f["train"] + f["val"]})
    by_id = manifest.set_index("sample_id")
    rows = []
    for name, ids in parts.items():
        sub = by_id.loc[ids]
        rows.append({"part": name, "images": len(sub), "patients": sub["patient_id"].nunique(),
                     "sites": ", ".join(sorted(sub["site"].unique())),
                     "classes": ", ".join(f"{k}: {v}" for k, v in sorted(sub["label"].value_counts().items()))})
    return {
        "images": len(manifest), "patients": manifest["patient_id"].nunique(),
        "sites": ", ".join(f"{k} ({v})" for k, v in sorted(manifest["site"].value_counts().items())),
        "patient_id_source": str(manifest.get("patient_id_source", pd.Series(["manifest"])).iloc[0]),
        "parts": rows,
    }


def _length(t) -> str:
    return f"{t.steps} optimiser steps" if t.steps is not None else f"{t.epochs} epochs"


def _engine(cfg: StudyConfig) -> str:
    """Optimiser and loss in words, e.g. 'AdamW, class-weighted cross-entropy, weight EMA 0.999'."""
    e = cfg.engine
    loss = {"class_weight": "class-weighted cross-entropy", "sampler": "cross-entropy on class-balanced batches",
            "none": "cross-entropy"}[e.imbalance]
    parts = [{"adamw": "AdamW", "sgd": "SGD"}[e.optimizer], loss]
    if e.label_smoothing:
        parts.append(f"label smoothing {e.label_smoothing:g}")
    if e.prior_correction:
        parts.append("biases shifted back to the training prevalence after training")
    if e.ema:
        parts.append(f"weight EMA {e.ema:g}")
    return ", ".join(parts)


CALIBRATION_WORDS = {"platt": "Platt scaling (a slope and an intercept on the logit)",
                     "temperature": "temperature scaling",
                     "bias_temperature": "temperature scaling with class intercepts"}
"""How ``calibration.json``'s method is named in the methods paragraph."""


def _calibration_text(metrics: dict, k: int) -> str:
    methods = {c["method"] for c in metrics.get("fold_calibration") or []} - {"none"}
    if not methods:
        return f"The fold models were not calibrated; test and external predictions average the {k} fold models."
    words = " / ".join(CALIBRATION_WORDS.get(m, m) for m in sorted(methods))
    return (f"Each fold model was calibrated by {words} on its own validation patients; test and external "
            f"predictions average the {k} calibrated fold models.")


def methods_text(cfg: StudyConfig, metrics: dict, splits: dict) -> str:
    """A methods paragraph generated from the resolved config."""
    s, m, t = cfg.split, cfg.model, cfg.train
    if splits.get("strategy") == "predefined":
        split_txt = "The data source's own train/validation/test split was used."
    else:
        split_txt = (f"Patients were split, grouped by patient and stratified by label, into a held-out test set "
                     f"({s.test_fraction:.0%} of internal patients) and {s.folds} cross-validation folds; no patient "
                     f"appears in more than one part (checked on every run).")
    ext = f" All images of site {s.external_site} formed an external validation set never used for training." \
        if s.external_site else ""
    op = metrics.get("operating_point")
    op_txt = (f" The operating point ({op['name']}, threshold {op['threshold']:.3f}) was chosen on the pooled "
              f"calibrated out-of-fold validation predictions and applied unchanged to test and external data.") if op else ""
    return (f"{split_txt}{ext} A {m.name} network (timm, {m.in_chans}-channel input, "
            f"{'weights from ' + str(m.pretrained) if m.pretrained else 'random initialisation'}) was trained per fold "
            f"for {_length(t)} at {t.image_size}×{t.image_size} px ({_engine(cfg)}, lr {t.lr:g}, batch {t.batch_size}"
            f"{', flips and brightness/contrast augmentation' if t.augment else ''}); "
            f"the {'weights' if cfg.engine.ema else 'epoch'} with the best validation {cfg.engine.monitor} "
            f"{'were' if cfg.engine.ema else 'was'} kept. {_calibration_text(metrics, len(splits['folds']))}"
            f"{op_txt} 95% confidence intervals: DeLong for AUC and Wilson for "
            f"proportions, or a patient-level bootstrap ({metrics['n_bootstrap']} resamples) when patients have "
            f"several images. Seed {cfg.seed}; medlens {medlens.__version__}, torch {torch.__version__}, "
            f"Python {platform.python_version()}.")


def _figures(pred: pd.DataFrame, metrics: dict, cfg: StudyConfig) -> dict[str, str]:
    figs = {}
    pcols = [c for c in pred.columns if c.startswith("p") and c[1:].isdigit()]
    binary = len(pcols) == 2
    for part in ("test", "external"):
        g = pred[pred["part"] == part]
        if g.empty:
            continue
        y, proba = g["label"].to_numpy(), g[pcols].to_numpy()
        if binary:
            t = metrics["operating_point"]["threshold"]
            auc = metrics.get(part, {}).get("auc")
            figs[f"roc_{part}"] = figure_uri(plots.plot_roc(
                y, proba[:, 1], groups=g["patient_id"].to_numpy(), n_boot=500, seed=cfg.seed, label=part,
                operating_threshold=t, auc_ci=Estimate(auc["value"], auc["low"], auc["high"]) if auc else None))
            figs[f"cm_{part}"] = figure_uri(plots.plot_confusion_matrix(y, (proba[:, 1] >= t).astype(int),
                                                                        class_names=["negative", "positive"]))
            if part == "test":
                figs["pr_test"] = figure_uri(plots.plot_pr(y, proba[:, 1], label=part))
                figs["calibration_test"] = figure_uri(plots.plot_reliability(y, proba[:, 1]))
        else:
            figs[f"cm_{part}"] = figure_uri(plots.plot_confusion_matrix(y, proba.argmax(1),
                                                                        class_names=[str(k) for k in range(len(pcols))]))
            if part == "test":  # top-label: the bins of the test ECE (15, equal width)
                figs["calibration_test"] = figure_uri(plots.plot_reliability(
                    y, proba, n_bins=15, xlabel="Probability of the predicted class", ylabel="Accuracy"))
    return figs


def extra_sections(run: Path) -> list[dict]:
    """Sections contributed by other stages (lightweight choice, training curves, explain, trust, SSL probe, export).

    Each is a mapping with ``title``, ``summary``, optional ``flags`` (shown prominently),
    ``figures`` (name -> data URI) and ``tables`` (name -> list of row dicts).
    """
    from medlens.explain import report_section as explain_section
    from medlens.export import report_section as export_section
    from medlens.lightweight import report_section as lightweight_section
    from medlens.ssl import report_section as ssl_section
    from medlens.train.report import report_section as train_section
    from medlens.trust import report_section as trust_section

    sections = (lightweight_section(run), train_section(run), explain_section(run), trust_section(run),
                ssl_section(run), export_section(run))
    return [sec for sec in sections if sec]


def write_report(run: Path, cfg: StudyConfig) -> Path:
    """Write ``report.html`` for a finished run (needs metrics.json and predictions.parquet)."""
    metrics = json.loads((run / "metrics.json").read_text())
    pred = pd.read_parquet(run / "predictions.parquet")
    manifest, splits = load_manifest(run / "manifest.parquet"), load_splits(run / "splits.json")
    env = jinja2.Environment(loader=jinja2.PackageLoader("medlens.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]))
    html = env.get_template("report.html").render(
        cfg=cfg, m=metrics, figs=_figures(pred, metrics, cfg), data=data_summary(manifest, splits),
        qc=qc_summary(run / "qc.parquet"), sections=extra_sections(run),
        methods=methods_text(cfg, metrics, splits), version=medlens.__version__,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    out = run / "report.html"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out
