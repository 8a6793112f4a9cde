"""The study facts of the served model card (``export.json``'s ``card``): aggregates only.

The service runs from the export folder alone, so the export records what the card says
about the study: counts, site names, metrics with their 95% CIs and the operating point.
Never a sample or patient identifier, a path or a manifest row (``metrics.json`` holds
sample ids in places: only the ``value``/``low``/``high`` entries are taken from it).
"""

from __future__ import annotations

import pandas as pd

CI_KEYS = {"value", "low", "high"}


def classifier_card(manifest: pd.DataFrame, splits: dict, metrics: dict, threshold: float | None) -> dict:
    """The card facts of an exported classifier.

    Parameters
    ----------
    manifest : pandas.DataFrame
        The run's ``manifest.parquet``.
    splits : dict
        Its ``splits.json``.
    metrics : dict
        Its ``metrics.json`` (empty before evaluation).
    threshold : float or None
        The exported operating threshold.

    Returns
    -------
    dict
        ``operating_point``, ``training_data`` (development images, patients, sites, class
        counts; held-out set sizes) and ``metrics_95ci`` (test and external: each metric's
        value and CI, with the image and patient counts).
    """
    dev_ids = {s for fold in splits["folds"] for s in fold["train"] + fold["val"]}
    dev = manifest[manifest["sample_id"].isin(dev_ids)]
    data = {"development_images": int(len(dev)), "development_patients": int(dev["patient_id"].nunique()),
            "sites": sorted(map(str, dev["site"].unique())),
            "class_counts": {str(k): int(v) for k, v in dev["label"].value_counts().sort_index().items()},
            "test_images": len(splits["test"]), "external_images": len(splits["external"])}
    ci = {}
    for part in ("test", "external"):
        if part in metrics:
            ci[part] = {k: v for k, v in metrics[part].items() if isinstance(v, dict) and CI_KEYS <= set(v)}
            ci[part]["n_images"] = metrics[part].get("n_images")
            ci[part]["n_patients"] = metrics[part].get("n_patients")
    return {"operating_point": metrics.get("operating_point") or {"threshold": threshold}, "training_data": data,
            "metrics_95ci": ci}


def detector_card(metrics: dict) -> dict:
    """The card facts of an exported detector: its operating point and CPM (with CI) per held-out part.

    ``metrics`` is the run's ``det/metrics.json``.
    """
    return {"operating_point": {"threshold": metrics["threshold"], "rule": metrics.get("threshold_rule")},
            "metrics_95ci": {p: {"cpm": metrics[p]["detector"].get("cpm")} for p in ("test", "external")
                             if p in metrics}}
