"""``export_stage`` (run -> run/export/), run by :mod:`medlens.stages.export`; the report's deployment
section is :func:`medlens.export.report.write_export_section`, written by every export."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig


def export_stage(run: Path, cfg: StudyConfig) -> dict:
    """Export the k-fold ensemble of a finished run to ``run/export/`` (see :func:`medlens.export.export_run`).

    ``cfg`` is accepted for the stage signature; the export reads the config the run recorded.
    """
    from medlens.export.core import export_run

    return export_run(Path(run), fold="ensemble", benchmark=True)
