"""Compare two finished runs on the same internal test set (``medlens compare``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.errors import DataError, StageInputMissing
from medlens.evaluate.summary import compare_binary


def _test_predictions(run: Path) -> tuple[pd.DataFrame, float | None]:
    pred_path, metrics_path = run / "predictions.parquet", run / "metrics.json"
    if not pred_path.is_file() or not metrics_path.is_file():
        raise StageInputMissing(f"{run}: no predictions.parquet/metrics.json; finish it with `medlens run` first")
    pred = pd.read_parquet(pred_path)
    test = pred[pred["part"] == "test"].set_index("sample_id").sort_index()
    op = json.loads(metrics_path.read_text()).get("operating_point")
    return test, (op or {}).get("threshold")


def corrected_resampled_ttest(a, b, *, n_train: int, n_test: int) -> dict:
    """Nadeau & Bengio's (2003) corrected resampled t-test of paired per-repeat scores.

    The repeats' training sets overlap, so their scores are correlated and the plain paired
    t-test's variance ``var(d) / J`` is too small; the correction replaces ``1 / J`` by
    ``1 / J + n_test / n_train``.

    Parameters
    ----------
    a, b : array-like of shape (J,)
        The two configurations' scores (e.g. test AUC), repeat by repeat.
    n_train, n_test : int
        Images a model is trained on, and images it is scored on.

    Returns
    -------
    dict
        ``mean_difference`` (b - a), ``t``, ``df`` (J - 1), ``p`` (two-sided), ``repeats``.

    Examples
    --------
    >>> r = corrected_resampled_ttest([0.90, 0.92, 0.91], [0.93, 0.94, 0.95], n_train=400, n_test=100)
    >>> round(r["t"], 3), r["df"]
    (3.928, 2)
    """
    from scipy.stats import t as student

    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    j = len(d)
    if j < 2 or len(np.asarray(a)) != j:
        raise DataError(f"the corrected resampled t-test needs two equal-length score lists of at least 2 repeats, "
                        f"got {len(np.asarray(a))} and {j}")
    var = d.var(ddof=1)
    mean = float(d.mean())
    t = mean / np.sqrt((1 / j + n_test / n_train) * var) if var > 0 else (np.inf * np.sign(mean) if mean else 0.0)
    p = float(2 * student.sf(abs(t), j - 1))
    return {"mean_difference": mean, "t": float(t), "df": j - 1, "p": p, "repeats": j}


def _repeat_aucs(run: Path) -> tuple[list[float], float, int] | None:
    """Per-repeat test AUCs, training and test set sizes of a run with ``evaluate.repeats`` ≥ 3; else None."""
    rep = json.loads((run / "metrics.json").read_text()).get("repeats")
    if not rep or rep["n"] < 3:
        return None
    splits = json.loads((run / "splits.json").read_text())
    n_train = float(np.mean([len(f["train"]) for f in splits["folds"]]))
    return [r["test"]["auc"] for r in rep["per_repeat"]], n_train, len(splits["test"])


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """DeLong's paired test of the test-set AUCs of two runs, and McNemar at their operating points.

    When both runs repeated their cross-validation at least 3 times (``evaluate.repeats``),
    also the corrected resampled t-test (:func:`corrected_resampled_ttest`) on their
    per-repeat test AUCs, which counts training variance as DeLong on one pair cannot.

    Both runs must have predicted exactly the same test images with the same labels
    (the paired test compares two correlated ROC curves on the same cases); otherwise a
    :class:`DataError` explains the mismatch.
    """
    run_a, run_b = Path(run_a), Path(run_b)
    (a, ta), (b, tb) = _test_predictions(run_a), _test_predictions(run_b)
    if not a.index.equals(b.index):
        common = len(a.index.intersection(b.index))
        raise DataError(f"{run_a} and {run_b} have different test sets ({len(a)} and {len(b)} images, {common} in "
                        "common); a paired comparison needs the same test images — use the same data and split seed")
    if not (a["label"] == b["label"]).all():
        raise DataError(f"{run_a} and {run_b} label the same test images differently; cannot compare")
    if "p2" in a.columns or "p2" in b.columns:
        raise DataError("medlens compare supports binary tasks only for now (DeLong on the positive-class score)")
    res = compare_binary(a["label"].to_numpy(), a["p1"].to_numpy(), b["p1"].to_numpy(), paired=True,
                         threshold_a=ta, threshold_b=tb)
    out = {"run_a": str(run_a), "run_b": str(run_b), "n_images": int(len(a)), "test": "DeLong paired", **res}
    ra, rb = _repeat_aucs(run_a), _repeat_aucs(run_b)
    if ra is not None and rb is not None:  # training variance too: repeat r of both runs shares its folds
        if len(ra[0]) != len(rb[0]):
            raise DataError(f"{run_a} has {len(ra[0])} repeats and {run_b} {len(rb[0])}; the corrected t-test pairs "
                            "repeat by repeat: give both the same evaluate.repeats")
        out["corrected_ttest"] = corrected_resampled_ttest(ra[0], rb[0], n_train=ra[1], n_test=ra[2])
    return out
