"""Session fixture: a tiny trained study (field-of-view crop and CLAHE on), exported again with int8."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.study import PREPROCESSED, trained_run


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    from medlens.export import export_run

    run = trained_run(tmp_path_factory.mktemp("export_run"), **PREPROCESSED)
    return run, export_run(run, quantize="int8", benchmark=True)
