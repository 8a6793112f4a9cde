"""The evaluate stage: fold predictions in the run directory -> ``metrics.json`` / ``metrics.csv``.

- Each fold model is calibrated on its own validation patients (Platt scaling by default),
  so the out-of-fold predictions and the ensemble share one probability scale.
- The operating points are chosen on the pooled, calibrated out-of-fold validation
  predictions only, then applied unchanged to the test and external sets, which are
  scored by the average of the calibrated fold models (the ensemble).
- CIs are patient-level (cluster bootstrap) when a patient has several images.
- With ``evaluate.repeats`` > 1 the points are chosen on the out-of-fold predictions of every
  repeat, and each headline figure gets its between-repeat spread (:func:`repeat_spread`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.errors import StageInputMissing
from medlens.evaluate import (
    auc_score,
    binary_summary,
    brier_score_loss,
    choose_threshold,
    confusion_matrix,
    expected_calibration_error,
    external_difference,
    multiclass_summary,
)
from medlens.evaluate.calibration import calibrate_proba, fit_calibration

OPERATING_POINT = "operating_point.json"
"""The default operating point of a run, beside ``metrics.json`` (read by :func:`medlens.inference.operating_threshold`)."""


def fold_frames(run: Path) -> list[pd.DataFrame]:
    """Every ``fold_k/predictions.parquet`` of a run (or of one repeat's folder ``run/repeat_r``), in fold order."""
    folds = sorted(run.glob("fold_*/predictions.parquet"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not folds:
        raise StageInputMissing(f"{run}/fold_*/predictions.parquet not found; train the folds first (`medlens run`)")
    return [pd.read_parquet(p) for p in folds]


def proba_columns(frame: pd.DataFrame) -> list[str]:
    """The class-probability columns ``p0 … pK-1`` of a predictions frame."""
    return [c for c in frame.columns if c.startswith("p") and c[1:].isdigit()]


def calibrate_folds(frames: list[pd.DataFrame], method: str) -> tuple[list[pd.DataFrame], list[dict]]:
    """Fit each fold's calibration on its own validation rows and apply it to all its rows.

    Parameters
    ----------
    frames : list of DataFrame
        ``fold_k/predictions.parquet`` frames (``part``, ``label``, ``p0..pK-1``).
    method : {"platt", "temperature", "none"}
        Platt scaling (binary; a temperature and class intercepts for more classes) or a temperature.

    Returns
    -------
    (calibrated frames, parameters)
        One parameter mapping per fold (:func:`medlens.evaluate.calibration.calibrate_proba`).
    """
    out, params = [], []
    for f in frames:
        cols = proba_columns(f)
        val = f[f["part"] == "val"]
        prm = fit_calibration(val["label"].to_numpy(int), val[cols].to_numpy(float), method)
        g = f.copy()
        g[cols] = calibrate_proba(f[cols].to_numpy(float), prm)
        out.append(g)
        params.append({"fold": int(f["fold"].iloc[0]), **prm})
    return out, params


def pooled_predictions(run: Path, frames: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """Out-of-fold validation rows plus fold-averaged test/external rows, with patient ids.

    Written to ``predictions.parquet`` in the run directory; columns ``sample_id, part,
    patient_id, label, p0 … pK-1``. ``frames`` are the (calibrated) fold predictions;
    default: the raw ones of the run.
    """
    preds = pd.concat(frames if frames is not None else fold_frames(run), ignore_index=True)
    cols = proba_columns(preds)
    val = preds[preds["part"] == "val"].drop(columns="fold")
    held = preds[preds["part"] != "val"].groupby(["sample_id", "part", "label"], as_index=False, sort=False)[cols].mean()
    pooled = pd.concat([val, held], ignore_index=True)
    pid = load_manifest(run / "manifest.parquet").set_index("sample_id")["patient_id"]
    pooled.insert(2, "patient_id", pid.loc[pooled["sample_id"]].to_numpy())
    return pooled


def _score(frame: pd.DataFrame) -> np.ndarray:
    proba = frame[proba_columns(frame)].to_numpy()
    return proba[:, 1] if proba.shape[1] == 2 else proba


def _point(ev, name: str, y: np.ndarray, s: np.ndarray) -> dict:
    method, target = {"youden": ("youden", None), "sensitivity": ("sensitivity", ev.target_sensitivity),
                      "specificity": ("specificity", ev.target_specificity)}[name]
    t = choose_threshold(y, s, method=method, target=target if target is not None else 0.95)
    # probabilities lie in [0, 1]: -inf (all positive) is 0, +inf (none positive) just above 1; JSON stays finite
    t = 0.0 if t == -np.inf else (float(np.nextafter(1.0, 2.0)) if t == np.inf else t)
    label = "Youden" if target is None else f"{method} {target:.2f}"
    return {"name": label, "method": method, "target": target, "threshold": t,
            "chosen_on": "pooled out-of-fold validation predictions (calibrated per fold)"}


def _at(y, s, groups, t, ev, seed) -> dict:
    est = binary_summary(y, s, threshold=t, groups=groups, n_boot=ev.n_bootstrap, seed=seed)
    cm = confusion_matrix(y, (s >= t).astype(int))
    return {"sensitivity": est["sensitivity"].to_dict(), "specificity": est["specificity"].to_dict(),
            "ppv": est["ppv"].to_dict(), "npv": est["npv"].to_dict(), "confusion_matrix": cm.tolist()}


def transfer_check(val: pd.DataFrame, held: pd.DataFrame, threshold: float, metric: str, *, n_boot: int,
                   seed: int) -> dict:
    """Does a validation-chosen threshold give the same ``metric`` on a held-out set?

    A two-sample test of the difference ``held - val`` of sensitivity (or specificity) at
    ``threshold``: each set is bootstrapped on its own, by patient, and the 95% percentile
    interval of the replicate differences is compared with 0
    (:func:`medlens.evaluate.external_difference`). Both sets' sampling errors count, unlike
    a comparison of the held-out point estimate with the validation interval.

    Parameters
    ----------
    val, held : DataFrame
        Predictions with ``label``, ``patient_id`` and the score columns.
    threshold : float
    metric : {'sensitivity', 'specificity'}
    n_boot, seed : int

    Returns
    -------
    dict
        ``value`` (held - val), ``low``, ``high`` and ``shifted`` (the interval excludes 0).
    """
    est = external_difference(val["label"].to_numpy(), _score(val), held["label"].to_numpy(), _score(held),
                              metric=metric, threshold=threshold, groups_internal=val["patient_id"].to_numpy(),
                              groups_external=held["patient_id"].to_numpy(), n_boot=n_boot, seed=seed).to_dict()
    return {"metric": metric, "value": est["value"], "low": est["low"], "high": est["high"],
            "shifted": bool(est["high"] < 0 or est["low"] > 0)}


def _failures(points: list[dict], default: str) -> list[str]:
    """Plain-language warnings where an operating point does not hold on a held-out set."""
    out = []
    for op in points:
        for part in ("test", "external"):
            if part not in op:
                continue
            se, sp = op[part]["sensitivity"]["value"], op[part]["specificity"]["value"]
            where = "the internal test set" if part == "test" else "the external site"
            tag = " (the default)" if op["name"] == default else ""
            shift = op[part]["transfer"]
            if se == 0:
                out.append(f"At the {op['name']} operating point{tag} the model detects no positive case on {where} "
                           f"(sensitivity 0): it must not be used there as it stands.")
            elif shift["shifted"]:
                m = shift["metric"]
                held, val = op[part][m]["value"], op["val"][m]["value"]
                out.append(f"At the {op['name']} operating point{tag} {m} on {where} is {held:.2f} against "
                           f"{val:.2f} on validation (sensitivity {se:.2f}, specificity {sp:.2f}); the difference's "
                           f"patient-level 95% CI {shift['low']:+.2f} to {shift['high']:+.2f} excludes 0: the "
                           f"threshold does not transfer to {where}.")
    return out


def local_patients(patient_id: np.ndarray, label: np.ndarray, fraction: float,
                   rng: np.random.Generator) -> np.ndarray | None:
    """Boolean mask of the images of a local acceptance set: ``fraction`` of the patients of each class.

    A patient's class is whether any of its images is positive. None when a class has fewer
    than 2 patients to draw.
    """
    pat = pd.Series(np.asarray(label)).groupby(np.asarray(patient_id)).max()
    local: list = []
    for cls in (0, 1):
        ids = np.sort(pat.index[pat.to_numpy() == cls].to_numpy())
        n = int(np.floor(fraction * len(ids)))
        if n < 2:
            return None
        local += list(rng.choice(ids, n, replace=False))
    return np.isin(patient_id, local)


def new_site_procedure(external: pd.DataFrame, ev, seed: int) -> dict | None:
    """Adopt the model at a new site with a small labelled local acceptance set.

    The procedure (documented in docs/evaluation.md, "A new site"): draw ``ev.local_fraction`` of the
    new site's patients, stratified by whether a patient has a positive image; choose the
    threshold on them by ``ev.new_site_rule`` (default Youden: with a few dozen local images
    a target-sensitivity threshold rests on the one or two lowest-scoring positives; on
    the demo it gave sensitivity 0.96 at specificity 0.35 on the rest of the site); report
    sensitivity and specificity, with patient-level 95% CIs, on the remaining patients of
    the site only. The OOD gate is not refitted on the local set (not built yet).

    Returns
    -------
    dict or None
        ``local_patients``, ``local_sample_ids``, ``threshold`` and the metrics on the
        rest; None when the site has too few patients of either class.
    """
    is_local = local_patients(external["patient_id"].to_numpy(), external["label"].to_numpy(), ev.local_fraction,
                              np.random.default_rng(seed))
    if is_local is None:
        return None
    loc, rest = external[is_local], external[~is_local]
    y_l, s_l = loc["label"].to_numpy(), _score(loc)
    if len(np.unique(y_l)) < 2 or len(np.unique(rest["label"])) < 2:
        return None
    point = _point(ev, ev.new_site_rule, y_l, s_l)
    t = point["threshold"]
    res = _at(rest["label"].to_numpy(), _score(rest), rest["patient_id"].to_numpy(), t, ev, seed)
    return {"local_fraction": ev.local_fraction, "local_patients": int(loc["patient_id"].nunique()), "local_images": int(is_local.sum()),
            "rest_patients": int(rest["patient_id"].nunique()), "rest_images": int(len(rest)),
            "rule": point["name"], "threshold": t, "rest": res,
            "local_sample_ids": loc["sample_id"].tolist()}


def evaluate_run(run: Path, cfg: StudyConfig) -> dict:
    """Calibrate the folds, pool the predictions, and compute every metric with its 95% CI.

    Writes ``fold_k/calibration.json``, ``predictions.parquet``, ``metrics.json``,
    ``metrics.csv`` and ``operating_point.json`` (the default point alone, which the later
    stages use: a change in a confidence interval does not re-run them). The default operating point (``evaluate.operating_point``) and the
    other named points are chosen on the pooled out-of-fold validation predictions only.
    """
    ev = cfg.evaluate
    frames, cal = calibrate_folds(fold_frames(run), ev.calibration)
    for prm in cal:
        (run / f"fold_{prm['fold']}" / "calibration.json").write_text(json.dumps(prm, indent=1))
    pooled = pooled_predictions(run, frames)
    parts = {name: g for name, g in pooled.groupby("part")}
    binary = _score(pooled).ndim == 1
    out: dict = {"task": "binary" if binary else "multiclass", "n_bootstrap": ev.n_bootstrap,
                 "calibration_method": ev.calibration, "fold_calibration": cal, "warnings": []}
    # repeat 0 is this run's folds; further repeats (the repeats stage) only measure training variance
    repeated = [pooled] + [pooled_predictions(run, calibrate_folds(fold_frames(run / f"repeat_{r}"), ev.calibration)[0])
                           for r in range(1, ev.repeats)]
    # the operating points are chosen on the out-of-fold validation predictions of every repeat
    val = pd.concat([p[p["part"] == "val"] for p in repeated], ignore_index=True)
    if binary:
        out["operating_point"] = _point(ev, ev.operating_point, val["label"].to_numpy(), _score(val))
        if ev.repeats > 1:
            out["operating_point"]["chosen_on"] = (f"pooled out-of-fold validation predictions of all {ev.repeats} "
                                                   "repeats (calibrated per fold)")
    for name in ("val", "test", "external"):
        if name not in parts:
            continue
        g = parts[name]  # validation figures: repeat 0's out-of-fold predictions (predictions.parquet)
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
        out[name]["calibration"] = calibration(y, s) if binary else calibration_multiclass(y, s)
        if binary and name == "test" and ev.baselines:
            # the published tables' rule (arg-max: p1 > 0.5), so the comparison reads like for like
            half = binary_summary(y, s, threshold=float(np.nextafter(0.5, 1.0)), groups=groups,
                                  n_boot=ev.n_bootstrap, seed=cfg.seed)
            out["test_accuracy_argmax"] = half["accuracy"].to_dict()
    if binary:
        points = []
        for name in ("youden", "sensitivity", "specificity"):
            op = _point(ev, name, val["label"].to_numpy(), _score(val))
            for part, g in {**parts, "val": val}.items():
                op[part] = _at(g["label"].to_numpy(), _score(g), g["patient_id"].to_numpy(), op["threshold"], ev,
                               cfg.seed)
                if part != "val":  # the point's own target: specificity for a specificity point
                    metric = "specificity" if op["method"] == "specificity" else "sensitivity"
                    op[part]["transfer"] = transfer_check(val, g, op["threshold"], metric, n_boot=ev.n_bootstrap,
                                                          seed=cfg.seed)
            points.append(op)
        out["operating_points"] = points
        default = next(op for op in points if op["name"] == out["operating_point"]["name"])
        # whether the default threshold holds on each held-out set (the new-site procedure says so in words)
        out["operating_point"]["transfers"] = {p: not default[p]["transfer"]["shifted"]
                                               for p in ("test", "external") if p in default}
        out["warnings"] = _failures(points, out["operating_point"]["name"])
        held = pd.concat([parts[p] for p in ("test", "external") if p in parts])
        if len(held) and ev.subgroups:
            from medlens.evaluate.subgroups import subgroup_analysis

            meta = load_manifest(run / "manifest.parquet").set_index("sample_id")
            cols = [c for c in ev.subgroups if c in meta.columns]
            frame = held.drop(columns=[c for c in cols if c in held.columns]).join(meta[cols], on="sample_id")
            frame = frame.assign(score=_score(held))
            out["subgroups"] = subgroup_analysis(frame, cols, out["operating_point"]["threshold"],
                                                 n_boot=ev.n_bootstrap, seed=cfg.seed)
            out["warnings"] += [f"Subgroup {col} = {row['level']}: {' and '.join(row['below_overall'])} 95% CI lies "
                                "wholly below the overall estimate on the held-out images."
                                for col, info in out["subgroups"]["columns"].items() for row in info["levels"]
                                if row["below_overall"]]
        if "external" in parts:
            site = new_site_procedure(parts["external"], ev, cfg.seed)
            if site is not None:
                out["new_site"] = site
    if "external" in parts and "test" in parts:
        a, b = parts["test"], parts["external"]
        out["external_minus_test_auc"] = external_difference(
            a["label"].to_numpy(), _score(a), b["label"].to_numpy(), _score(b), metric="auc",
            groups_internal=a["patient_id"].to_numpy(), groups_external=b["patient_id"].to_numpy(),
            n_boot=ev.n_bootstrap, seed=cfg.seed).to_dict()
    if ev.repeats > 1:
        out["repeats"] = repeat_spread(out, repeated, binary, ev, cfg.seed)
        out["warnings"] += out["repeats"]["notes"]
    out["folds"] = _per_fold(frames)
    pooled.to_parquet(run / "predictions.parquet", index=False)
    (run / "metrics.json").write_text(json.dumps(_finite(out), indent=1, sort_keys=True, allow_nan=False))
    (run / OPERATING_POINT).write_text(json.dumps(_finite(out.get("operating_point") or {}), indent=1, sort_keys=True))
    metrics_table(out).to_csv(run / "metrics.csv", index=False)
    from medlens.evaluate.figures import write_evaluation_section

    write_evaluation_section(run, pooled, _finite(out), seed=cfg.seed)  # the report's ROC, confusion, calibration
    return out


def _headline(y: np.ndarray, s: np.ndarray, t: float | None) -> dict[str, float]:
    """AUC, and with a threshold ``t`` (binary) sensitivity, specificity and ECE, of one set's predictions."""
    if t is None:
        return {"auc": float(auc_score(y, s))}
    hit = s >= t
    return {"auc": float(auc_score(y, s)), "sensitivity": float(hit[y == 1].mean()),
            "specificity": float((~hit[y == 0]).mean()), "ece": float(expected_calibration_error(y, s))}


def _ece_estimate(g: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Test or external ECE with its patient-level bootstrap CI (``{value, low, high}``)."""
    from medlens.evaluate.ci import bootstrap_distribution, percentile_interval

    y, s = g["label"].to_numpy(int), _score(g)
    reps = bootstrap_distribution({"ece": (expected_calibration_error, s)}, y, groups=g["patient_id"].to_numpy(),
                                  n_resamples=n_boot, seed=seed)["ece"]
    return percentile_interval(reps, float(expected_calibration_error(y, s)), name="ece").to_dict()


def repeat_spread(out: dict, repeated: list[pd.DataFrame], binary: bool, ev, seed: int) -> dict:
    """Each headline figure's between-repeat spread beside its bootstrap CI, and the interval of both.

    Parameters
    ----------
    out : dict
        The metrics so far: ``out[part][figure]`` holds repeat 0's ensemble estimate with its
        patient-bootstrap CI; ``out["operating_point"]`` the default threshold (binary).
    repeated : list of DataFrame
        Each repeat's pooled, calibrated predictions (repeat 0 first).
    binary : bool
    ev : EvaluateConfig
    seed : int

    Returns
    -------
    dict
        ``per_repeat`` (each repeat's figures on test and external at the one default
        threshold), ``figures[part][figure]`` with ``value``, ``low``, ``high`` (bootstrap),
        ``sd`` (between repeats, ddof 1), ``min``, ``max`` and the combined interval
        ``total_low``, ``total_high``: each side of the bootstrap CI widened in quadrature
        by 1.96·SD (``value - sqrt((value - low)² + (1.96·SD)²)``, and so above), which
        takes sampling and training variance as independent and keeps the bootstrap
        interval's asymmetry, clipped to [0, 1]; and ``notes``: a sentence for every figure
        whose SD exceeds its bootstrap half-width.
    """
    t = out["operating_point"]["threshold"] if binary else None
    per = []
    for r, pooled in enumerate(repeated):
        row: dict = {"repeat": r}
        for part, g in pooled.groupby("part"):
            if part != "val":
                row[part] = _headline(g["label"].to_numpy(int), _score(g), t)
        per.append(row)
    figures: dict = {}
    notes = []
    names = {"test": "the internal test set", "external": "the external site"}
    for part in ("test", "external"):
        if part not in per[0]:
            continue
        figures[part] = {}
        for fig in per[0][part]:
            if fig == "ece":
                est = _ece_estimate(repeated[0][repeated[0]["part"] == part], ev.n_bootstrap, seed)
            else:
                est = out[part][fig]
            vals = np.array([row[part][fig] for row in per])
            sd = float(vals.std(ddof=1))
            half = (est["high"] - est["low"]) / 2
            v = est["value"]
            figures[part][fig] = {"value": v, "low": est["low"], "high": est["high"], "sd": sd,
                                  "min": float(vals.min()), "max": float(vals.max()),
                                  "total_low": float(max(0.0, v - np.hypot(v - est["low"], 1.96 * sd))),
                                  "total_high": float(min(1.0, v + np.hypot(est["high"] - v, 1.96 * sd)))}
            if sd > half:
                label = {"auc": "AUC", "ece": "ECE"}.get(fig, fig.capitalize())
                notes.append(f"{label} on {names[part]} varies more between the {len(per)} training repeats "
                             f"(SD {sd:.3f}, range {vals.min():.2f}–{vals.max():.2f}) than its sampling error "
                             f"(95% CI half-width {half:.3f}): one training run's figure would not reproduce within "
                             f"its CI; read the combined interval {figures[part][fig]['total_low']:.2f}–"
                             f"{figures[part][fig]['total_high']:.2f}.")
    return {"n": len(per), "per_repeat": per, "figures": figures, "notes": notes,
            "threshold_chosen_on": f"pooled out-of-fold validation predictions of all {len(per)} repeats"}


def calibration_multiclass(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Top-label expected calibration error (15 equal-width bins) of class probabilities."""
    return {"ece": expected_calibration_error(y, proba, n_bins=15, strategy="uniform")}


def calibration(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Brier score and expected calibration error (15 equal-width and 15 equal-mass bins)."""
    return {"brier": brier_score_loss(y, s),
            "ece": expected_calibration_error(y, s, n_bins=15, strategy="uniform"),
            "ece_adaptive": expected_calibration_error(y, s, n_bins=15, strategy="quantile")}


def _finite(obj):
    """Undefined values (nan, and the infinite thresholds of a degenerate ROC) as JSON null: strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, (float, np.floating)) and not np.isfinite(obj) else obj


def _per_fold(frames: list[pd.DataFrame]) -> list[dict]:
    rows = []
    for preds in frames:
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
