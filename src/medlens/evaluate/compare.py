"""Compare two finished runs on the same internal test set (``medlens compare``)."""

from __future__ import annotations

import json
from pathlib import Path

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


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict:
    """DeLong's paired test of the test-set AUCs of two runs, and McNemar at their operating points.

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
    return {"run_a": str(run_a), "run_b": str(run_b), "n_images": int(len(a)), "test": "DeLong paired", **res}
