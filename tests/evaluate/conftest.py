"""Shared fixtures: random binary data and the R pROC reference outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

# tests/evaluate/conftest.py -> parents[2] is the repository root; shared/ sits beside it.
PROC_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "pROC"


@pytest.fixture(scope="session")
def proc_dir() -> Path:
    if not (PROC_DIR / "reference.json").is_file():
        pytest.skip(f"R pROC reference outputs not found at {PROC_DIR.resolve()} (the shared/ checkout is absent)")
    return PROC_DIR


@pytest.fixture(scope="session")
def proc_reference(proc_dir) -> dict:
    return json.loads((proc_dir / "reference.json").read_text())


@pytest.fixture(scope="session")
def asah(proc_dir):
    import pandas as pd

    return pd.read_csv(proc_dir / "aSAH.csv")


@pytest.fixture(scope="session")
def proc_extra(proc_dir) -> dict:
    import pandas as pd

    cases = json.loads((proc_dir / "extra_cases.json").read_text())
    return {name: (pd.read_csv(proc_dir / f"{name}.csv"), ref) for name, ref in cases.items()}


def _make_binary(n: int = 300, *, seed: int = 0, prevalence: float = 0.35, signal: float = 1.0, ties: bool = False):
    """Labels with both classes and scores that separate them imperfectly."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]
    s = signal * y + rng.normal(size=n)
    if ties:
        s = np.round(s)
    return y, s


@pytest.fixture(scope="session")
def make_binary():
    """Factory fixture: ``make_binary(n, seed=..., prevalence=..., signal=..., ties=...)``."""
    return _make_binary
