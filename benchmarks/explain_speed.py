"""Explaining vs predicting: Grad-CAM on resnet18, 256 images at 64 px (acceptance: ratio < 10).

Usage: ``python benchmarks/explain_speed.py [--images 256] [--size 64] [--model resnet18] [--threads N]``

Prints the time to predict the images (``predict_proba``, batches of 128) and to explain
them (``explain_images``, Grad-CAM on the automatically chosen layer, batches of 32 and
64), best of ``--repeats``, and their ratio. Weights are random: time does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from medlens.inference.cam import explain_images
from medlens.inference.layers import resolve_target
from medlens.train.loop import predict_proba


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--method", default="gradcam")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = timm.create_model(a.model, num_classes=2).eval()
    x = torch.randint(0, 256, (a.images, 3, a.size, a.size), dtype=torch.uint8)
    target = resolve_target(model, size=a.size)
    t_pred = best_of(lambda: predict_proba(model, x), a.repeats)
    print(f"{a.model}, {a.images} images at {a.size} px, {torch.get_num_threads()} thread(s)")
    print(f"predict:           {t_pred:7.3f} s")
    for bs in (32, 64):
        t_exp = best_of(lambda: explain_images(model, x, target, method=a.method, batch_size=bs), a.repeats)
        print(f"explain {a.method} {target.name} {target.grid[0]}x{target.grid[1]}, batch {bs}: {t_exp:7.3f} s   "
              f"ratio explain/predict = {t_exp / t_pred:5.2f}  (acceptance < 10)")


if __name__ == "__main__":
    main()
