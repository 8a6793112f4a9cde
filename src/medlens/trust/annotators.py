"""Annotator reliability: agreement, Cohen's and Fleiss' kappa, and cleanlab's CROWDLAB.

``annotations`` is a frame with one column per annotator and one row per image; a
missing label is NaN/NA. The phantom has ``label_expert``, ``label_good`` and
``label_unreliable`` (flip rates 0.02 / 0.10 / 0.40); ``label_true`` is the phantom's
ground truth, which no real study has, so it is never treated as an annotator.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from medlens.errors import DataError

log = logging.getLogger(__name__)
NOT_ANNOTATORS = {"label_true", "label_name"}


def annotator_columns(manifest: pd.DataFrame, names: list[str] | None = None) -> list[str]:
    """The manifest's annotator columns: ``names`` if given (checked), else every integer ``label_*`` column
    except ``label_true`` and ``label_name``."""
    if names is not None:
        missing = [n for n in names if n not in manifest.columns]
        if missing:
            raise DataError(f"trust.annotators: column(s) {missing} not in the manifest; it has "
                            f"{[c for c in manifest.columns if c.startswith('label')]}")
        return list(names)
    return [c for c in manifest.columns if re.fullmatch(r"label_\w+", c) and c not in NOT_ANNOTATORS
            and pd.api.types.is_numeric_dtype(manifest[c])]


def annotator_name(column: str) -> str:
    """``label_unreliable`` -> ``unreliable``."""
    return column.removeprefix("label_")


def _as_float(annotations: pd.DataFrame) -> pd.DataFrame:
    return annotations.apply(lambda c: pd.to_numeric(c, errors="coerce")).astype(float)


def majority_vote(annotations: pd.DataFrame) -> pd.Series:
    """Most frequent label per row over the available annotators; NaN on ties or no labels."""
    a = _as_float(annotations)
    counts = pd.concat({c: (a == c).sum(axis=1) for c in np.unique(a.stack().to_numpy())}, axis=1)
    if counts.empty:
        return pd.Series(np.nan, index=a.index)
    top = counts.max(axis=1)
    winner = counts.idxmax(axis=1).astype(float)
    tie = (counts.eq(top, axis=0).sum(axis=1) > 1) | (top == 0)
    return winner.where(~tie)


def fleiss_kappa(annotations: pd.DataFrame) -> float:
    """Fleiss' kappa over the rows every annotator labelled (nan if fewer than 2 annotators or rows).

    Examples
    --------
    >>> fleiss_kappa(pd.DataFrame({"a": [0, 1, 0, 1], "b": [0, 1, 0, 1]}))
    1.0
    """
    a = _as_float(annotations).dropna()
    if a.shape[1] < 2 or len(a) < 2:
        return float("nan")
    cats = np.unique(a.to_numpy())
    n = np.stack([(a.to_numpy() == c).sum(1) for c in cats], 1).astype(float)
    m = a.shape[1]
    p_j = n.sum(0) / n.sum()
    p_i = ((n * (n - 1)).sum(1)) / (m * (m - 1))
    pe = float((p_j**2).sum())
    return float("nan") if pe == 1 else float((p_i.mean() - pe) / (1 - pe))


def _kappa(a: pd.Series, b: pd.Series) -> tuple[float, float, int]:
    ok = a.notna() & b.notna()
    if ok.sum() < 2:
        return float("nan"), float("nan"), int(ok.sum())
    x, y = a[ok].astype(int), b[ok].astype(int)
    acc = float((x == y).mean())
    kappa = float(cohen_kappa_score(x, y)) if len(set(x) | set(y)) > 1 else float("nan")
    return acc, kappa, int(ok.sum())


def annotator_agreement(annotations: pd.DataFrame, *, expert: str | None = None) -> pd.DataFrame:
    """Per-annotator agreement with the others' consensus and with the expert.

    Parameters
    ----------
    annotations : pandas.DataFrame
        One column per annotator, one row per image, NaN where not labelled.
    expert : str, optional
        Column taken as the reference; its own row gets NaN for the expert columns.

    Returns
    -------
    pandas.DataFrame
        ``annotator``, ``n_labels``, ``agreement_consensus`` and ``kappa_consensus`` (against
        the majority vote of the *other* annotators, ties left out), ``accuracy_vs_expert``
        and ``kappa_vs_expert``.
    """
    a = _as_float(annotations)
    if expert is not None and expert not in a.columns:
        expert = None
    rows = []
    for col in a.columns:
        others = a.drop(columns=col)
        cons = majority_vote(others) if others.shape[1] else pd.Series(np.nan, index=a.index)
        agree, kappa, _ = _kappa(a[col], cons)
        row = {"annotator": annotator_name(col), "column": col, "n_labels": int(a[col].notna().sum()),
               "agreement_consensus": agree, "kappa_consensus": kappa,
               "accuracy_vs_expert": float("nan"), "kappa_vs_expert": float("nan")}
        if expert is not None and col != expert:
            row["accuracy_vs_expert"], row["kappa_vs_expert"], _ = _kappa(a[col], a[expert])
        rows.append(row)
    return pd.DataFrame(rows)


def crowdlab(annotations: pd.DataFrame, pred_probs: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CROWDLAB (cleanlab multiannotator): annotator quality and per-image consensus quality.

    Parameters
    ----------
    annotations : pandas.DataFrame of shape (N, M)
        Labels per annotator (NaN where missing); every row needs at least one label.
    pred_probs : array-like of shape (N, K)
        Out-of-sample probabilities of a model (trained on any of the labels).

    Returns
    -------
    annotators : pandas.DataFrame
        ``column``, ``crowdlab_quality`` (0-1, higher is more reliable), ``crowdlab_agreement``
        (with the CROWDLAB consensus), ``worst_class``.
    images : pandas.DataFrame
        ``consensus_label``, ``consensus_quality``, ``annotator_agreement`` per row.
    """
    from cleanlab.multiannotator import get_label_quality_multiannotator

    a = _as_float(annotations)
    if a.isna().all(axis=1).any():
        raise DataError("crowdlab: some images have no annotator label; drop them first")
    res = get_label_quality_multiannotator(a.reset_index(drop=True), np.asarray(pred_probs, np.float64), verbose=False)
    stats = res["annotator_stats"]
    ann = pd.DataFrame({"column": stats.index.astype(str), "crowdlab_quality": stats["annotator_quality"].to_numpy(float),
                        "crowdlab_agreement": stats["agreement_with_consensus"].to_numpy(float),
                        "worst_class": stats["worst_class"].to_numpy()})
    lq = res["label_quality"]
    images = pd.DataFrame({"consensus_label": lq["consensus_label"].to_numpy(int),
                           "consensus_quality": lq["consensus_quality_score"].to_numpy(float),
                           "annotator_agreement": lq["annotator_agreement"].to_numpy(float)}, index=annotations.index)
    return ann, images


def active_label_scores(annotations: pd.DataFrame, pred_probs: np.ndarray) -> np.ndarray:
    """ActiveLab score per image ``(N,)`` (cleanlab): low means another label is most worth getting."""
    from cleanlab.multiannotator import get_active_learning_scores

    scores, _ = get_active_learning_scores(_as_float(annotations).reset_index(drop=True), np.asarray(pred_probs, np.float64))
    return np.asarray(scores, float)
