"""Session fixture: an exported run with untrained fold models (see helpers/export.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.export import fake_run


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    from medlens.export import export_run

    run = fake_run(tmp_path_factory.mktemp("export_run"))
    return run, export_run(run, quantize="int8", benchmark=True)
