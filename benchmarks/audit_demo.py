"""Trust audit on the finished demo run (``make demo`` → ``runs/demo``): speed and what it finds.

Works on a copy in a temporary folder (``runs/demo`` is never written), adds 40 phantom
images without a fundus as out-of-distribution cases, and prints the audit time, the
selective-prediction gain, the least reliable annotator and the OOD AUROCs.

    python benchmarks/audit_demo.py [runs/demo]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from medlens.config import load_config
from medlens.data.manifest import load_manifest, save_manifest
from medlens.data.sources import read_synthetic
from medlens.data.synthetic import generate
from medlens.trust import trust_stage


def copy_with_ood(demo: Path, run: Path) -> None:
    """Copy what the audit reads, and append 40 OOD phantom images to the manifest."""
    for n in ("config.yaml", "manifest.parquet", "splits.json", "predictions.parquet"):
        shutil.copy(demo / n, run / n)
    for f in sorted(demo.glob("fold_*/model.safetensors")):
        (run / f.parent.name).mkdir()
        shutil.copy(f, run / f.parent.name / f.name)
    generate(run / "ood", n_patients=0, ood_images=40, seed=5, image_size=96)
    extra = read_synthetic(run / "ood")
    extra["sample_id"] = "OOD_" + extra["sample_id"]
    extra["patient_id"] = "OOD_" + extra["patient_id"]
    manifest = load_manifest(run / "manifest.parquet")
    save_manifest(pd.concat([manifest, extra[[c for c in manifest.columns if c in extra.columns]]], ignore_index=True),
                  run / "manifest.parquet")


def main(demo: Path) -> None:
    if not (demo / "predictions.parquet").is_file():
        sys.exit(f"no finished demo run at {demo}: run `make demo` first")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        copy_with_ood(demo, run)
        t0, c0 = time.perf_counter(), time.process_time()
        s = trust_stage(run, load_config(run / "config.yaml"))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sel = s["selective"]["test/epistemic"]
    print(f"audit: {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"test accuracy: all {sel['accuracy_all']:.3f}, 80% most certain {sel['accuracy_80']:.3f}")
    print(f"least reliable annotator: {s['annotators']['least_reliable']}")
    print("AUROC phantom OOD vs test:", {k: round(v, 3) for k, v in s["ood"]["auroc_ood_vs_test"].items()})
    print("mean uncertainty per part:", s["uncertainty"])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))
