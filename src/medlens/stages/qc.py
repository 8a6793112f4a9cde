"""``qc``: the quality gate; ``qc.parquet`` (verdict and reasons per image) and ``qc_thresholds.json`` (the limits)."""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.errors import DataError
from medlens.qc.gate import quality_gate
from medlens.qc.learn import save_thresholds
from medlens.stages.protocol import Stage


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Learn the limits on the internal images (not ``split.external_site``), judge every image.

    The service applies the same limits (export ships ``qc_thresholds.json``).

    Raises
    ------
    DataError
        When no image passes: the message gives the commonest reasons and what to change.
    """
    qc, learned, report, n = quality_gate(load_manifest(run_dir / "manifest.parquet"), cfg.qc, cfg.split.external_site)
    qc.to_parquet(run_dir / "qc.parquet", index=False)
    save_thresholds(run_dir / "qc_thresholds.json", learned, report, n)
    if not qc["passed"].any():
        top = qc["reason"].str.split(";").explode().str.split(":").str[0].str.strip().value_counts().head(3)
        reasons = ", ".join(f"{k}: {v}" for k, v in top.items())
        raise DataError(f"the quality gate rejected all {len(qc)} images ({reasons}); see {run_dir / 'qc.parquet'} "
                        f"and {run_dir / 'qc_thresholds.json'}. Pin looser thresholds under qc: "
                        "(e.g. qc: {max_blur: 0.98}) or drop a check (qc: {checks: [exposure, contrast]})")


STAGE = Stage("qc", run, sections=("qc", "split.external_site"), reads=("manifest.parquet",),
              writes=("qc.parquet", "qc_thresholds.json"))
