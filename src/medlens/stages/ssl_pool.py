"""``ssl_pool``: the unlabeled images self-supervised pretraining may use; ``ssl/pool.parquet``.

Never the study's test or external images. A pool from outside the study (a second
phantom, another folder or table) goes through the quality gate with the study's ``qc:``
settings, its limits learned on the pool itself.
"""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest, save_manifest
from medlens.data.splits import load_splits
from medlens.qc.gate import quality_gate
from medlens.ssl.pretraining import POOL, pool_rows
from medlens.stages.protocol import Stage, file_digest


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Write ``run/ssl/pool.parquet``."""
    out = run_dir / "ssl"
    out.mkdir(parents=True, exist_ok=True)
    rows, gate = pool_rows(cfg, load_manifest(run_dir / "manifest.parquet"), load_splits(run_dir / "splits.json"), out)
    if gate:
        qc = quality_gate(rows, cfg.qc)[0]
        rows = rows[rows["sample_id"].isin(set(qc.loc[qc["passed"], "sample_id"]))]
    save_manifest(rows.reset_index(drop=True), out / POOL)


def _extra(cfg: StudyConfig) -> dict:
    path = cfg.ssl.unlabeled_path
    return {"source": file_digest(Path(path))} if cfg.ssl.unlabeled == "path" and path else {}


STAGE = Stage("ssl_pool", run, sections=("ssl.unlabeled", "ssl.unlabeled_source", "ssl.phantom", "qc", "seed"),
              reads=("manifest.parquet", "splits.json"), writes=(f"ssl/{POOL}",), extra_key=_extra)
