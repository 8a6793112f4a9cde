"""Fast tests of the trust functions on simulated arrays (no model training)."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

from medlens.errors import DataError
from medlens.trust import annotators, labels, selective, uncertainty


@pytest.mark.parametrize("module", [uncertainty, selective, annotators])
def test_docstring_examples(module):
    res = doctest.testmod(module, extraglobs={"np": np, "pd": pd}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0


def test_decompose_sums_and_bounds():
    rng = np.random.default_rng(0)
    s = rng.dirichlet([1, 1, 1], size=(20, 50))
    d = uncertainty.decompose(s)
    assert np.allclose(d["total"], d["aleatoric"] + d["epistemic"], atol=1e-9)
    assert (d["epistemic"] >= 0).all() and (d["total"] <= np.log(3) + 1e-9).all()
    same = np.repeat(s[:1], 20, 0)  # identical samples: no epistemic part
    assert np.allclose(uncertainty.decompose(same)["epistemic"], 0, atol=1e-9)
    with pytest.raises(DataError, match="3 dimensions"):
        uncertainty.decompose(s[0])


def test_energy_higher_for_flat_logits():
    e = uncertainty.energy_score(np.array([[10.0, 0.0], [0.1, 0.0]]))
    assert e[0] < e[1]


def _noisy(rng, n=600, flip=0.3):
    true = rng.integers(0, 2, n)
    logit = 3.0 * (2 * true - 1) + rng.normal(0, 1.5, n) + 1.0  # biased towards class 1
    p1 = 1 / (1 + np.exp(-logit))
    given = np.where(rng.uniform(size=n) < flip, 1 - true, true)
    return true, given, np.stack([1 - p1, p1], 1)


def test_label_issue_ranking_finds_flips():
    true, given, proba = _noisy(np.random.default_rng(2))
    flipped = given != true
    top = labels.rank_label_issues(given, proba)[:flipped.sum()]
    recall = flipped[top].mean()
    mask = labels.label_issues(given, proba)
    print(f"recall@N={flipped.sum()}: {recall:.3f}; cleanlab flags {mask.sum()}, precision {flipped[mask].mean():.3f}")
    assert recall >= 0.8
    assert flipped[mask].mean() > 0.8
    cq = labels.class_label_quality(given, proba, class_names=["neg", "pos"])
    assert set(cq["class"]) == {"neg", "pos"} and cq["label_quality"].between(0, 1).all()
    with pytest.raises(DataError, match="sum to 1"):
        labels.label_quality(given, proba * 2)


def test_annotators_name_the_unreliable_one():
    rng = np.random.default_rng(3)
    true, _, proba = _noisy(rng, flip=0.0)
    frame = pd.DataFrame({f"label_{name}": np.where(rng.uniform(size=len(true)) < p, 1 - true, true)
                          for name, p in {"expert": 0.02, "good": 0.1, "unreliable": 0.4}.items()})
    frame["label_true"] = true
    cols = annotators.annotator_columns(frame)
    assert cols == ["label_expert", "label_good", "label_unreliable"]
    table = annotators.annotator_agreement(frame[cols], expert="label_expert")
    assert table.sort_values("kappa_consensus")["annotator"].iloc[0] == "unreliable"
    assert np.isnan(table.set_index("annotator").loc["expert", "accuracy_vs_expert"])
    quality, images = annotators.crowdlab(frame[cols], proba)
    assert quality.sort_values("crowdlab_quality")["column"].iloc[0] == "label_unreliable"
    assert (images["consensus_label"] == true).mean() > 0.9
    assert len(annotators.active_label_scores(frame[cols], proba)) == len(true)
    k = annotators.fleiss_kappa(frame[cols])
    assert 0 < k < 1
    with pytest.raises(DataError, match="label_bogus"):
        annotators.annotator_columns(frame, ["label_bogus"])


def test_majority_vote_ties_are_nan():
    v = annotators.majority_vote(pd.DataFrame({"a": [0, 1, 1], "b": [0, 0, np.nan]}))
    assert v.iloc[0] == 0 and np.isnan(v.iloc[1]) and v.iloc[2] == 1


def test_risk_coverage_better_when_confident():
    true, _, proba = _noisy(np.random.default_rng(4), flip=0.0)
    rc = selective.risk_coverage(true, proba, proba.max(1))
    acc = rc.set_index("coverage")["accuracy"]
    assert acc.loc[0.8] >= acc.loc[1.0] and acc.loc[0.5] >= acc.loc[0.8]
    assert rc["n"].iloc[-1] == len(true)


def test_flag_when_uncertainty_misses_what_the_gate_stops():
    from medlens.trust.report import uncertainty_flags

    g = {"flagged_n": 40, "passed_n": 90, "flagged_mc_epistemic": 0.0006, "passed_mc_epistemic": 0.0019,
         "flagged_epistemic": 0.07, "passed_epistemic": 0.22}
    flags = uncertainty_flags({"uncertainty_vs_gate": g})
    assert len(flags) == 1 and "40 images" in flags[0] and "0.0006 vs 0.0019" in flags[0]
    assert uncertainty_flags({"uncertainty_vs_gate": {**g, "flagged_mc_epistemic": 0.01}}) == []
    assert uncertainty_flags({"uncertainty_vs_gate": {**g, "flagged_n": 0, "flagged_mc_epistemic": float("nan")}}) == []
    assert uncertainty_flags({}) == []  # a summary written before this check


def test_label_audit_caution_when_an_implausible_share_is_flagged():
    from medlens.trust.report import LABEL_ISSUE_CAUTION, _label_caution

    few = {"n_issues": 10, "n_checked": 374, "oof_accuracy": 0.93}
    assert _label_caution(few) == ""  # make demo: 2.7% flagged, no caution
    many = {"n_issues": 342, "n_checked": 921, "oof_accuracy": 0.515}  # a weak 3-epoch RetinaMNIST model
    text = _label_caution(many)
    assert "caution" in text and "37%" in text and "out-of-fold accuracy is 52%" in text
    edge = {"n_issues": int(LABEL_ISSUE_CAUTION * 1000), "n_checked": 1000}
    assert _label_caution(edge) == "" and _label_caution({**edge, "n_issues": edge["n_issues"] + 1}) != ""
