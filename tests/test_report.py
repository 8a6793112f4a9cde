import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def test_report_is_self_contained(tiny_run):
    html = (tiny_run / "report.html").read_text()
    # no external URL anywhere: hospital servers are offline
    assert not re.search(r"(?:https?:)?//[\w.-]+\.\w+", html.replace("data:image/png;base64,", ""))
    assert not re.search(r"<(script|link)\b", html)
    assert html.count("data:image/png;base64,") >= 4
    for section in ("Summary (internal test set)", "All metrics", "External validation", "Per fold",
                    "Quality gate", "Methods", "confusion matrix"):
        assert section in html
    assert "whose calibrated probability lies nearest the operating threshold" in html  # binary referral wording


def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (make test installs it when run as root)")
    shot = tmp_path / "report.png"
    subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,1600", (tiny_run / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (1600, 1200)
    # not blank: text and figures give many dark pixels and real variation
    assert img.std() > 20
    assert (img < 128).mean() > 0.01


def test_report_names_each_folds_calibration_map(tiny_run, tmp_path):
    import json

    from medlens.config import load_config
    from medlens.report.html import write_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["fold_calibration"] = [
        {"fold": 0, "method": "platt", "a": 1.5, "b": -0.25},
        {"fold": 1, "method": "temperature", "temperature": 1.25},
        {"fold": 2, "method": "bias_temperature", "temperature": 0.75, "bias": [0.0, -1.7, 0.5]},
    ]
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = re.sub(r"<[^>]+>", "", write_report(run, load_config(run / "config.yaml")).read_text())
    assert ("fold 0: a = 1.50, b = -0.25; fold 1: T = 1.25; "
            "fold 2: T = 0.75, class intercepts +0.00 -1.70 +0.50.") in text
    assert ("Each fold model was calibrated by temperature scaling with class intercepts / Platt scaling (a slope "
            "and an intercept on the logit) / temperature scaling on its own validation patients") in text


def test_comparison_with_published_rows_uses_their_accuracy_rule(tiny_run, tmp_path):
    """A binary study's ACC beside published rows is p1 > 0.5 (arg-max), not the screening operating point."""
    import json

    import pandas as pd
    import yaml
    from sklearn.metrics import accuracy_score

    from medlens.config import load_config
    from medlens.evaluate.study import evaluate_run
    from medlens.report.html import write_report

    run = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run)
    data = yaml.safe_load((run / "config.yaml").read_text())
    data["evaluate"]["baselines"] = [{"name": "Paper net", "auc": 0.9, "acc": 0.8, "source": "a table"}]
    data["run_dir"] = str(tmp_path)
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(run / "config.yaml")
    evaluate_run(run, cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    pred = pd.read_parquet(run / "predictions.parquet")
    test = pred[pred["part"] == "test"]
    argmax = accuracy_score(test["label"], test[["p0", "p1"]].to_numpy().argmax(1))
    assert metrics["test_accuracy_argmax"]["value"] == pytest.approx(argmax, abs=1e-12)
    at_point = accuracy_score(test["label"], test["p1"] >= metrics["operating_point"]["threshold"])
    assert metrics["test"]["accuracy"]["value"] == pytest.approx(at_point, abs=1e-12)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", write_report(run, cfg).read_text()))
    row = re.search(r"this study \(\S+\)\s*([\d.]+) \(95% CI [^)]*\)\s*([\d.]+) \(95% CI", text)
    assert row and float(row.group(2)) == pytest.approx(argmax, abs=5e-4)
    assert "follows the rule of published tables" in text
    assert f"accuracy is {metrics['test']['accuracy']['value']:.3f}" in text
