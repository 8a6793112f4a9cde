"""Shared fixtures: a tiny finished study run, and the location of ../shared."""

from __future__ import annotations

from pathlib import Path

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
    from medlens.pipeline import run_study

    return run_study(make_tiny_config(tmp_path_factory.mktemp("runs")))
