"""Training of :class:`~medlens.detection.model.DetNet`: CenterNet targets and losses, resumable, DDP-ready.

Targets (Zhou et al. 2019): each lesion box puts a Gaussian peak (sigma = ``sigma_scale`` ×
the box side, at least 0.5 px) at the pixel holding its centre; the loss is the
penalty-reduced focal loss on the heat map plus L1 on ``dx, dy, log w, log h`` at the
centre pixels, both normalised by the number of lesions. Augmentation flips and transposes
image and boxes together (then brightness/contrast jitter), and the targets are built from
the moved boxes. The best epoch by validation CPM (ties: by validation loss) is kept.

The epochs run on :func:`medlens.train.engine.run_epochs`: ``out_dir/last.pt`` holds the
whole training state after every epoch (weights, optimiser, schedule, random states,
history), so a killed run resumes to the same final weights; under ``torchrun`` each of the
ranks trains on its share of every batch order (DistributedDataParallel, gloo on CPU) and
rank 0 writes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress

from medlens.config import TrainConfig
from medlens.data.arrays import normalise
from medlens.config.detection import DetectionConfig
from medlens.detection.data import DetArrays
from medlens.detection.model import DetNet, Detector
from medlens.errors import DataError
from medlens.train.checkpoint import fingerprint
from medlens.train.distributed import dist_info
from medlens.train.engine import EpochTask, run_epochs
from medlens.train.loop import array_digest
from medlens.train.schedule import warmup_schedule

__all__ = ["fit_detector", "predict_boxes", "targets"]


def targets(boxes: list[np.ndarray], size: int, sigma_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CenterNet targets of a batch: heat ``N×H×W``, regression ``N×4×H×W`` and centre mask ``N×H×W``.

    Parameters
    ----------
    boxes : list of ndarray of shape (K_i, 4)
        Per image, boxes ``x0, y0, x1, y1`` in pixels (exclusive ends) of a ``size × size`` input.
    size : int
    sigma_scale : float
    """
    n = len(boxes)
    heat, reg, mask = np.zeros((n, size, size), np.float32), np.zeros((n, 4, size, size), np.float32), \
        np.zeros((n, size, size), np.float32)
    grid = np.arange(size, dtype=np.float32)
    for i, b in enumerate(boxes):
        for x0, y0, x1, y1 in np.asarray(b, np.float32).reshape(-1, 4):
            w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            px, py = int(min(max(math.floor(cx), 0), size - 1)), int(min(max(math.floor(cy), 0), size - 1))
            sigma = max(0.5, sigma_scale * math.sqrt(w * h))
            g = np.exp(-((grid[None, :] - px) ** 2 + (grid[:, None] - py) ** 2) / (2 * sigma * sigma))
            heat[i] = np.maximum(heat[i], g)
            heat[i, py, px] = 1.0
            reg[i, :, py, px] = (cx - px - 0.5, cy - py - 0.5, math.log(w), math.log(h))
            mask[i, py, px] = 1.0
    return torch.from_numpy(heat), torch.from_numpy(reg), torch.from_numpy(mask)


def _augment(x: torch.Tensor, boxes: list[np.ndarray], gen: torch.Generator) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Random horizontal/vertical flips and transposition of image and boxes together; brightness/contrast jitter."""
    n, s = x.shape[0], x.shape[-1]
    u = torch.rand(n, 3, generator=gen)
    xs, out = [], []
    for i in range(n):
        img, b = x[i], np.asarray(boxes[i], float).reshape(-1, 4).copy()
        if u[i, 0] < 0.5:
            img, b = img.flip(2), np.stack([s - b[:, 2], b[:, 1], s - b[:, 0], b[:, 3]], 1)
        if u[i, 1] < 0.5:
            img, b = img.flip(1), np.stack([b[:, 0], s - b[:, 3], b[:, 2], s - b[:, 1]], 1)
        if u[i, 2] < 0.5:
            img, b = img.transpose(1, 2), b[:, [1, 0, 3, 2]]
        xs.append(img)
        out.append(b)
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return torch.stack(xs) * gain + bias, out


def centernet_loss(maps: torch.Tensor, heat: torch.Tensor, reg: torch.Tensor, mask: torch.Tensor,
                   size_weight: float) -> torch.Tensor:
    """Penalty-reduced focal loss (alpha 2, beta 4) on the heat map + ``size_weight`` × L1 at the centres."""
    p = torch.sigmoid(maps[:, 0]).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    n_pos = pos.sum().clamp(min=1.0)
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = (torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * (1 - pos)).sum()
    l1 = (F.l1_loss(maps[:, 1:], reg, reduction="none") * mask[:, None]).sum()
    return -(pos_loss + neg_loss) / n_pos + size_weight * l1 / n_pos


@torch.no_grad()
def predict_boxes(detector: Detector, images: torch.Tensor, *, min_score: float = 0.0,
                  batch_size: int = 64) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Candidates of a uint8 image tensor ``N×C×S×S``: per image ``(boxes (P, 4), scores (P,))`` scoring ≥ ``min_score``.

    Also returns the gate features ``N×F`` (float64).
    """
    detector.eval()
    out, feats = [], []
    for i in range(0, len(images), batch_size):
        b, s, f = detector(images[i:i + batch_size].float() / 255.0)
        for bi, si in zip(b.numpy().astype(np.float64), s.numpy().astype(np.float64)):
            keep = si >= max(min_score, 1e-12)  # empty top-k slots score exactly 0
            out.append((bi[keep], si[keep]))
        feats.append(f.numpy().astype(np.float64))
    return out, np.concatenate(feats) if feats else np.zeros((0, 0))


