"""The evaluate stage: fold predictions in the run directory -> ``metrics.json`` / ``metrics.csv``.

- The operating point is chosen on the pooled out-of-fold validation predictions only,
  then applied unchanged to the test and external sets.
- The test and external predictions of the k fold models are averaged (an ensemble);
  each fold's own test AUC is reported too.
- CIs are patient-level (cluster bootstrap) when a patient has several images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.evaluate import (
    apply_temperature,
    auc_score,
    binary_summary,
    brier_score_loss,
    choose_threshold,
    confusion_matrix,
    expected_calibration_error,
    external_difference,
    fit_temperature,
    multiclass_summary,
)


def pooled_predictions(run: Path) -> pd.DataFrame:
    """Out-of-fold validation rows plus fold-averaged test/external rows, with patient ids.

    Written to ``predictions.parquet`` in the run directory; columns ``sample_id, part,
    patient_id, label, p0 … pK-1``.
    """
    folds = sorted(run.glob("fold_*/predictions.parquet"), key=lambda p: int(p.parent.name.split("_")[1]))
    preds = pd.concat([pd.read_parquet(p) for p in folds], ignore_index=True)
    cols = [c for c in preds.columns if c.startswith("p") and c[1:].isdigit()]
    val = preds[preds["part"] == "val"].drop(columns="fold")
    held = preds[preds["part"] != "val"].groupby(["sample_id", "part", "label"], as_index=False)[cols].mean()
    pooled = pd.concat([val, held], ignore_index=True)
    pid = load_manifest(run / "manifest.parquet").set_index("sample_id")["patient_id"]
    pooled.insert(2, "patient_id", pid.loc[pooled["sample_id"]].to_numpy())
    return pooled


def _score(frame: pd.DataFrame) -> np.ndarray:
    cols = [c for c in frame.columns if c.startswith("p") and c[1:].isdigit()]
    proba = frame[cols].to_numpy()
    return proba[:, 1] if proba.shape[1] == 2 else proba


def evaluate_run(run: Path, cfg: StudyConfig) -> dict:
    """Compute every metric with its 95% CI and write ``metrics.json`` and ``metrics.csv``."""
    ev = cfg.evaluate
    pooled = pooled_predictions(run)
    pooled.to_parquet(run / "predictions.parquet", index=False)
    parts = {name: g for name, g in pooled.groupby("part")}
    binary = _score(pooled).ndim == 1
    out: dict = {"task": "binary" if binary else "multiclass", "n_bootstrap": ev.n_bootstrap}
    val = parts["val"]
    if binary:
        out["operating_point"] = {
            "method": ev.operating_point,
            "target_sensitivity": ev.target_sensitivity if ev.operating_point == "sensitivity" else None,
            "threshold": choose_threshold(val["label"].to_numpy(), _score(val), method=ev.operating_point,
                                          target=ev.target_sensitivity),
            "chosen_on": "pooled out-of-fold validation predictions",
        }
    for name in ("val", "test", "external"):
        if name not in parts:
            continue
        g = parts[name]
        y, s, groups = g["label"].to_numpy(), _score(g), g["patient_id"].to_numpy()
        if binary:
            t = out["operating_point"]["threshold"]
            est = binary_summary(y, s, threshold=t, groups=groups, n_boot=ev.n_bootstrap, seed=cfg.seed)
            cm = confusion_matrix(y, (s >= t).astype(int))
        else:
            est = multiclass_summary(y, s, groups=groups, n_boot=ev.n_bootstrap, seed=cfg.seed)
            cm = confusion_matrix(y, s.argmax(1), n_classes=s.shape[1])
        out[name] = {k: v.to_dict() for k, v in est.items()}
        out[name]["n_images"] = int(len(g))
        out[name]["n_patients"] = int(g["patient_id"].nunique())
        out[name]["confusion_matrix"] = cm.tolist()
        if binary:
            out[name]["calibration"] = calibration(y, s)
    if binary and ev.temperature_scaling:
        temp = fit_temperature(val["label"].to_numpy(), _score(val), kind="probabilities")
        out["temperature"] = {"value": temp, "fitted_on": "pooled out-of-fold validation predictions"}
        for name in ("test", "external"):
            if name in parts:
                g = parts[name]
                scaled = apply_temperature(_score(g), temp, kind="probabilities")
                out[name]["calibration_after_temperature"] = calibration(g["label"].to_numpy(), scaled)
    if "external" in parts and "test" in parts:
        a, b = parts["test"], parts["external"]
        out["external_minus_test_auc"] = external_difference(
            a["label"].to_numpy(), _score(a), b["label"].to_numpy(), _score(b), metric="auc",
            groups_internal=a["patient_id"].to_numpy(), groups_external=b["patient_id"].to_numpy(),
            n_boot=ev.n_bootstrap, seed=cfg.seed).to_dict()
    out["folds"] = _per_fold(run)
    (run / "metrics.json").write_text(json.dumps(_finite(out), indent=1, sort_keys=True, allow_nan=False))
    metrics_table(out).to_csv(run / "metrics.csv", index=False)
    return out


def calibration(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Brier score and expected calibration error (15 equal-width and 15 equal-mass bins)."""
    return {"brier": brier_score_loss(y, s),
            "ece": expected_calibration_error(y, s, n_bins=15, strategy="uniform"),
            "ece_adaptive": expected_calibration_error(y, s, n_bins=15, strategy="quantile")}


def _finite(obj):
    """Undefined values (nan) as JSON null, so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and np.isnan(obj) else obj


def _per_fold(run: Path) -> list[dict]:
    rows = []
    for p in sorted(run.glob("fold_*/predictions.parquet"), key=lambda p: int(p.parent.name.split("_")[1])):
        preds = pd.read_parquet(p)
        row = {"fold": int(preds["fold"].iloc[0])}
        row.update({f"{part}_{k}": None for part in ("val", "test", "external") for k in ("auc", "n")})
        for part, g in preds.groupby("part"):
            y = g["label"].to_numpy()
            row[f"{part}_auc"] = float(auc_score(y, _score(g))) if len(np.unique(y)) > 1 else None
            row[f"{part}_n"] = int(len(g))
        rows.append(row)
    return rows


def metrics_table(metrics: dict) -> pd.DataFrame:
    """Flat table (set, metric, value, low, high) of a ``metrics.json`` mapping."""
    rows = []
    for part in ("val", "test", "external"):
        for name, v in metrics.get(part, {}).items():
            if isinstance(v, dict) and "value" in v:
                rows.append({"set": part, "metric": name, **v})
    return pd.DataFrame(rows)
