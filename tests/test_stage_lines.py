"""In a pipe (a log file, CI, a batch scheduler) `medlens run` prints one start and one end line per stage."""

from __future__ import annotations

import re
import subprocess
import sys


def test_a_piped_run_prints_one_start_and_one_end_line_per_stage(tmp_path, tiny_config):
    from medlens.config import dump_config

    cfg = tiny_config(tmp_path / "runs", name="piped", data={"synthetic": {"n_patients": 16, "image_size": 48}},
                      train={"epochs": 1}, engine={"task": "regression", "target": "severity"})
    (tmp_path / "s.yaml").write_text(dump_config(cfg))
    res = subprocess.run([sys.executable, "-m", "medlens.cli", "run", "s.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    started = [m.group(1) for ln in lines if (m := re.fullmatch(r"\d\d:\d\d:\d\d stage (\S+): started", ln))]
    done = [m.group(1) for ln in lines if (m := re.fullmatch(r"\d\d:\d\d:\d\d stage (\S+): done in [\d.]+ s", ln))]
    assert started == done == ["synth", "ingest", "qc", "split", "train_fold_0", "train_fold_1"], lines
    assert not [ln for ln in (res.stdout + res.stderr).splitlines() if not ln.strip()]  # no progress-bar residue
    again = subprocess.run([sys.executable, "-m", "medlens.cli", "run", "s.yaml"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0 and again.stderr.count(": up to date, skipped") == 6, again.stderr
