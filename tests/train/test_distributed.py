"""The same loop under `torchrun --nproc_per_node 2` (gloo on CPU): completes, rank 0 writes, checkpoint loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medlens.config import load_config
from medlens.models import create_model
from medlens.train.checkpoint import LAST, load_last

TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.slow
def test_torchrun_two_processes_gloo(prepared_study):
    cfg_path = prepared_study("ddp", model={"name": "test_efficientnet"}, engine={"device": "cpu"},
                              train={"epochs": 2})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
                           "-m", "medlens.cli", "train", str(cfg_path), "--fold", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("fold 0: best epoch") == 1 and "2 processes" in proc.stdout  # rank 0 only
    fold = load_config(cfg_path).out / "fold_0"
    model = create_model("test_efficientnet", num_classes=2, in_chans=3)
    model.load_state_dict(load_file(str(fold / "model.safetensors")))
    state = load_last(fold / LAST)
    model.load_state_dict(state["model"])
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert not list(fold.glob("*.tmp"))
    x = torch.zeros(2, 3, 32, 32)
    assert model.eval()(x).shape == (2, 2)
