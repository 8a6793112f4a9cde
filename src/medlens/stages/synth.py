"""``synth``: the deterministic phantom, written into ``run/data/`` (synthetic source only)."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.data.synthetic import generate
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Generate the phantom of ``data.synthetic`` with the study's seed."""
    generate(run_dir / "data", seed=cfg.seed, **cfg.data.synthetic.model_dump())


STAGE = Stage("synth", run, sections=("data.synthetic", "seed"), writes=("data/manifest.csv",),
              when=lambda cfg: cfg.data.source == "synthetic")
