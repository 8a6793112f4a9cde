"""Render ``report.html`` from the files of a run directory, for every task, with one Jinja2 template.

The report reads ``metrics.json`` (classification), the report sections the stages left in
``run/sections/`` (:mod:`medlens.sections`: ``section.json`` and PNG figures), and
``manifest.parquet``, ``splits.json``, ``qc.parquet`` and ``qc_thresholds.json``. It imports no
stage and computes no statistic: every number and figure on the page was written by a stage.

The page is self-contained: figures are inline PNG (base64), styles are inline, and
nothing is fetched from the network — hospital servers are offline.
"""

from __future__ import annotations

import base64
import json
import platform
import re
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import jinja2
import pandas as pd

import medlens
from medlens.config import StudyConfig, load_config
from medlens.errors import ConfigError, StageInputMissing
from medlens.sections import format_ci, read_sections

GENERATOR = "medlens.report"
"""The ``<meta name="generator">`` of every report.html: one writer for every task."""

SECTION_ORDER = ("lightweight", "train", "seg", "det", "medmnist", "explain", "trust", "ssl", "export", "det_export")
"""Where each section (by its folder under ``run/sections/``) appears; others follow, by name.
``evaluate`` is not in the list: its figures sit beside the numbers of ``metrics.json``."""

INPUTS = ("metrics.json", "manifest.parquet", "splits.json", "qc.parquet", "qc_thresholds.json",
          *(f"sections/{name}/section.json" for name in ("evaluate", *SECTION_ORDER)))
"""The run-relative files the report reads, each of which may be absent (a report stage's inputs;
a ``section.json`` holds the digests of its figures)."""


def png_uri(path: Path) -> str:
    """A PNG file as a ``data:image/png;base64`` URI (the page stays one file)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def slug(name: str) -> str:
    """A table name as an HTML id: ``"lesion size (test)"`` -> ``"lesion-size-test"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


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
            f"several images. Seed {cfg.seed}; medlens {medlens.__version__}, torch {version('torch')}, "
            f"Python {platform.python_version()}.")


def _inline(section: dict) -> dict:
    """A section with each figure's ``uri`` (the PNG inline)."""
    for fig in section["figures"].values():
        fig["uri"] = png_uri(fig["path"])
    return section


def _config(run: Path, required: bool) -> StudyConfig | None:
    """The run's recorded ``config.yaml``; None when absent or unreadable and not ``required``."""
    path = run / "config.yaml"
    if not path.is_file():
        if required:
            raise StageInputMissing(f"{path} not found; pass the study config or run `medlens run <config>` first")
        return None
    try:
        return load_config(path)
    except ConfigError:
        if required:
            raise
        return None


def write_report(run: Path, cfg: StudyConfig | None = None) -> Path:
    """Write ``run/report.html`` for a finished run of any task, from its files alone.

    Parameters
    ----------
    run : path
        The run directory. A classification study needs ``metrics.json`` and
        ``sections/evaluate/`` (the evaluate stage); a segmentation or detection study its
        stage's section; every section present is shown.
    cfg : StudyConfig, optional
        The study config (name, methods paragraph); default: the run's ``config.yaml``.

    Raises
    ------
    StageInputMissing
        When the run has neither ``metrics.json`` nor a report section.
    """
    run = Path(run)
    classification = (run / "metrics.json").is_file()
    cfg = cfg or _config(run, required=classification)
    sections = read_sections(run, SECTION_ORDER)
    body = sections.pop("evaluate", None)
    if not classification and not sections:
        raise StageInputMissing(f"nothing to report in {run}: no metrics.json and no sections/*/section.json; "
                                "run `medlens run <config>` first")
    metrics = json.loads((run / "metrics.json").read_text()) if classification else None
    figs = {name: png_uri(f["path"]) for name, f in body["figures"].items()} if body else {}
    have_data = (run / "manifest.parquet").is_file() and (run / "splits.json").is_file()
    manifest, splits = ((pd.read_parquet(run / "manifest.parquet"), json.loads((run / "splits.json").read_text()))
                        if have_data else (None, None))
    env = jinja2.Environment(loader=jinja2.PackageLoader("medlens.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]))
    env.filters["ci"] = lambda e: format_ci(e, label="95% CI ", undefined="undefined")
    env.filters["slug"] = slug
    html = env.get_template("report.html").render(
        cfg=cfg, name=cfg.name if cfg else run.name, m=metrics, figs=figs,
        task=metrics["task"] if metrics else (cfg.task if cfg else "not recorded"),
        data=data_summary(manifest, splits) if have_data else None,
        qc=qc_summary(run / "qc.parquet"), sections=[_inline(s) for s in sections.values()],
        methods=methods_text(cfg, metrics, splits) if metrics else "", version=medlens.__version__,
        generator=GENERATOR, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    out = run / "report.html"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out
