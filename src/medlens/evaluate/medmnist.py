"""MedMNIST v2 evaluator: a run scored as the benchmark scores it, beside the paper's published rows.

MedMNIST v2 (Yang et al., Scientific Data 2023) reports test AUC and ACC with its own
evaluator, which differs from the study's clinical metrics in two ways:

- binary ACC counts ``p1 > 0.5`` (no operating point chosen on validation);
- multi-class and ordinal AUC is the unweighted mean of the one-vs-rest AUCs (what
  :func:`sklearn.metrics.roc_auc_score` computes with ``multi_class="ovr", average="macro"``)
  and ACC is the arg-max accuracy.

:func:`medmnist_metrics` computes exactly these, with 95% CIs (DeLong for a binary AUC,
stratified bootstrap for a macro AUC, Wilson for ACC). :func:`medmnist_stage` applies it
to a finished run's ``predictions.parquet`` and writes ``run/medmnist/summary.json``;
:func:`write_medmnist_section` turns that file into the report's "comparison with published
results" section. The paper's rows themselves are :mod:`medlens.data.medmnist`. MedMNIST
has no patient IDs, so every image is its own patient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, roc_auc_score

from medlens.config import StudyConfig
from medlens.data.medmnist import dataset_name
from medlens.errors import DataError, StageInputMissing
from medlens.evaluate.ci import Estimate, bootstrap_ci, wilson_ci
from medlens.evaluate.delong import delong_ci
from medlens.evaluate.metrics import auc_score
from medlens.sections import format_ci, write_section

__all__ = ["OUT", "TARGET_METHOD", "comparison_rows", "medmnist_metrics", "medmnist_stage", "write_medmnist_section",
           "sklearn_metrics"]

OUT = "medmnist"
"""Folder of this stage's outputs inside the run directory."""

TARGET_METHOD = "ResNet-18 (28)"
"""The paper row every dataset must reach (acceptance criterion of the benchmark)."""


def _proba(frame: pd.DataFrame) -> np.ndarray:
    cols = sorted((c for c in frame.columns if c.startswith("p") and c[1:].isdigit()), key=lambda c: int(c[1:]))
    if not cols:
        raise DataError("predictions have no class-score columns p0..pK-1 (a regression run has no MedMNIST AUC)")
    return frame[cols].to_numpy(np.float64)


def medmnist_metrics(y_true, y_proba, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Estimate]:
    """AUC and ACC as the MedMNIST evaluator defines them, with 95% confidence intervals.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Class indices 0..K-1.
    y_proba : array-like of shape (n_samples, K)
        Softmax scores; column order = class order (binary: the positive score is column 1).
    n_boot : int, default=2000
        Bootstrap resamples for the multi-class AUC interval.
    seed : int, default=0

    Returns
    -------
    dict of str -> Estimate
        ``auc``: binary AUC on column 1 (DeLong CI) or macro one-vs-rest AUC (stratified
        bootstrap CI); ``acc``: accuracy of ``p1 > 0.5`` (binary) or of the arg-max (Wilson CI).

    Examples
    --------
    >>> m = medmnist_metrics([0, 1, 1, 0], [[.9, .1], [.2, .8], [.6, .4], [.7, .3]])
    >>> round(m["auc"].value, 3), round(m["acc"].value, 3)
    (1.0, 0.75)
    """
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(y_proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] < 2:
        raise DataError(f"y_proba must be (n_samples, K>=2) for {y.shape[0]} labels, got {p.shape}")
    if p.shape[1] == 2:
        auc = delong_ci(y, p[:, 1])
        pred = (p[:, 1] > 0.5).astype(int)
    else:
        auc = bootstrap_ci(auc_score, y, p, n_resamples=n_boot, seed=seed)  # macro one-vs-rest, vectorised
        pred = p.argmax(1)
    return {"auc": auc, "acc": wilson_ci(int(np.sum(pred == y)), int(y.size))}


def sklearn_metrics(y_true, y_proba) -> dict[str, float]:
    """The same two numbers straight from scikit-learn, the reference the benchmark checks against."""
    y, p = np.asarray(y_true).astype(int).ravel(), np.asarray(y_proba, dtype=np.float64)
    if p.shape[1] == 2:
        return {"auc": float(roc_auc_score(y, p[:, 1])), "acc": float(accuracy_score(y, (p[:, 1] > 0.5).astype(int)))}
    return {"auc": float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=np.arange(p.shape[1]))),
            "acc": float(accuracy_score(y, p.argmax(1)))}


