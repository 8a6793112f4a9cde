"""Self-supervised pretraining: label-efficiency curves on a MedMNIST file or on a study config.

With a MedMNIST 2D ``.npz`` it pretrains encoders on the file's training and validation
images (labels ignored; the test images are never seen); with a study YAML (e.g.
``configs/ssl.yaml``, the phantom) it runs that config's ``ssl`` section as is. Then it fits a
linear probe on shares of the labeled training patients (several draws each, the same
patients for every encoder) and fine-tunes every encoder end to end on the first draw of
the larger shares. Fine-tuning random initialisation is the supervised baseline. It prints
test AUC per encoder, mode and share; the share of labels each pretrained encoder saves
before it matches random initialisation of the same mode, and before it matches the
supervised baseline with all labels; and each fine-tuned encoder against that baseline with
a paired DeLong p-value. MedMNIST has no patient IDs, so MICLe would fall back to SimCLR; it
is left out of the MedMNIST default.

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


def table(cfg, summary: dict) -> str:
    """The printed result: one row per curve (linear probes, then fine-tuned), then the DeLong lines."""
    fractions = sorted({p["fraction"] for points in summary["curves"].values() for p in points})
    sup = summary["supervised"]
    lines = [f"\n{cfg.name}: test AUC (mean ± SD over draws; fine-tuned: one draw), {summary['pool_patients']} "
             f"labeled training images, {summary['test_images']} test images, "
             f"{cfg.ssl.image_size or cfg.train.image_size} px, {cfg.ssl.epochs} pretraining epochs",
             "| encoder | " + " | ".join(f"{f:.0%}" for f in fractions)
             + " | labels saved vs random init, same mode | labels saved vs supervised, 100% |",
             "|---|" + "---|" * (len(fractions) + 2)]

    def saved(key: str, enc: str) -> str:
        if enc not in summary[key]:
            return "–"
        v = summary[key][enc]
        return f"{v:.0%}" if v is not None else "none"

    for enc, points in summary["curves"].items():
        at = {p["fraction"]: p for p in points}
        cells = [("–" if f not in at else f"{at[f]['auc']:.3f}" + (f" ± {at[f]['sd']:.3f}" if at[f]["sd"] else ""))
                 for f in fractions]
        name = f"**{enc}** (supervised baseline)" if sup is not None and enc == sup["encoder"] else enc
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {saved('labels_saved', enc)} | "
                     f"{saved('labels_saved_vs_supervised', enc)} |")
    if sup is not None:
        lines.append(f"\nagainst the supervised baseline ({sup['encoder']}, {sup['fraction']:.0%} of labels, "
                     f"AUC {sup['auc']:.3f}), paired DeLong test on the same test images:")
        for c in summary["versus_supervised"]:
            p = f"p = {c['p_max']:.3g}" if c["p_max"] is not None else "multi-class: no DeLong"
            if c["difference"] >= 0:
                verdict = "at least as good as"
            elif c["p_max"] is not None and c["p_max"] >= 0.05:
                verdict = "lower (not significant at 0.05) than"
            else:
                verdict = "worse than"
            lines.append(f"  {c['encoder']} at {c['fraction']:.0%}: AUC {c['auc']:.3f} ({c['difference']:+.3f}, {p}); "
                         f"{verdict} supervised at {sup['fraction']:.0%}")
    return "\n".join(lines)


def pair_table(cfg, max_images: int = 600) -> str:
    """How alike a patient's images are (fold 0's training images), in pixels and in each encoder's features."""
    import numpy as np

    from medlens.data.cache import build_cache
    from medlens.data.preprocess import Preprocess
    from medlens.models import create_model
    from medlens.ssl.pairs import feature_similarity, pixel_similarity
    from medlens.ssl.probing import features, find_encoders
    from medlens.train.loop import seed_everything
    from medlens.train.tune import load_inputs

    manifest, splits = load_inputs(cfg)
    rows = manifest.set_index("sample_id").loc[splits["folds"][0]["train"]].reset_index().head(max_images)
    patients = rows["patient_id"].to_numpy()
    lines = [f"\npairs of fold 0's training images ({len(rows)} images, {rows['patient_id'].nunique()} patients): "
             "same patient vs other patients"]
    encoders = find_encoders(cfg)
    x = build_cache(cfg.out, rows["image"].tolist(), Preprocess.from_config(cfg, size=encoders[0].image_size)).to_tensor()
    px = pixel_similarity(x.numpy().astype(np.float32), patients, max_shift=max(2, x.shape[-1] // 12))
    lines.append(f"  pixels (high-passed, best shift): {px['same_patient']:.3f} vs {px['other_patients']:.3f}")
    for enc in encoders:
        seed_everything(cfg.seed)
        net = create_model(enc.model, num_classes=0, in_chans=cfg.model.in_chans, pretrained=enc.weights,
                           image_size=enc.image_size)
        fs = feature_similarity(features(net, x), patients)
        lines.append(f"  {enc.label} features (cosine): {fs['same_patient']:.3f} vs {fs['other_patients']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", type=Path, default=DEFAULT, help="a MedMNIST 2D .npz file or a study YAML")
    parser.add_argument("--methods", default="simclr,rotation", help=".npz: comma-separated simclr,micle,mae,rotation")
    parser.add_argument("--epochs", type=int, default=10, help=".npz: pretraining epochs")
    parser.add_argument("--size", type=int, default=32, help=".npz: pretraining and probing image size")
    parser.add_argument("--seeds", type=int, default=3, help=".npz: linear-probe draws per label fraction")
    parser.add_argument("--finetune", default="0.25,0.5,1.0",
                        help=".npz: label shares also fine-tuned end to end (one draw each); '' for linear only")
    parser.add_argument("--finetune-steps", type=int, default=300, help=".npz: optimiser steps of each fine-tune")
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "ssl-bench")
    args = parser.parse_args(argv)
    if not args.target.is_file():
        print(f"SKIP: {args.target} not found (the shared MedMNIST data is not beside this checkout)")
        return 0
    from medlens.config import load_config, parse_config
    from medlens.data.medmnist import dataset_name
    from medlens.progress import progress_bar
    from medlens.ssl import pretrain, probe
    from medlens.stages.runner import build_pool

    if args.target.suffix == ".npz":
        base = load_config(REPO / "configs" / "medmnist" / "pneumoniamnist.yaml").model_dump(mode="json")
        base.update(name=f"{dataset_name(args.target)}-ssl")
        base["data"]["path"] = str(args.target.resolve())
        tuned = [float(f) for f in args.finetune.split(",") if f]
        base["ssl"] = {"methods": args.methods.split(","), "unlabeled": "development", "epochs": args.epochs,
                       "image_size": args.size, "batch_size": 256, "probe_seeds": args.seeds,
                       "fractions": sorted({0.01, 0.05, 0.1, 0.25, 0.5, 1.0, *tuned}),
                       "probe_mode": "both" if tuned else "linear", "finetune_fractions": tuned or None,
                       "finetune_seeds": 1, "finetune_steps": args.finetune_steps}
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
    print(table(cfg, summary))
    if args.target.suffix != ".npz":  # MedMNIST has no patient IDs
        print(pair_table(cfg))
    load = os.getloadavg()
    print(f"\nwall-clock {(time.perf_counter() - t0) / 60:.1f} min on {os.cpu_count()} CPUs "
          f"(load average {load[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
