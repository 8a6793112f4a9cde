"""Training throughput: medlens's loop vs a bare timm + torch loop, and FLOP/s vs a GEMM peak.

Both loops train the same timm model at the same batch size and image size on the same
synthetic images (random uint8 tensors held in memory), so the ratio measures only what
medlens adds per step: normalisation, augmentation, class-weighted loss, gradient
clipping, the LR schedule, per-epoch validation, ``history.csv`` and the ``last.pt``
checkpoint. The bare loop is ``model(x) -> cross_entropy -> backward -> AdamW.step``.

Achieved FLOP/s counts the training step's FLOPs with ``torch.utils.flop_counter``
(forward + backward) and divides by the bare loop's step time; the peak is the best fp32
``matmul`` of two 2048×2048 matrices on the same device.

Usage::

    python benchmarks/train_throughput.py                       # resnet18, 64 px, batch 64, CPU
    python benchmarks/train_throughput.py --device cuda --steps 50
    python benchmarks/train_throughput.py --ablate              # and fit() with each default feature off
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F


def gemm_peak(device: torch.device, n: int = 4096, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s over ``repeats`` runs."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.backends.cuda.matmul.allow_tf32 = False
    best = float("inf")
    for _ in range(repeats + 2):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward + backward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _rates(n: int, start: tuple[float, float]) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process)."""
    wall, cpu = _clock()
    return n / (wall - start[0]), n / max(cpu - start[1], 1e-9)


def bare_loop(name: str, x: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) images/s of the plainest timm + torch training loop over ``x`` (one pass)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=2).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xf = ((x.float() / 255 - 0.5) / 0.25).to(device)  # pre-normalised: the bare loop does nothing per step
    yd = y.to(device)
    _sync(device)
    start = _clock()
    for i in range(0, len(xf), batch):
        loss = F.cross_entropy(model(xf[i:i + batch]), yd[i:i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return _rates(len(xf), start)


def medlens_loop(name: str, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, batch: int,
                 device: torch.device, **engine_options) -> tuple[float, float]:
    """(wall, CPU) images/s of :func:`medlens.train.loop.fit` (one epoch, with validation and checkpoint).

    ``engine_options`` override the engine's defaults (``--ablate``: one feature off at a time).
    """
    from medlens.config import TrainConfig
    from medlens.models import create_model
    from medlens.config.engine import EngineConfig
    from medlens.train.loop import fit

    torch.manual_seed(0)
    model = create_model(name, num_classes=2)
    cfg = TrainConfig(epochs=1, batch_size=batch, image_size=x.shape[-1])
    engine = EngineConfig(device=device.type, **engine_options)
    with tempfile.TemporaryDirectory() as tmp:
        _sync(device)
        start = _clock()
        fit(model, (x, y.numpy()), (xv, yv.numpy()), cfg, num_classes=2, seed=0, out_dir=Path(tmp), engine=engine)
        _sync(device)
        return _rates(len(x), start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="training steps per timed pass")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per loop (best is kept)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--ablate", action="store_true",
                    help="also time fit() with each default feature off (precise BN, checkpoint, augmentation, clipping)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n = args.steps * args.batch
    x = (torch.rand(n, 3, args.size, args.size, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 2, (n,), generator=g)
    y[:2] = torch.tensor([0, 1])
    xv, yv = x[:args.batch], y[:args.batch]  # one validation batch per epoch, as a small study would have

    bare_loop(args.model, x[:2 * args.batch], y[:2 * args.batch], args.batch, device)  # warm-up (kernels, allocator)
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        bare.append(bare_loop(args.model, x, y, args.batch, device))
        ours.append(medlens_loop(args.model, x, y, xv, yv, args.batch, device))
    model = timm.create_model(args.model, num_classes=2).to(device).train()
    flops = step_flops(model, ((x[:args.batch].float() / 255 - 0.5) / 0.25).to(device), y[:args.batch].to(device))
    peak = gemm_peak(device)
    wall_b, cpu_b = [r[0] for r in bare], [r[1] for r in bare]
    wall_o, cpu_o = [r[0] for r in ours], [r[1] for r in ours]
    achieved = flops / args.batch * max(wall_b)

    print(f"device {device} ({torch.get_num_threads()} threads)  model {args.model}  {args.size} px  "
          f"batch {args.batch}  {args.steps} steps x {args.repeats} repeats")
    runs = lambda v: ", ".join(f"{r:.1f}" for r in v)  # noqa: E731
    print(f"bare timm+torch loop : {max(wall_b):8.1f} images/s wall  {max(cpu_b):8.1f} images/CPU-s  "
          f"(wall runs: {runs(wall_b)})")
    print(f"medlens fit()        : {max(wall_o):8.1f} images/s wall  {max(cpu_o):8.1f} images/CPU-s  "
          f"(wall runs: {runs(wall_o)})")
    print(f"ratio medlens / bare : {max(wall_o) / max(wall_b):.3f} wall (best runs), "
          f"{np.median(cpu_o) / np.median(cpu_b):.3f} CPU time (median runs; robust on a shared machine); "
          "target >= 0.95")
    print(f"training FLOPs/image : {flops / args.batch / 1e9:.3f} GFLOP   achieved {achieved / 1e9:.1f} GFLOP/s")
    print(f"fp32 GEMM peak       : {peak / 1e9:.1f} GFLOP/s   ->  {achieved / peak:.1%} of peak")
    if args.ablate:
        ablate(args.model, x, y, xv, yv, args.batch, device, args.repeats, max(wall_b))


def ablate(name: str, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, batch: int,
           device: torch.device, repeats: int, bare: float) -> None:
    """Print fit()'s throughput with each default feature switched off, as a ratio to the bare loop."""
    from medlens.config.engine import AugmentConfig

    still = AugmentConfig(flip=False, brightness=0.0, contrast=0.0)
    variants = {"precise BN off": {"precise_bn": False}, "checkpoint off": {"checkpoint": False},
                "augmentation off": {"augment": still}, "clipping off": {"grad_clip": None},
                "all four off": {"precise_bn": False, "checkpoint": False, "augment": still, "grad_clip": None}}
    best = {k: 0.0 for k in variants}
    for _ in range(repeats):  # interleaved, as above
        for k, options in variants.items():
            best[k] = max(best[k], medlens_loop(name, x, y, xv, yv, batch, device, **options)[0])
    for k, rate in best.items():
        print(f"fit(), {k:18s}: {rate:8.1f} images/s wall   ratio to bare {rate / bare:.3f}")


if __name__ == "__main__":
    main()
