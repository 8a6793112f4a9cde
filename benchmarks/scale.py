"""Scale: the in-memory data path against the image cache, at N = 2,000, 8,000 and 32,000 images.

For each N, a folder of N distinct 128 px PNGs (phantom-like, each with its own noise) is
trained on for the same number of steps, twice, each in a fresh process:

- **in memory** (medlens before the cache): every training image decoded and prepared on
  one core into one ``N×C×S×S`` tensor, then :func:`medlens.train.loop.fit` on it;
- **cache**: :func:`medlens.data.cache.build_cache` prepares the images in worker
  processes into the run's memory map, and ``fit`` reads batches from it through a
  ``DataLoader``.

Printed side by side: the peak anonymous memory of the training process (``RssAnon`` in
``/proc/<pid>/status``, sampled every 20 ms; the page cache of the memory map is the
kernel's and does not count), training images/s (the ``fit`` call: the same steps, one
validation at the end) and the preparation time (decode into memory, or cache build).

Usage::

    python benchmarks/scale.py                      # N = 2000, 8000, 32000; resnet18; 40 steps of 64
    python benchmarks/scale.py --sizes 2000 8000 --steps 20 --model mobilenetv3_small_050
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_anon_kb() -> int:
    """This process's anonymous resident memory in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakAnon:
    """Samples :func:`rss_anon_kb` in a thread; ``peak`` is the largest value seen (KiB)."""

    def __init__(self, every: float = 0.02) -> None:
        self.peak, self._stop, self._every = rss_anon_kb(), threading.Event(), every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, rss_anon_kb())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon_kb())
        return self.peak


def make_images(folder: Path, n: int, size: int = 128) -> list[str]:
    """``n`` distinct grey PNGs: a smooth phantom-like field plus per-image noise (written once, reused)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("*.png"))
    if len(have) >= n:
        return [str(p) for p in have[:n]]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 120 + 60 * np.sin(3 * xx) * np.cos(2 * yy)
    for i in range(len(have), n):
        img = base + rng.normal(0, 12, (size, size)) + 40 * (((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) < 0.01)
        cv2.imwrite(str(folder / f"{i:06d}.png"), np.clip(img, 0, 255).astype(np.uint8))
    return [str(p) for p in sorted(folder.glob("*.png"))[:n]]


def child(mode: str, folder: Path, n: int, args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    from medlens.config import TrainConfig
    from medlens.config.engine import EngineConfig
    from medlens.data.cache import build_cache
    from medlens.data.preprocess import Preprocess
    from medlens.models import create_model
    from medlens.train.loop import fit

    torch.set_num_threads(args.threads)
    refs = make_images(folder, n + args.val)
    y = np.arange(n + args.val) % 2
    pre = Preprocess(size=args.size, in_chans=3)
    meter = PeakAnon()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        t0 = time.perf_counter()
        if mode == "memory":
            x = pre.load(refs)
            train, val = (x[:n], y[:n]), (x[n:], y[n:])
        else:
            x = build_cache(Path(tmp), refs, pre, workers=args.workers)
            train, val = (x.subset(range(n)), y[:n]), (x.subset(range(n, n + args.val)), y[n:])
        prepare = time.perf_counter() - t0
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=2, in_chans=3)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch, image_size=args.size)
        engine = EngineConfig(device="cpu", max_validations=1, checkpoint=False, loader_workers=args.loader_workers)
        t0 = time.perf_counter()
        fit(model, train, val, cfg, num_classes=2, seed=0, out_dir=Path(tmp), engine=engine)
        seconds = time.perf_counter() - t0
    return {"mode": mode, "n": n, "peak_anon_gb": meter.stop() / 2**20, "images_per_s": args.steps * args.batch / seconds,
            "prepare_s": prepare}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--size", type=int, default=128, help="image side (px)")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--val", type=int, default=256, help="validation images (the same count at every N)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    ap.add_argument("--workers", type=int, default=2, help="cache-building processes")
    ap.add_argument("--loader-workers", type=int, default=0, help="DataLoader workers (engine.loader_workers)")
    ap.add_argument("--work", default=None, help="folder for the images and caches (default: a temporary one)")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.work) / "images", int(args.child[1]), args)))
        return
    with tempfile.TemporaryDirectory() as work:
        args.work = args.work or work
        results = {}
        for n in args.sizes:
            for mode in ("memory", "cache"):
                cmd = [sys.executable, __file__, "--child", mode, str(n), *_forward(args)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                results[mode, n] = json.loads(out)
                r = results[mode, n]
                print(f"N={n:6d} {mode:6s}: peak RssAnon {r['peak_anon_gb']:6.2f} GB  "
                      f"{r['images_per_s']:7.1f} training images/s  preparation {r['prepare_s']:7.1f} s", flush=True)
    lo, hi = min(args.sizes), max(args.sizes)
    print(f"\n{'N':>7s} | {'peak RssAnon GB':>21s} | {'training images/s':>21s} | {'preparation s':>21s}")
    print(f"{'':>7s} | {'memory':>10s} {'cache':>10s} | {'memory':>10s} {'cache':>10s} | {'memory':>10s} {'cache':>10s}")
    for n in args.sizes:
        m, c = results["memory", n], results["cache", n]
        print(f"{n:7d} | {m['peak_anon_gb']:10.2f} {c['peak_anon_gb']:10.2f} | {m['images_per_s']:10.1f} "
              f"{c['images_per_s']:10.1f} | {m['prepare_s']:10.1f} {c['prepare_s']:10.1f}")
    for mode in ("memory", "cache"):
        grow = results[mode, hi]["peak_anon_gb"] - results[mode, lo]["peak_anon_gb"]
        speed = results[mode, hi]["images_per_s"] / results[mode, lo]["images_per_s"]
        print(f"{mode:6s}: N {lo} -> {hi}: peak RssAnon {grow:+.2f} GB (target < 0.5), "
              f"images/s ratio {speed:.2f} (target >= 0.9)")


def _forward(args: argparse.Namespace) -> list[str]:
    return ["--size", str(args.size), "--model", args.model, "--steps", str(args.steps), "--batch", str(args.batch),
            "--val", str(args.val), "--threads", str(args.threads), "--workers", str(args.workers),
            "--loader-workers", str(args.loader_workers), "--work", args.work]


if __name__ == "__main__":
    main()
