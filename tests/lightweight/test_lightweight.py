"""The lightweight search: requirement estimate, Pareto front, choice from validation only, confirmation, report."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score
from typer.testing import CliRunner

from medlens.cli import app
from medlens.config import dump_config, parse_config
from medlens.config.requirement import Requirement
from medlens.lightweight.decide import choose, confirmation, pareto_front, requirement_estimate

SPACE = ["--backbones", "mobilenetv3_small_050,test_resnet", "--sizes", "32"]


def test_requirement_needs_its_specificity():
    assert Requirement(metric="sensitivity", at_least=0.9, at_specificity=0.8).describe() == \
        "sensitivity ≥ 0.9 at specificity ≥ 0.80"
    with pytest.raises(ValueError, match="at_specificity"):
        Requirement(metric="sensitivity", at_least=0.9)
    with pytest.raises(ValueError, match="at_specificity"):
        Requirement(metric="auc", at_least=0.9, at_specificity=0.8)


def test_requirement_estimate_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.clip(0.35 * y + rng.normal(0.3, 0.2, 300), 0, 1)
    groups = np.arange(300) // 2
    req = Requirement(metric="sensitivity", at_least=0.5, at_specificity=0.8)
    e = requirement_estimate(y, s, groups, req, n_boot=300)
    pred = (s >= e["threshold"]).astype(int)
    assert e["specificity"] >= 0.8 and e["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert e["value"] == pytest.approx(recall_score(y, pred), abs=1e-12)
    assert e["low"] <= e["value"] <= e["high"] and e["margin"] == pytest.approx(e["low"] - 0.5)
    assert e["met"] == (e["low"] >= 0.5)
    a = requirement_estimate(y, s, groups, Requirement(metric="auc", at_least=0.99), n_boot=300)
    assert a["value"] == pytest.approx(roc_auc_score(y, s), abs=1e-12) and not a["met"]


def test_pareto_front_by_hand_and_brute_force():
    margin = np.array([0.10, 0.05, 0.05, -0.02, 0.20, 0.10])
    cost = np.array([1.0, 0.5, 0.7, 0.1, 5.0, 1.0])
    assert pareto_front(margin, cost).tolist() == [True, True, False, True, True, True]
    rng = np.random.default_rng(1)
    m, c = rng.random(40).round(1), rng.random(40).round(1)
    brute = [not any(m[j] >= m[i] and c[j] <= c[i] and (m[j] > m[i] or c[j] < c[i]) for j in range(40))
             for i in range(40)]
    assert pareto_front(m, c).tolist() == brute


def test_confirmation_judges_the_specificity_the_threshold_kept():
    """Sensitivity met but specificity lost at the validation threshold (the demo's external site): not held."""
    req = {"metric": "sensitivity", "at_least": 0.85, "at_specificity": 0.80}
    est = lambda v, lo: {"value": v, "low": lo, "high": 1.0}  # noqa: E731
    metrics = {"test": {"sensitivity": est(0.886, 0.774), "specificity": est(0.828, 0.7)},
               "external": {"sensitivity": est(0.989, 0.963), "specificity": est(0.034, 0.007)}}
    test, ext = confirmation(metrics, req, "test"), confirmation(metrics, req, "external")
    assert test["holds"] and not test["ci_holds"] and test["why"] == ""
    assert not ext["holds"] and not ext["ci_holds"]
    assert ext["why"] == "specificity at the validation threshold is 0.034, below 0.80"
    auc = confirmation({"test": {"auc": est(0.93, 0.9)}}, {"metric": "auc", "at_least": 0.944}, "test")
    assert not auc["holds"] and auc["why"] == "AUC 0.930 is below 0.944"
    assert confirmation(metrics, req, "temporal") is None


def test_choose_is_the_fastest_that_meets_it():
    t = pd.DataFrame({"met": [True, False, True, True], "latency_ms": [2.0, 0.1, 1.0, 1.0],
                      "params": [10, 1, 8, 5], "size_bytes": [1, 1, 1, 1]})
    assert choose(t).name == 3  # 0.1 ms does not meet it; the tie at 1.0 ms goes to fewer parameters
    assert choose(t.assign(met=False)) is None


class _Sections(HTMLParser):
    """``{h2 title: text of the section}`` of report.html."""

    def __init__(self):
        super().__init__()
        self.sections, self._title, self._in_h2 = {}, None, False

    def handle_starttag(self, tag, attrs):
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2 and data.strip():
            self._title = data.strip()
            self.sections[self._title] = ""
        elif self._title is not None:
            self.sections[self._title] += data


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The tiny phantom searched over two backbones × 32 px × fp32/int8, then confirmed: (cfg, log of loads, result)."""
    from medlens.train import fold

    tmp = tmp_path_factory.mktemp("light")
    from helpers.study import make_tiny_config

    cfg = make_tiny_config(tmp, name="light", data={"synthetic": {"n_patients": 60, "image_size": 64}},
                           requirement={"metric": "auc", "at_least": 0.05})
    path = tmp / "light.yaml"
    path.write_text(dump_config(cfg))
    loads: list[tuple[str, float]] = []
    original = fold.FoldData.__call__

    def recording(self, ids):
        import time

        loads.extend((i, time.time()) for i in ids)
        return original(self, ids)

    fold.FoldData.__call__ = recording
    try:
        res = CliRunner().invoke(app, ["tune", str(path), "--objective", "requirement,latency", *SPACE])
    finally:
        fold.FoldData.__call__ = original
    return cfg, loads, res


def test_search_writes_candidates_and_a_choice_from_validation_alone(searched):
    cfg, loads, res = searched
    assert res.exit_code == 0, res.output
    work = cfg.out / "tune" / "lightweight"
    table = pd.read_csv(work / "candidates.csv")
    assert len(table) == 4 and set(table["precision"]) == {"fp32", "int8"}
    assert (table[table["precision"] == "int8"]["size_bytes"].to_numpy()
            < table[table["precision"] == "fp32"]["size_bytes"].to_numpy()).all()
    # our front, on the latencies Optuna saw, is Optuna's own front
    assert pareto_front(table["trial_margin"].to_numpy(), table["trial_latency_ms"].to_numpy()).tolist() == \
        table["optuna_front"].tolist()
    choice = json.loads((work / "choice.json").read_text())
    again = choose(table)  # the choice is a function of the validation table alone
    assert (choice["chosen"]["backbone"], choice["chosen"]["image_size"], choice["chosen"]["precision"]) == \
        (again["backbone"], again["image_size"], again["precision"])
    assert "chosen:" in res.output and "Pareto front" in res.output


def test_no_test_image_is_loaded_before_the_choice(searched):
    cfg, loads, res = searched
    splits = json.loads((cfg.out / "splits.json").read_text())
    held = set(splits["test"]) | set(splits["external"])
    chosen_at = (cfg.out / "tune" / "lightweight" / "choice.json").stat().st_mtime
    assert loads and not {i for i, t in loads if t <= chosen_at} & held
    run = cfg.out.parent / "light-chosen"
    assert (run / "predictions.parquet").stat().st_mtime > chosen_at
    pred = pd.read_parquet(run / "predictions.parquet")
    assert set(pred.loc[pred["part"] == "test", "sample_id"]) == set(splits["test"])


def test_report_section_states_the_choice_and_the_test_result(searched):
    cfg, _, res = searched
    run = cfg.out.parent / "light-chosen"
    metrics = json.loads((run / "metrics.json").read_text())
    choice = json.loads((run / "lightweight" / "choice.json").read_text())
    parser = _Sections()
    parser.feed((run / "report.html").read_text())
    text = " ".join(parser.sections["Lightest model that meets the requirement"].split())
    c = choice["chosen"]
    assert f"{c['backbone']} at {c['image_size']} px in {c['precision']}" in text
    auc = metrics["test"]["auc"]["value"]
    assert f"On the internal test set AUC is {auc:.3f}" in text
    assert ("the requirement holds" in text) == (auc >= 0.05)
    assert f"test: AUC {auc:.3f}" in res.output


def test_an_unmet_requirement_is_said_and_nothing_is_confirmed(searched, tmp_path):
    from medlens.lightweight.search import RequirementNotMet

    cfg, _, _ = searched
    strict = parse_config({**cfg.model_dump(mode="json"), "requirement": {"metric": "auc", "at_least": 0.999}})
    path = tmp_path / "strict.yaml"
    path.write_text(dump_config(strict))
    res = CliRunner().invoke(app, ["tune", str(path), "--objective", "requirement,latency", *SPACE])
    assert isinstance(res.exception, RequirementNotMet) and "no candidate meets AUC ≥ 0.999" in str(res.exception)
    assert json.loads((cfg.out / "tune" / "lightweight" / "choice.json").read_text())["chosen"] is None
    assert not (cfg.out / "tune" / "lightweight" / "chosen.yaml").exists()
