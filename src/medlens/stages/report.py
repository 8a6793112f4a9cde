"""``report``: ``report.html`` for every task, rendered from the run directory's files alone."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Render the report of the study: one writer for every task."""
    from medlens.report import write_report

    write_report(run_dir, cfg)


def _reads(cfg: StudyConfig) -> tuple[str, ...]:
    """What the report reads (:data:`medlens.report.INPUTS`); the task's own result is required."""
    from medlens.report import INPUTS

    required = {"segmentation": "sections/seg/section.json", "detection": "sections/det/section.json"}.get(
        cfg.task, "metrics.json")
    return tuple(p if p == required else f"{p}?" for p in INPUTS)


STAGE = Stage("report", run, when=lambda cfg: cfg.task != "classification" or cfg.engine.task == "classification",
              sections=("name", "task", "seed", "data", "qc", "split", "model", "train", "engine", "evaluate",
                        "explain", "trust", "seg", "detection", "ssl", "requirement"),
              reads=_reads, writes=("report.html",))
