"""Session fixture: an exported run with untrained fold models (see export_helpers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # export_helpers.py (tests use --import-mode=importlib)
from export_helpers import fake_run  # noqa: E402


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    from medlens.export import export_run

    run = fake_run(tmp_path_factory.mktemp("export_run"))
    return run, export_run(run, quantize="int8", benchmark=True)
