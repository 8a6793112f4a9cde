"""``medlens explain RUN``: overrides, output, typed error for a missing run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from medlens.cli import app
from medlens.errors import ConfigError, StageInputMissing

pytestmark = pytest.mark.slow


def test_explain_command_on_a_run(shortcut_run):
    res = CliRunner().invoke(app, ["explain", str(shortcut_run), "--method", "gradcam++", "--layer", "layer3",
                                   "--max-images", "24"])
    assert res.exit_code == 0, res.output
    assert "gradcam++ on layer3 (4x4)" in res.output and "energy pointing" in res.output
    assert "FLAG:" in res.output  # the shortcut is flagged whatever the method
    assert (shortcut_run / "explain" / "summary.json").is_file()


def test_missing_run_and_bad_method_are_typed_errors(tmp_path, shortcut_run):
    res = CliRunner().invoke(app, ["explain", str(tmp_path)])
    assert isinstance(res.exception, StageInputMissing)
    res = CliRunner().invoke(app, ["explain", str(shortcut_run), "--method", "gradcamm"])
    assert isinstance(res.exception, ConfigError) and "explain.method" in str(res.exception)
