"""`medlens compare` on two real trained and evaluated runs; runs with different test sets are refused with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.study import evaluated_run


def _compare(a, b, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medlens.cli", "compare", str(a), str(b), *extra],
                          capture_output=True, text=True, timeout=300)


def test_compare_two_real_runs_and_refuse_other_test_sets(tiny_run, tmp_path):
    # same data and split seed, another network (different initialisation and no dropout): same test images
    other = evaluated_run(tmp_path, name="tiny_b", model={"drop_rate": 0.0}, train={"lr": 0.001})
    res = _compare(tiny_run, other, "--out", str(tmp_path / "cmp.json"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "DeLong" in res.stdout
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    for run, key in ((tiny_run, "auc_a"), (other, "auc_b")):  # each run's AUC, as its metrics.json has it
        assert abs(cmp[key] - json.loads((run / "metrics.json").read_text())["test"]["auc"]["value"]) < 1e-9
    assert 0 <= cmp["p"] <= 1 and cmp["n_images"] == json.loads((tiny_run / "metrics.json").read_text())["test"]["n_images"]

    moved = evaluated_run(tmp_path, name="tiny_c", seed=1)  # another split seed: another test set
    res = _compare(tiny_run, moved)
    assert res.returncode == 2
    assert "different test sets" in res.stderr + res.stdout and "Traceback" not in res.stderr
