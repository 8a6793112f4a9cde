"""CLAHE on vs off for lesion segmentation, on the same phantom, split, seed and network.

Run: python benchmarks/seg_clahe.py [configs/segmentation.yaml] [--run-dir runs/bench]
Trains the U-Net (task ``segmentation``, no classifier baseline) twice and prints the test and
external-site metrics side by side (the seconds include data stages; a finished run is reused).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medlens.config import load_config
from medlens.stages.runner import run_study

ROWS = [("dice", "Dice (images with lesions)"), ("dice_global", "Dice (pooled pixels)"),
        ("hd95", "HD95 (px)"), ("lesion_sensitivity", "lesion sensitivity"),
        ("lesion_sensitivity_b0", "  smallest lesions"), ("lesion_precision", "lesion precision"),
        ("auc_mask", "image AUC from mask")]


def main(config: str = "configs/segmentation.yaml", run_dir: str = "runs/bench") -> dict:
    import json

    base = load_config(config)
    results = {}
    for on in (True, False):
        cfg = base.model_copy(update={
            "name": f"seg_clahe_{'on' if on else 'off'}", "run_dir": Path(run_dir),
            "seg": base.seg.model_copy(update={"clahe": on, "task": "segmentation", "compare_classifier": False})})
        t0 = time.perf_counter()
        run = run_study(cfg)
        results[on] = (json.loads((run / "seg" / "metrics.json").read_text()), time.perf_counter() - t0)
    for part in ("test", "external"):
        if part not in results[True][0]:
            continue
        print(f"{part + ' set':30s} {'CLAHE on':>24s} {'CLAHE off':>24s}")
        for key, label in ROWS:
            cells = []
            for on in (True, False):
                e = results[on][0][part][key]
                cells.append(f"{e['value']:.3f} ({e['low']:.3f}-{e['high']:.3f})")
            print(f"{label:30s} {cells[0]:>24s} {cells[1]:>24s}")
    print(f"{'seconds':30s} {results[True][1]:>24.0f} {results[False][1]:>24.0f}")
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="configs/segmentation.yaml")
    p.add_argument("--run-dir", default="runs/bench")
    a = p.parse_args()
    main(a.config, a.run_dir)