@torch.no_grad()
def _validate(net: DetNet, val: DetArrays, det: DetectionConfig, batch_size: int = 64) -> tuple[float, float]:
    """Validation CPM and loss (the loss breaks CPM ties: on easy data CPM saturates at 1 within an epoch
    or two, while the heat map is still far from its targets and its scores far from calibrated)."""
    from medlens.evaluate.froc import cpm, froc

    net.eval()
    pred, _ = predict_boxes(Detector([net], det.max_detections), val.images, min_score=det.min_score)
    losses = []
    for i in range(0, len(val), batch_size):
        heat, reg, mask = targets(val.boxes[i:i + batch_size], val.images.shape[-1], det.sigma_scale)
        maps = net(normalise(val.images[i:i + batch_size]))["maps"]
        losses.append(float(centernet_loss(maps, heat, reg, mask, det.size_weight)) * len(heat))
    return cpm(froc(val.boxes, pred, criterion=det.hit, iou=det.hit_iou)), sum(losses) / len(val)


def fit_detector(net: DetNet, train: DetArrays, val: DetArrays, train_cfg: TrainConfig, det: DetectionConfig, *,
                 seed: int, out_dir: Path, progress: Progress | None = None, resume: bool | str = "auto",
                 on_epoch_end: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Train ``net``; write ``model.safetensors`` (best validation CPM), ``history.csv`` and ``last.pt``.

    Parameters
    ----------
    net : DetNet
        Freshly initialised (seeded by the caller).
    train, val : DetArrays
        The epoch kept has the best validation CPM, and among equal CPMs the lowest validation loss.
    train_cfg : TrainConfig
        epochs, batch_size (per process), lr, weight_decay, augment.
    det : DetectionConfig
        Target widths, loss weights, decoding (for the validation CPM).
    seed : int
    out_dir : path
        Only rank 0 writes into it.
    resume : {'auto', True, False}
        As :func:`medlens.train.loop.fit`.
    on_epoch_end : callable, optional
        Called with the epoch index after its checkpoint is on disk.

    Returns
    -------
    pandas.DataFrame
        The history (one row per epoch).
    """
    rank, world = dist_info()
    out_dir = Path(out_dir)
    if not sum(len(b) for b in val.boxes):
        raise DataError(f"{out_dir.name}: the validation images hold no lesion box, so no epoch can be chosen; "
                        "use fewer folds (split.folds) or more images with lesions")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = torch.optim.AdamW(net.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    per_rank = math.ceil(len(train) / world)
    steps = math.ceil(per_rank / train_cfg.batch_size)
    total = train_cfg.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(total, max(1, steps // 2)))  # half an epoch
    settings = {"train": train_cfg.model_dump(mode="json"), "detection": det.model_dump(mode="json"), "seed": seed,
                "world": world, "data": array_digest(train.images, val.images, *train.boxes, *val.boxes)}

    def batches(epoch: int):
        order = torch.randperm(len(train), generator=gen)  # the same order on every rank
        mine = order[rank::world]
        for i in range(0, steps * train_cfg.batch_size, train_cfg.batch_size):
            idx = mine[i:i + train_cfg.batch_size]
            if len(idx) >= 2:  # batch norm needs two samples
                yield idx

    def loss(idx: torch.Tensor) -> torch.Tensor:
        xb, bb = normalise(train.images[idx]), [train.boxes[j] for j in idx.tolist()]
        if train_cfg.augment:
            xb, bb = _augment(xb, bb, gen)
        heat, reg, mask = targets(bb, xb.shape[-1], det.sigma_scale)
        return centernet_loss(model(xb)["maps"], heat, reg, mask, det.size_weight)

    def evaluate(epoch: int, losses: list[float]) -> tuple[tuple[float, float], dict]:
        val_cpm, val_loss = _validate(net, val, det)
        return (round(val_cpm, 6), -val_loss), {  # CPM first, the loss among equal CPMs
            "train_loss": float(np.mean(losses)) if losses else float("nan"), "val_cpm": val_cpm,
            "val_loss": val_loss, "lr": opt.param_groups[0]["lr"]}

    task = EpochTask(net, opt, sched, train_cfg.epochs, steps, batches, loss, evaluate, generator=gen,
                     clip_params=list(net.parameters()), clip=5.0)
    return run_epochs(task, out_dir, fingerprint=fingerprint(settings), resume=resume, command="run",
                      label=f"detect {out_dir.name}", progress=progress, on_epoch_end=on_epoch_end).history

