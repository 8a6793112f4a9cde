"""Session fixture: the shared tiny trained study (field-of-view crop and CLAHE on), copied and exported again with int8."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported(exported_run, tmp_path_factory) -> tuple[Path, dict]:
    from medlens.export import export_run

    run = tmp_path_factory.mktemp("export_run") / "run"
    shutil.copytree(exported_run, run, ignore=shutil.ignore_patterns("export"))
    return run, export_run(run, quantize="int8", benchmark=True)
