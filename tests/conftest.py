"""Shared fixtures: the tiny finished study runs (plain, and with the preprocessing contract on), and ../shared."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each, subprocesses too
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

import pytest
from helpers.study import make_tiny_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_path():
    """``shared_path(*parts)``: a path under ../shared, or skip the test with the reason when absent."""

    def find(*parts: str) -> Path:
        p = SHARED.joinpath(*parts)
        if not p.exists():
            pytest.skip(f"{p} not found: this test needs the project's shared data folder beside the checkout")
        return p

    return find


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(run_dir, **section_overrides) -> StudyConfig`` for a seconds-long study."""
    return make_tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run directory of the tiny study (trained once per test session)."""
    from medlens.stages.runner import run_study

    return run_study(make_tiny_config(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory) -> Path:
    """The tiny study trained and exported by `medlens run`, with the field-of-view crop and CLAHE switched on.

    Shared by the export and serve tests (read-only: copy it before changing anything).
    """
    from helpers.study import PREPROCESSED, trained_run

    return trained_run(tmp_path_factory.mktemp("preprocessed_run"), **PREPROCESSED)


@pytest.fixture(scope="session")
def tiny_images():
    """Eight phantom-like uint8 images 3×64×64 (random, seeded), for the CAM and explain tests."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (8, 3, 64, 64), generator=g, dtype=torch.uint8)
