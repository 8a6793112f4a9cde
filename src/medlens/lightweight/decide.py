"""Functional core of the lightweight search: the requirement's estimate, the Pareto front, the choice.

The estimate, the front and the choice take validation data or the candidates table only;
:func:`confirmation` reads the confirmatory study's ``metrics.json`` after the choice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medlens.evaluate.summary import binary_summary
from medlens.evaluate.threshold import choose_threshold
from medlens.config.requirement import Requirement


def requirement_estimate(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray, req: Requirement, *,
                         n_boot: int = 2000, seed: int = 0) -> dict:
    """The requirement's metric on validation data, with its 95% CI.

    Parameters
    ----------
    y_true : ndarray of shape (n,)
        0/1 labels.
    y_score : ndarray of shape (n,)
        Probability of the positive class.
    groups : ndarray of shape (n,)
        Patient ids: the interval resamples patients.
    req : Requirement
    n_boot, seed : int
        Bootstrap resamples and seed (:func:`medlens.evaluate.summary.binary_summary`).

    Returns
    -------
    dict
        ``value``, ``low``, ``high``, ``margin`` (``low − at_least``) and ``met``; for a
        sensitivity requirement also the ``threshold`` and the ``specificity`` it keeps.
    """
    t = 0.5 if req.metric == "auc" else choose_threshold(y_true, y_score, method="specificity",
                                                         target=req.at_specificity)
    t = float(np.clip(t, 0.0, np.nextafter(1.0, 2.0)))
    est = binary_summary(y_true, y_score, threshold=t, groups=groups, n_boot=n_boot, seed=seed)
    e = est[req.metric]
    out = {"value": float(e.value), "low": float(e.low), "high": float(e.high),
           "margin": float(e.low) - req.at_least, "met": bool(e.low >= req.at_least)}
    if req.metric == "sensitivity":
        out.update(threshold=t, specificity=float(est["specificity"].value))
    return out


def pareto_front(margin: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Boolean mask of the candidates no other one dominates (higher or equal margin at lower or equal cost).

    Parameters
    ----------
    margin : ndarray of shape (n,)
        Larger is better (the requirement's lower bound minus its target).
    cost : ndarray of shape (n,)
        Smaller is better (latency).
    """
    m, c = np.asarray(margin, float), np.asarray(cost, float)
    better_eq = (m[None, :] >= m[:, None]) & (c[None, :] <= c[:, None])
    strictly = (m[None, :] > m[:, None]) | (c[None, :] < c[:, None])
    return ~(better_eq & strictly).any(axis=1)


def choose(candidates: pd.DataFrame) -> pd.Series | None:
    """The cheapest candidate that meets the requirement on validation, or None.

    Parameters
    ----------
    candidates : DataFrame
        One row per candidate with ``met`` (validation CI lower bound ≥ the requirement),
        ``latency_ms``, ``params`` and ``size_bytes``: the columns :func:`medlens.lightweight.search`
        writes to ``candidates.csv``.

    Returns
    -------
    Series or None
        Lowest latency among those that meet it; ties go to fewer parameters, then the smaller file.
    """
    ok = candidates[candidates["met"].astype(bool)]
    if ok.empty:
        return None
    return ok.sort_values(["latency_ms", "params", "size_bytes"], kind="mergesort").iloc[0]


def confirmation(metrics: dict, req: dict, part: str) -> dict | None:
    """Whether the requirement holds on a held-out part of the confirmatory study.

    Parameters
    ----------
    metrics : dict
        The study's ``metrics.json`` (the threshold was chosen on validation).
    req : dict
        ``choice.json``'s ``requirement``.
    part : str
        ``test`` or ``external``.

    Returns
    -------
    dict or None
        None when the study has no such part. Else ``value``, ``low``, ``high``; ``holds``
        (the point estimate reaches ``at_least`` and, for a sensitivity requirement, the
        specificity at the validation threshold reaches ``at_specificity``), ``ci_holds`` (so
        does the CI's lower bound), ``specificity`` for a sensitivity requirement, and
        ``why``: the words that say what fails ("" when it holds).
    """
    if part not in metrics:
        return None
    e = metrics[part][req["metric"]]
    out = {"part": part, "value": e["value"], "low": e["low"], "high": e["high"]}
    label = "AUC" if req["metric"] == "auc" else req["metric"]
    short = [f"{label} {e['value']:.3f} is below {req['at_least']:.3g}"] if e["value"] < req["at_least"] else []
    if req["metric"] == "sensitivity":
        spec = metrics[part]["specificity"]["value"]
        out["specificity"] = spec
        if spec < req["at_specificity"]:
            short.append(f"specificity at the validation threshold is {spec:.3f}, below {req['at_specificity']:.2f}")
    out.update(holds=not short, ci_holds=not short and e["low"] >= req["at_least"], why="; ".join(short))
    return out
