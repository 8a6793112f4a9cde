"""Self-supervised pretraining: label-efficiency curves on a MedMNIST file or on a study config.

With a MedMNIST 2D ``.npz`` it pretrains encoders on the file's training and validation
images (labels ignored; the test images are never seen); with a study YAML (e.g.
``configs/ssl.yaml``, the phantom) it runs that config's ``ssl`` section as is. Then it fits a
linear probe on shares of the labeled training patients (several draws each, the same
patients for every encoder) and prints test AUC per encoder and share, and the share of
labels each pretrained encoder saves before it matches random initialisation with all
labels. MedMNIST has no patient IDs, so MICLe would fall back to SimCLR; it is left out of
the MedMNIST default.

Usage (from the repository root)::

    python benchmarks/ssl_label_efficiency.py                                  # PneumoniaMNIST
    python benchmarks/ssl_label_efficiency.py ../shared/data/medmnist/dermamnist.npz --epochs 20
    python benchmarks/ssl_label_efficiency.py configs/ssl.yaml                 # the phantom, MICLe + SimCLR
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", type=Path, default=DEFAULT, help="a MedMNIST 2D .npz file or a study YAML")
    parser.add_argument("--methods", default="simclr,rotation", help=".npz: comma-separated simclr,micle,mae,rotation")
    parser.add_argument("--epochs", type=int, default=10, help=".npz: pretraining epochs")
    parser.add_argument("--size", type=int, default=32, help=".npz: pretraining and probing image size")
    parser.add_argument("--seeds", type=int, default=3, help=".npz: draws per label fraction")
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "ssl-bench")
    args = parser.parse_args(argv)
    if not args.target.is_file():
        print(f"SKIP: {args.target} not found (the shared MedMNIST data is not beside this checkout)")
        return 0
    from medlens.config import load_config, parse_config
    from medlens.data.medmnist import dataset_name
    from medlens.pipeline import progress_bar
    from medlens.ssl import build_pool, pretrain, probe

    if args.target.suffix == ".npz":
        base = load_config(REPO / "configs" / "medmnist" / "pneumoniamnist.yaml").model_dump(mode="json")
        base.update(name=f"{dataset_name(args.target)}-ssl")
        base["data"]["path"] = str(args.target.resolve())
        base["ssl"] = {"methods": args.methods.split(","), "unlabeled": "development", "epochs": args.epochs,
                       "image_size": args.size, "batch_size": 256, "fractions": [0.01, 0.05, 0.1, 0.25, 1.0],
                       "probe_seeds": args.seeds}
    else:
        base = load_config(args.target).model_dump(mode="json")
    base["run_dir"] = str(args.run_dir)
    cfg = parse_config(base, source=str(args.target))
    t0 = time.perf_counter()
    build_pool(cfg)
    with progress_bar() as progress:
        for method in cfg.ssl.methods:
            t = time.perf_counter()
            pretrain(cfg, method, progress=progress)
            print(f"pretrained {method} in {(time.perf_counter() - t) / 60:.1f} min")
        summary = probe(cfg, progress=progress)
    fractions = [p["fraction"] for p in next(iter(summary["curves"].values()))]
    print(f"\n{cfg.name}: linear probe test AUC (mean ± SD over {summary['draws']} draws), "
          f"{summary['pool_patients']} labeled training images, {summary['test_images']} test images, "
          f"{cfg.ssl.image_size or cfg.train.image_size} px, {cfg.ssl.epochs} pretraining epochs")
    print("| encoder | " + " | ".join(f"{f:.0%}" for f in fractions) + " | labels saved |")
    print("|---|" + "---|" * (len(fractions) + 1))
    for enc, points in summary["curves"].items():
        saved = summary["labels_saved"].get(enc)
        cells = [f"{p['auc']:.3f} ± {p['sd'] or 0:.3f}" for p in points]
        print(f"| {enc} | " + " | ".join(cells) + f" | {'–' if enc.startswith('random') else (f'{saved:.0%}' if saved is not None else 'none')} |")
    load = os.getloadavg()
    print(f"\nwall-clock {(time.perf_counter() - t0) / 60:.1f} min on {os.cpu_count()} CPUs "
          f"(load average {load[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
