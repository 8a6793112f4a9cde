"""Subgroup analysis of the held-out images: per site and per declared metadata column.

For each level of each column: sensitivity and specificity at the study's operating
point with patient-level bootstrap 95% CIs, AUC where both classes are present, a
chi-square test of heterogeneity of sensitivity (and of specificity) across levels, and
the levels whose CI lies wholly below the overall point estimate, named in the report.
Age is binned (< 40, 40-59, 60-74, >= 75); other numeric columns with many values into
tertiles.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from medlens.data.pseudonyms import age_levels
from medlens.evaluate.ci import bootstrap_distribution, percentile_interval
from medlens.evaluate.metrics import sensitivity_score, specificity_score

def _levels(values: pd.Series, name: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().mean() > 0.9 and name.lower() == "age":  # a source that is not pseudonymised
        return age_levels(values).astype(str)
    if numeric.notna().mean() > 0.9 and numeric.nunique() > 8:
        cuts = np.unique(np.nanquantile(numeric, [0, 1 / 3, 2 / 3, 1]))
        return pd.cut(numeric, cuts, include_lowest=True, duplicates="drop").astype(str)
    return values.astype(str)


def _rates(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    """Sensitivity and specificity with patient-level bootstrap 95% CIs (the project's own bootstrap).

    A metric whose class is absent is None.
    """
    metrics = {"sensitivity": sensitivity_score, "specificity": specificity_score}
    present = {"sensitivity": bool((y == 1).any()), "specificity": bool((y == 0).any())}
    boot = {k: (fn, pred) for k, fn in metrics.items() if present[k]}
    reps = bootstrap_distribution(boot, y, groups=groups, n_resamples=n_boot, seed=seed) if boot else {}
    out: dict = {}
    for key, fn in metrics.items():
        if not present[key]:
            out[key] = None
            continue
        est = percentile_interval(reps[key], fn(y, pred), name=key)
        out[key] = {"value": float(est.value), "low": float(est.low), "high": float(est.high),
                    "n": int((y == (1 if key == "sensitivity" else 0)).sum())}
    return out


def _heterogeneity(table: list[list[int]]) -> float | None:
    rows = [r for r in table if sum(r) > 0]
    if len(rows) < 2 or min(sum(c) for c in zip(*rows)) == 0:
        return None
    return float(chi2_contingency(np.array(rows))[1])


def subgroup_analysis(frame: pd.DataFrame, columns: list[str], threshold: float, *, n_boot: int, seed: int) -> dict:
    """Subgroups of ``frame`` (held-out rows: ``label``, ``score``, ``patient_id`` and the ``columns``).

    Returns
    -------
    dict
        ``overall`` (sensitivity, specificity), ``n_images``, and per column a list of
        levels (``level``, ``n_images``, ``n_patients``, ``sensitivity``, ``specificity``,
        ``auc``, ``below_overall``) with ``p_sensitivity`` / ``p_specificity`` (chi-square
        heterogeneity; None when undefined).
    """
    from sklearn.metrics import roc_auc_score

    y = frame["label"].to_numpy(int)
    pred = (frame["score"].to_numpy(float) >= threshold).astype(int)
    groups = frame["patient_id"].astype(str).to_numpy()
    overall = _rates(y, pred, groups, n_boot, seed)
    out: dict = {"overall": overall, "n_images": int(len(frame)), "columns": {}}
    for col in columns:
        if col not in frame.columns:
            continue
        levels = _levels(frame[col], col)
        rows, sens_table, spec_table = [], [], []
        for level in sorted(levels.dropna().unique()):
            m = (levels == level).to_numpy()
            yl, pl, gl = y[m], pred[m], groups[m]
            row = {"level": str(level), "n_images": int(m.sum()), "n_patients": int(len(set(gl))),
                   **_rates(yl, pl, gl, n_boot, seed), "auc": None, "below_overall": []}
            if min((yl == 1).sum(), (yl == 0).sum()) >= 2:
                row["auc"] = float(roc_auc_score(yl, frame["score"].to_numpy(float)[m]))
            for metric in ("sensitivity", "specificity"):
                est, ref = row[metric], overall[metric]
                if est is not None and ref is not None and est["high"] < ref["value"]:
                    row["below_overall"].append(metric)
            sens_table.append([int(((pl == 1) & (yl == 1)).sum()), int(((pl == 0) & (yl == 1)).sum())])
            spec_table.append([int(((pl == 0) & (yl == 0)).sum()), int(((pl == 1) & (yl == 0)).sum())])
            rows.append(row)
        if len(rows) >= 2:
            out["columns"][col] = {"levels": rows, "p_sensitivity": _heterogeneity(sens_table),
                                   "p_specificity": _heterogeneity(spec_table)}
    return out
