"""MedMNIST v2 on real data: train and evaluate each config, print ours beside the paper's rows.

For every dataset it runs the whole study (``medlens run``: ingest → QC → official split →
train → evaluate → explain → trust → report), scores the test predictions with the
MedMNIST evaluator's definitions (:mod:`medlens.evaluate.medmnist`: binary AUC on p1 and ACC of
p1 > 0.5; multi-class macro one-vs-rest AUC and arg-max ACC), checks both numbers against
scikit-learn on the saved ``predictions.parquet``, and prints one table: dataset, ours (AUC
and ACC with 95% CIs), the paper's rows from ``../shared/reference/medmnist_v2.csv``, and
wall-clock.

Usage (from the repository root)::

    python benchmarks/medmnist.py                      # PneumoniaMNIST + RetinaMNIST, full recipe
    python benchmarks/medmnist.py --quick              # 40 steps at 28 px: checks the pipeline end to end
    python benchmarks/medmnist.py path/to/bloodmnist.npz   # the same recipe on any MedMNIST 2D file
    python benchmarks/medmnist.py --train-share 0.1 ../shared/data/medmnist/pneumoniamnist.npz
                                                       # the recipe on 10% of the training images

A ``.npz`` argument is run with the PneumoniaMNIST recipe unchanged (only the name, the data
path and the paper's rows differ). A finished run is not retrained (stages are skipped when
nothing changed); the wall-clock column then shows the recorded compute time of its stages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from medlens.sections import format_ci

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [REPO / "configs" / "medmnist" / "pneumoniamnist.yaml", REPO / "configs" / "medmnist" / "retinamnist.yaml"]
RECIPE = CONFIGS[0]
log = logging.getLogger("medlens.benchmarks.medmnist")

QUICK = {"train": {"steps": 40, "image_size": 28}, "evaluate": {"n_bootstrap": 200},
         "explain": {"max_images": 8, "faithfulness_images": 0, "sanity_images": 0},
         "trust": {"mc_samples": 2}}
"""Overrides of ``--quick``: 40 steps at 28 px and the lightest audits (pipeline check, not a result)."""


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def train_subset(npz: Path, share: float, out_dir: Path, *, seed: int = 0) -> Path:
    """A copy of a MedMNIST file with a class-stratified ``share`` of its training images.

    Validation and test images are kept whole, so the result is scored on the official test
    set. Written as ``out_dir/<flag>_<pct>pct.npz`` (the flag still names the paper's rows).
    """
    import numpy as np

    from medlens.data.medmnist import dataset_name

    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    y = arrays["train_labels"].reshape(len(arrays["train_labels"]), -1)[:, 0]
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), max(1, round(share * (y == c).sum())),
                                              replace=False) for c in np.unique(y)]))
    arrays["train_images"], arrays["train_labels"] = arrays["train_images"][keep], arrays["train_labels"][keep]
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{dataset_name(npz)}_{share * 100:g}pct.npz"
    np.savez_compressed(out, **arrays)
    return out


def study_config(target: Path, *, quick: bool = False, run_dir: Path | None = None):
    """The StudyConfig of a config YAML, or of the recipe applied to a MedMNIST ``.npz``.

    The run is named after the file's stem (``pneumoniamnist_10pct``), its rows after its flag.
    """
    from medlens.config import load_config, parse_config
    from medlens.data.medmnist import dataset_name, paper_baselines

    if target.suffix == ".npz":
        data = load_config(RECIPE).model_dump(mode="json")
        name = dataset_name(target)
        data = _merge(data, {"name": target.stem.lower(), "data": {"path": str(target)}})
        data["evaluate"]["baselines"] = [b.model_dump() for b in paper_baselines(name)]
    else:
        data = load_config(target).model_dump(mode="json")
    if quick:
        data = _merge(data, QUICK)
        data["name"] = data["name"] + "-quick"
    if run_dir is not None:
        data["run_dir"] = str(run_dir)
    return parse_config(data, source=str(target))


def run_one(cfg) -> dict:
    """Run the study (its ``medmnist`` stage scores it the MedMNIST way), check against scikit-learn; return the summary."""
    from medlens.stages.runner import run_study

    t0 = time.perf_counter()
    run_study(cfg)
    wall = time.perf_counter() - t0
    summary = json.loads((cfg.out / "medmnist" / "summary.json").read_text())
    compute = sum(json.loads(f.read_text()).get("seconds") or 0.0 for f in (cfg.out / ".stages").glob("*.json"))
    summary["wall_s"] = wall
    summary["compute_s"] = compute
    summary["retrained"] = wall > 0.5 * compute
    for part in ("val", "test"):
        if part in summary:
            for k in ("auc", "acc"):
                ours, ref = summary[part][k]["value"], summary[part]["sklearn"][k]
                if abs(ours - ref) > 1e-12:
                    raise RuntimeError(f"{cfg.name} {part} {k}: {ours} differs from scikit-learn {ref}")
    return summary


def table_rows(summary: dict) -> list[list[str]]:
    """Rows of the printed table: ours first, then the paper's rows for the dataset."""
    t = summary["test"]
    secs = summary["wall_s"] if summary["retrained"] else summary["compute_s"]
    clock = f"{secs / 60:.1f} min" + ("" if summary["retrained"] else " (recorded)")
    length = f"{summary['steps']} steps" if summary.get("steps") else f"{summary['epochs']} ep" + (
        f", >= {summary['min_steps']} steps" if summary.get("min_steps") else "")
    rows = [[summary["dataset"], f"ours: {summary['model']} {summary['image_size']} px, {length}",
             format_ci(t["auc"]), format_ci(t["acc"]), clock]]
    for b in summary["baselines"]:
        rows.append(["", b["name"], f"{b['auc']:.3f}" if b["auc"] is not None else "–",
                     f"{b['acc']:.3f}" if b["acc"] is not None else "–", ""])
    return rows


def markdown(summaries: list[dict]) -> str:
    """The table as Markdown (for the README)."""
    head = "| dataset | method | test AUC (95% CI) | test ACC (95% CI) | wall-clock |\n|---|---|---|---|---|\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for s in summaries for r in table_rows(s))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", type=Path, help="config YAMLs or MedMNIST .npz files (default: both configs)")
    parser.add_argument("--quick", action="store_true", help="40 steps at 28 px: an end-to-end check, not a result")
    parser.add_argument("--run-dir", type=Path, default=None, help="where the runs go (default: the config's run_dir)")
    parser.add_argument("--train-share", type=float, default=None,
                        help=".npz targets: train on this class-stratified share of the training images (e.g. 0.1); "
                        "validation and test stay whole")
    args = parser.parse_args(argv)
    if args.train_share is not None and not 0 < args.train_share < 1:
        parser.error(f"--train-share {args.train_share}: give a share between 0 and 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.chdir(REPO)  # config paths are relative to the repository root
    targets = args.targets or CONFIGS
    from medlens.errors import MedlensError

    summaries = []
    for target in targets:
        if args.train_share is not None and target.suffix == ".npz" and target.is_file():
            target = train_subset(target, args.train_share, (args.run_dir or REPO / "runs") / "medmnist-subsets")
        try:
            cfg = study_config(target.resolve() if target.suffix == ".npz" else target, quick=args.quick,
                               run_dir=args.run_dir)
        except MedlensError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if cfg.data.path is not None and not Path(cfg.data.path).is_file():
            print(f"SKIP {cfg.name}: {cfg.data.path} not found (the shared MedMNIST data is not beside this checkout)")
            continue
        summaries.append(run_one(cfg))
    if not summaries:
        return 0
    load = os.getloadavg()
    print()
    print(markdown(summaries), end="")
    print(f"\nAUC/ACC as the MedMNIST evaluator defines them; equal to sklearn roc_auc_score / accuracy_score on "
          f"predictions.parquet (checked). {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} at the end.{' QUICK MODE: not a result.' if args.quick else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
