"""`medlens train` / `medlens tune`: one-line errors with exit 2, a fold trains, tuning writes a config."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import yaml

from medlens.cli import main
from medlens.config import load_config

TINY = {"model": {"name": "test_efficientnet"}}


def _cli(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["medlens", *args])
    try:
        main()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def test_missing_weights_exit_2_with_path(prepared_study, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "weights" / "resnet18_fundus.safetensors"
    cfg = prepared_study("missing_w", model={"pretrained": str(missing)})
    assert _cli(monkeypatch, "train", str(cfg)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err.replace("\n", "") and "Traceback" not in err


def test_resume_without_checkpoint_exit_2(prepared_study, monkeypatch, capsys):
    cfg = prepared_study("no_ckpt", **TINY)
    assert _cli(monkeypatch, "train", str(cfg), "--fold", "1", "--resume") == 2
    assert "last.pt" in capsys.readouterr().err


def test_train_one_fold_then_resume_is_a_no_op(prepared_study, monkeypatch, capsys):
    cfg_path = prepared_study("one_fold", **TINY)
    assert _cli(monkeypatch, "train", str(cfg_path), "--fold", "0") == 0
    fold = load_config(cfg_path).out / "fold_0"
    for name in ("model.safetensors", "last.pt", "history.csv", "predictions.parquet"):
        assert (fold / name).is_file(), name
    pred = pd.read_parquet(fold / "predictions.parquet")
    assert {"sample_id", "part", "fold", "label", "p0", "p1"} <= set(pred.columns)
    before = (fold / "model.safetensors").stat().st_mtime_ns
    assert _cli(monkeypatch, "train", str(cfg_path), "--fold", "0", "--resume") == 0
    assert (fold / "model.safetensors").stat().st_mtime_ns == before  # finished: nothing retrained
    assert _cli(monkeypatch, "train", str(cfg_path), "--fold", "5") == 2


@pytest.mark.slow
def test_tune_three_trials_writes_best_config(prepared_study, monkeypatch, capsys):
    cfg_path = prepared_study("tuned", **TINY)
    run = load_config(cfg_path).out
    db = run / "tune.db"
    code = _cli(monkeypatch, "tune", str(cfg_path), "--trials", "3", "--storage", f"sqlite:///{db}",
                "--backbones", "test_efficientnet,test_resnet", "--sizes", "32,48", "--epochs", "1")
    assert code == 0, capsys.readouterr().err
    best = run / "tune" / "best.yaml"
    assert best.is_file() and db.is_file()
    tuned = load_config(best)  # a complete study config that `medlens run` accepts as it is
    assert tuned.model.name in {"test_efficientnet", "test_resnet"} and tuned.train.image_size in {32, 48}
    assert 1e-4 <= tuned.train.lr <= 1e-2 and tuned.name == "tuned"
    assert "mean validation AUC" in best.read_text().splitlines()[0]
    trials = pd.read_csv(run / "tune" / "trials.csv")
    assert len(trials) == 3
    assert not list((run / "tune").glob("trial_*"))  # trial weights are not kept
    assert yaml.safe_load(best.read_text())["engine"] == yaml.safe_load(cfg_path.read_text())["engine"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(prepared_study, monkeypatch):
    """A real SIGKILL mid-training, then `medlens train --resume`: same final weights as without the kill."""
    import os
    import signal
    import subprocess
    import time

    from medlens.train.checkpoint import load_last

    sections = {"model": {"name": "test_efficientnet"}, "train": {"epochs": 4},
                "engine": {"checkpoint_interval": 0, "device": "cpu"}}
    killed_cfg, plain_cfg = prepared_study("killed", **sections), prepared_study("plain", **sections)
    last = load_config(killed_cfg).out / "fold_0" / "last.pt"
    proc = subprocess.Popen([sys.executable, "-m", "medlens.cli", "train", str(killed_cfg), "--fold", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if last.is_file() and load_last(last)["epoch"] >= 1:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    was_killed = proc.returncode == -signal.SIGKILL
    assert _cli(monkeypatch, "train", str(killed_cfg), "--fold", "0", "--resume") == 0
    assert _cli(monkeypatch, "train", str(plain_cfg), "--fold", "0") == 0
    a = load_last(last)["model"]
    b = load_last(load_config(plain_cfg).out / "fold_0" / "last.pt")["model"]
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-6
    if not was_killed:
        pytest.skip("training finished before the kill landed (weights still compared)")
