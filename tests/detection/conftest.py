"""A tiny finished detection study (trained once per session), shared by the stage, export, report and serve tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.threads import one_thread  # noqa: F401 - an autouse fixture for this folder

DET = {"task": "detection", "name": "tinydet", "data": {"synthetic": {"n_patients": 36, "image_size": 32}},
       "train": {"epochs": 3, "image_size": 32, "batch_size": 16, "lr": 0.003},
       "detection": {"features": [4, 8, 16, 32, 64, 8], "max_detections": 10},
       "seg": {"features": [4, 8, 16, 32, 64, 4]}, "evaluate": {"n_bootstrap": 100}}
"""Overrides of :func:`helpers.study.make_tiny_config` for a seconds-long detection study."""


@pytest.fixture(scope="session")
def det_run(tmp_path_factory) -> Path:
    """Every stage of `medlens run` on the tiny detection study: folds, evaluation, export, report."""
    from helpers.study import make_tiny_config

    from medlens.stages.runner import run_study

    return run_study(make_tiny_config(tmp_path_factory.mktemp("det"), **DET))
