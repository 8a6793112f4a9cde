"""The evaluate stage's figures for the report: ROC (with its patient-bootstrap band), confusion matrices,
precision-recall and reliability diagrams, saved as the run's ``evaluate`` report section."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medlens.evaluate import plots
from medlens.evaluate.ci import Estimate
from medlens.sections import write_section

ROC_BAND_RESAMPLES = 500
"""Patient-level bootstrap resamples of the ROC curve's band."""


def evaluation_figures(pred: pd.DataFrame, metrics: dict, *, seed: int) -> dict:
    """The figures of the report's main part, name -> matplotlib figure.

    ``roc_test``, ``roc_external``, ``cm_test``, ``cm_external``, ``pr_test`` and ``calibration_test``
    for a binary study (at the default operating point); ``cm_*`` and ``calibration_test``
    (top-label, the 15 bins of the test ECE) for more classes.

    Parameters
    ----------
    pred : DataFrame
        ``predictions.parquet`` (``part``, ``label``, ``patient_id``, ``p0 … pK-1``).
    metrics : dict
        ``metrics.json`` (the operating point and the AUC CIs drawn on the ROC).
    seed : int
        Seed of the ROC band's bootstrap.
    """
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
            auc = (metrics.get(part) or {}).get("auc")
            figs[f"roc_{part}"] = plots.plot_roc(
                y, proba[:, 1], groups=g["patient_id"].to_numpy(), n_boot=ROC_BAND_RESAMPLES, seed=seed, label=part,
                operating_threshold=t, auc_ci=Estimate(auc["value"], auc["low"], auc["high"]) if auc else None)
            figs[f"cm_{part}"] = plots.plot_confusion_matrix(y, (proba[:, 1] >= t).astype(int),
                                                             class_names=["negative", "positive"])
            if part == "test":
                figs["pr_test"] = plots.plot_pr(y, proba[:, 1], label=part)
                figs["calibration_test"] = plots.plot_reliability(y, proba[:, 1])
        else:
            figs[f"cm_{part}"] = plots.plot_confusion_matrix(y, proba.argmax(1),
                                                             class_names=[str(k) for k in range(len(pcols))])
            if part == "test":  # top-label: the bins of the test ECE (15, equal width)
                figs["calibration_test"] = plots.plot_reliability(
                    y, proba, n_bins=15, xlabel="Probability of the predicted class", ylabel="Accuracy")
    return figs


def write_evaluation_section(run: Path, pred: pd.DataFrame, metrics: dict, *, seed: int) -> Path:
    """Write the ``evaluate`` section (``run/sections/evaluate/``): the figures of :func:`evaluation_figures`.

    The report places them beside the numbers of ``metrics.json``; its text needs no summary here.
    """
    alt = {"roc": "ROC curve", "cm": "confusion matrix", "pr": "precision-recall curve",
           "calibration": "reliability diagram"}
    figures = {name: {"figure": fig, "alt": f"{alt[name.split('_')[0]]}, {name.split('_')[1]}"}
               for name, fig in evaluation_figures(pred, metrics, seed=seed).items()}
    return write_section(run, "evaluate", title="Evaluation", summary="", figures=figures)