def medmnist_stage(run: Path, cfg: StudyConfig) -> dict:
    """Score a finished run with the MedMNIST evaluator; write ``run/medmnist/summary.json``.

    Reads ``predictions.parquet`` (written by the evaluate stage). The summary holds, per
    part (val, test), the AUC and ACC with 95% CIs, the scikit-learn values of the same
    numbers, and the published rows of ``cfg.evaluate.baselines``.

    Raises
    ------
    StageInputMissing
        No ``predictions.parquet``: the run has not been evaluated yet.
    """
    run = Path(run)
    pred_path = run / "predictions.parquet"
    if not pred_path.is_file():
        raise StageInputMissing(f"{pred_path} not found; run `medlens run` on the study config first")
    pred = pd.read_parquet(pred_path)
    out: dict = {"dataset": dataset_name(cfg.data.path) if cfg.data.path else cfg.name, "name": cfg.name,
                 "model": cfg.model.name, "image_size": cfg.train.image_size, "epochs": cfg.train.epochs,
                 "steps": cfg.train.steps, "min_steps": cfg.train.min_steps,
                 "patient_ids": "none: MedMNIST has no patient IDs, every image is its own patient",
                 "definitions": "binary: AUC of p1, ACC of p1 > 0.5; multi-class: macro one-vs-rest AUC, "
                                "ACC of the arg-max (MedMNIST v2 evaluator)",
                 "baselines": [b.model_dump() for b in cfg.evaluate.baselines]}
    for part in ("val", "test"):
        g = pred[pred["part"] == part]
        if g.empty:
            continue
        y, p = g["label"].to_numpy(int), _proba(g)
        est = medmnist_metrics(y, p, n_boot=cfg.evaluate.n_bootstrap, seed=cfg.seed)
        out[part] = {**{k: v.to_dict() for k, v in est.items()}, "n_images": int(len(g)),
                     "classes": int(p.shape[1]), "sklearn": sklearn_metrics(y, p)}
    dest = run / OUT
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "summary.json").write_text(json.dumps(out, indent=1, sort_keys=True))
    write_medmnist_section(run)
    return out


def comparison_rows(summary: dict) -> list[dict]:
    """Table rows: this study first (value and CI), then each published row."""
    rows = []
    test = summary.get("test")
    if test:
        rows.append({"method": f"this study ({summary['model']}, {summary['image_size']} px)",
                     "test AUC (95% CI)": format_ci(test["auc"]), "test ACC (95% CI)": format_ci(test["acc"]),
                     "source": summary["name"]})
    for b in summary.get("baselines", []):
        rows.append({"method": b["name"], "test AUC (95% CI)": "–" if b["auc"] is None else f"{b['auc']:.3f}",
                     "test ACC (95% CI)": "–" if b["acc"] is None else f"{b['acc']:.3f}", "source": b["source"]})
    return rows


def write_medmnist_section(run: Path) -> Path | None:
    """Write the report's "comparison with published results" section (``run/sections/medmnist/``).

    Returns None, writing nothing, when the summary holds no test part.
    """
    path = Path(run) / OUT / "summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    test = s.get("test")
    if not test:
        return None
    target = next((b for b in s.get("baselines", []) if b["name"] == TARGET_METHOD), None)
    verdict = ""
    if target and target.get("auc") is not None:
        verdict = (f" The paper's {TARGET_METHOD} reached {target['auc']:.3f}; this study is "
                   f"{'above' if test['auc']['value'] >= target['auc'] else 'below'} it.")
    kind = "two classes" if test["classes"] == 2 else f"{test['classes']} classes"
    summary = (f"On the official MedMNIST test set ({test['n_images']} images, {kind}) the model reached AUC "
               f"{format_ci(test['auc'], label='95% CI ')} and accuracy {format_ci(test['acc'])}, computed as the "
               f"MedMNIST evaluator does ({s['definitions']}); these may differ from the clinical summary above, "
               f"whose accuracy uses the operating point chosen on validation.{verdict} The published numbers are "
               f"means of at least 3 runs without CIs. MedMNIST has no patient IDs, so each image counts as one "
               f"patient and images of one child or eye may sit in both training and test data.")
    return write_section(run, "medmnist", title="Comparison with published results (MedMNIST v2)", summary=summary,
                         tables={"published results": comparison_rows(s)})
