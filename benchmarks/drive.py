"""DRIVE vessel segmentation through `medlens run`, beside the second human observer and published U-Nets.

Run: python benchmarks/drive.py [ROOT] [--run-dir DIR] [--config configs/drive.yaml] [--ablation]

ROOT is any folder laid out like DRIVE (training/{images,1st_manual,mask}, testing/{images,
1st_manual,mask}, optionally testing/2nd_manual and patients.csv; see medlens.data.drive);
it defaults to ../shared/data/drive. The script writes ROOT's table into DIR, runs the study
of the config with only the data path changed, and prints one table: `ours` (F1, AUC, ...,
wall-clock), the second observer, the published rows. A finished run is reused (delete DIR
to retrain).

--ablation instead trains short variants of the config (fold 0 only, ABLATION_EPOCHS epochs):
CLAHE on/off x green/RGB with the small U-Net, and the timm-encoder U-Net. It prints their
out-of-fold *validation* F1 and AUC only: the comparison that picks preprocessing and model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medlens.config import load_config
from medlens.data.drive import drive_table
from medlens.stages.runner import run_study

HERE = Path(__file__).resolve().parent
KEYS = ("f1", "auc", "sensitivity", "specificity", "accuracy", "mcc", "cldice")


ABLATION_EPOCHS = 5
ABLATION = {  # name: seg overrides
    "green + CLAHE (config)": {},
    "green, no CLAHE": {"clahe": False},
    "RGB + CLAHE": {"channels": "rgb"},
    "RGB, no CLAHE": {"channels": "rgb", "clahe": False},
    "timm_unet resnet18, green + CLAHE": {"architecture": "timm_unet", "encoder": "resnet18"},
}


def run(root: Path, run_dir: Path, config: Path, seg: dict | None = None, train: dict | None = None,
        evaluate: dict | None = None) -> tuple[dict, float]:
    """Train and evaluate the config's study on ROOT; return ``(seg/metrics.json, seconds)``.

    ``seg``, ``train`` and ``evaluate`` override keys of those config sections.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    table = run_dir / "drive.csv"
    drive_table(root).to_csv(table, index=False)
    base = load_config(config)
    cfg = base.model_copy(update={"run_dir": run_dir, "data": base.data.model_copy(update={"path": table}),
                                  "seg": base.seg.model_copy(update=seg or {}),
                                  "train": base.train.model_copy(update=train or {}),
                                  "evaluate": base.evaluate.model_copy(update=evaluate or {})})
    t0 = time.perf_counter()
    out = run_study(cfg)
    return json.loads((out / "seg" / "metrics.json").read_text()), time.perf_counter() - t0


def table(metrics: dict, seconds: float) -> str:
    """The comparison table: ours, the second observer, the published rows."""
    t = metrics["test"]
    head = f"{'':28s}" + "".join(f"{k:>13s}" for k in KEYS) + f"{'wall-clock':>12s}"
    lines = [head, f"{'ours':28s}" + "".join(f"{t['pixels'][k]['value']:13.4f}" for k in KEYS) + f"{seconds:11.0f}s"]
    lines.append(f"{'  95% CI':28s}" + "".join(f"  {t['pixels'][k]['low']:.3f}-{t['pixels'][k]['high']:.3f}"
                                                 for k in KEYS))
    if "second_observer" in t:
        o = t["second_observer"]
        lines.append(f"{'second observer':28s}" + "".join(f"{o[k]['value']:13.4f}" if k in o else f"{'—':>13s}"
                                                           for k in KEYS))
    for b in metrics.get("published", []):
        lines.append(f"{b['name'][:27]:28s}" + "".join(f"{b[k]:13.4f}" if b.get(k) is not None else f"{'—':>13s}"
                                                       for k in KEYS) + f"  {b.get('source', '')}")
    lines.append(f"threshold {metrics['threshold']:.4f} (chosen on {metrics['validation']['n_images']} validation "
                 f"images, F1 {metrics['validation']['f1']:.4f} there); {metrics['folds_trained']} fold(s); "
                 f"test images {t['pixels']['n_images']}")
    return "\n".join(lines)


def ablation(root: Path, run_dir: Path, config: Path) -> str:
    """Short-schedule variants compared on fold 0's validation images; one line each."""
    lines = [f"{'variant (fold 0, %d epochs)' % ABLATION_EPOCHS:38s}{'val F1':>9s}{'val AUC':>9s}{'params':>10s}"
             f"{'wall-clock':>12s}"]
    for i, (name, seg) in enumerate(ABLATION.items()):
        m, seconds = run(root, run_dir / f"variant_{i}", config, seg={**seg, "folds": 1},
                         train={"epochs": ABLATION_EPOCHS}, evaluate={"n_bootstrap": 200})
        v = m["validation"]
        lines.append(f"{name:38s}{v['f1']:9.4f}{v.get('auc', float('nan')):9.4f}{m['parameters']:10d}"
                     f"{seconds:11.0f}s")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", type=Path, default=HERE.parent.parent / "shared" / "data" / "drive")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench-drive"))
    ap.add_argument("--config", type=Path, default=HERE.parent / "configs" / "drive.yaml")
    ap.add_argument("--ablation", action="store_true", help="compare short variants on validation only")
    args = ap.parse_args()
    if args.ablation:
        print(ablation(args.root, args.run_dir, args.config))
        return
    metrics, seconds = run(args.root, args.run_dir, args.config)
    print(table(metrics, seconds))


if __name__ == "__main__":
    main()
