"""The lightest model that meets a requirement: every candidate timed side by side, the front as a table.

With a MedMNIST 2D ``.npz`` (default PneumoniaMNIST) it applies the MedMNIST recipe
(``configs/medmnist/pneumoniamnist.yaml``) with the requirement "AUC ≥ 0.944" (the paper's
ResNet-18 (28) test AUC), judged on the official validation split; with a study YAML it
uses that config's ``requirement``. It runs ``medlens tune --objective requirement,latency``
(train every backbone × size on fold 0, score fp32 and int8 through ONNX Runtime on
validation, time all candidates in interleaved rounds at batch 1 on one thread), prints every
candidate with its latency and parameter ratio to the reference (resnet18 at 64 px when it
is in the grid, else the largest), then trains the chosen model as the full study and
evaluates it once on the test set.

Usage (from the repository root)::

    python benchmarks/lightweight.py                        # PneumoniaMNIST, AUC >= 0.944
    python benchmarks/lightweight.py configs/demo.yaml --requirement sensitivity=0.85,at_specificity=0.80
    python benchmarks/lightweight.py --backbones mobilenetv3_small_050,resnet18 --sizes 32,64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
BACKBONES = "mobilenetv3_small_050,mobilenetv3_small_075,mobilenetv3_small_100,mobilenetv3_large_100,resnet18"


def parse_requirement(text: str) -> dict:
    """``auc=0.944`` or ``sensitivity=0.85,at_specificity=0.80`` as a ``requirement:`` mapping."""
    parts = dict(p.split("=", 1) for p in text.split(","))
    metric = next(k for k in parts if k in ("auc", "sensitivity"))
    out = {"metric": metric, "at_least": float(parts[metric])}
    if "at_specificity" in parts:
        out["at_specificity"] = float(parts["at_specificity"])
    return out


def study(target: Path, run_dir: Path | None, requirement: str | None = None):
    """The study config: a YAML, or the MedMNIST recipe on a ``.npz`` with AUC ≥ the paper's ResNet-18 (28).

    ``requirement`` (``--requirement``) replaces the config's.
    """
    from medlens.config import load_config, parse_config
    from medlens.data.medmnist import dataset_name, paper_rows

    if target.suffix == ".npz":
        base = load_config(REPO / "configs" / "medmnist" / "pneumoniamnist.yaml").model_dump(mode="json")
        name = dataset_name(target)
        rows = {r["method"]: r for r in paper_rows(name)}
        if "ResNet-18 (28)" not in rows:
            raise SystemExit(f"{name}: no ResNet-18 (28) row in the MedMNIST v2 table to set the requirement from")
        base.update(name=f"{name}-lightweight", requirement={"metric": "auc", "at_least": rows["ResNet-18 (28)"]["test_auc"]})
        base["data"]["path"] = str(target.resolve())
    else:
        base = load_config(target).model_dump(mode="json")
    if run_dir is not None:
        base["run_dir"] = str(run_dir)
    if requirement:
        base["requirement"] = parse_requirement(requirement)
    return parse_config(base, source=str(target))


def reference(t):
    """resnet18 at 64 px in fp32 when it was searched, else the largest fp32 candidate."""
    ref = t[(t["backbone"] == "resnet18") & (t["image_size"] == 64) & (t["precision"] == "fp32")]
    return ref.iloc[0] if len(ref) else t[t["precision"] == "fp32"].sort_values(["params", "image_size"]).iloc[-1]


def table(work: Path) -> str:
    """Every candidate, fastest first, with latency and parameter ratios to the reference model."""
    import pandas as pd

    t = pd.read_csv(work / "candidates.csv").sort_values("latency_ms")
    ref = reference(t)
    lines = [f"reference: {ref['backbone']} {ref['image_size']} px fp32 ({ref['latency_ms']:.2f} ms, "
             f"{ref['params'] / 1e6:.2f} M parameters)",
             "| backbone | px | precision | validation (95% CI) | meets | front | p50 ms | × ref | params | × ref | MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        lines.append(f"| {r.backbone} | {r.image_size} | {r.precision} | {r.value:.3f} ({r.low:.3f}–{r.high:.3f}) | "
                     f"{'yes' if r.met else 'no'} | {'•' if r.front else ''} | {r.latency_ms:.3f} | "
                     f"{r.latency_ms / ref['latency_ms']:.2f} | {r.params / 1e6:.2f} M | {r.params / ref['params']:.2f} | "
                     f"{r.size_bytes / 2**20:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", type=Path, default=DEFAULT, help="a MedMNIST 2D .npz or a study YAML")
    parser.add_argument("--backbones", default=BACKBONES, help="comma-separated timm names")
    parser.add_argument("--sizes", default="32,64", help="comma-separated image sizes")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: the config's run_dir")
    parser.add_argument("--requirement", default=None,
                        help="replaces the config's, e.g. auc=0.944 or sensitivity=0.85,at_specificity=0.80")
    parser.add_argument("--no-confirm", action="store_true", help="stop after the choice (no test evaluation)")
    args = parser.parse_args(argv)
    if not args.target.is_file():
        print(f"SKIP: {args.target} not found (the shared data is not beside this checkout)")
        return 0
    os.chdir(REPO)
    from medlens.errors import MedlensError
    from medlens.cli.lightweight import tune_lightweight
    from medlens.lightweight.search import Space

    cfg = study(args.target, args.run_dir, args.requirement)
    space = Space(backbones=tuple(args.backbones.split(",")), image_sizes=tuple(int(s) for s in args.sizes.split(",")))
    t0 = time.perf_counter()
    try:
        tune_lightweight(cfg, space=space, trials=None, storage=None, confirm=not args.no_confirm)
    except MedlensError as err:
        print(f"error: {err}", file=sys.stderr)
        print(table(cfg.out / "tune" / "lightweight"))
        return 2
    work = cfg.out / "tune" / "lightweight"
    print("\n" + table(work))
    choice = json.loads((work / "choice.json").read_text())
    c = choice["chosen"]
    import pandas as pd

    ref = reference(pd.read_csv(work / "candidates.csv"))
    print(f"chosen / {ref['backbone']} {ref['image_size']} px: latency ×{c['latency_ms'] / ref['latency_ms']:.3f}, "
          f"parameters ×{c['params'] / ref['params']:.3f} (issue 20 target: each ≤ 0.2; stretch ≤ 0.1)")
    load = os.getloadavg()
    print(f"\nrequirement {choice['requirement']['text']} on validation; chosen {c['backbone']} {c['image_size']} px "
          f"{c['precision']}. Wall-clock {(time.perf_counter() - t0) / 60:.1f} min on {os.cpu_count()} CPUs "
          f"(load average {load[0]:.1f} at the end).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
