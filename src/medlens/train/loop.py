"""The training loop: fit one model on in-memory tensors, keep the best epoch by validation AUC.

Reproducible on CPU: one seed drives initialisation, shuffling and augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from medlens.config import TrainConfig
from medlens.data.arrays import normalise


@dataclass
class FitResult:
    """What :func:`fit` leaves behind besides the weights file."""

    best_epoch: int
    best_val_auc: float
    history: pd.DataFrame


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and brightness/contrast jitter on a normalised float batch."""
    n = batch.shape[0]
    flip_h = torch.rand(n, generator=gen) < 0.5
    flip_v = torch.rand(n, generator=gen) < 0.5
    batch = torch.where(flip_h[:, None, None, None], batch.flip(3), batch)
    batch = torch.where(flip_v[:, None, None, None], batch.flip(2), batch)
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return batch * gain + bias


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 128) -> np.ndarray:
    """Softmax probabilities ``(N, K)`` for a uint8 image tensor."""
    model.eval()
    out = [F.softmax(model(normalise(images[i:i + batch_size])), 1) for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


def auc_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC on the positive column, or macro one-vs-rest AUC; nan if one class only."""
    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=np.arange(proba.shape[1])))


def fit(
    model: torch.nn.Module,
    train: tuple[torch.Tensor, np.ndarray],
    val: tuple[torch.Tensor, np.ndarray],
    cfg: TrainConfig,
    *,
    num_classes: int,
    seed: int,
    out_dir: Path,
    progress: Progress | None = None,
) -> FitResult:
    """Train ``model`` and write ``model.safetensors`` (best epoch) and ``history.csv``.

    Parameters
    ----------
    train, val : (uint8 tensor N×C×H×W, int labels)
    cfg : TrainConfig
    num_classes : int
    seed : int
    out_dir : path
        The fold directory.
    progress : rich Progress, optional
        Adds one task advancing per batch.
    """
    seed_everything(seed)
    x, y = train
    xv, yv = val
    gen = torch.Generator().manual_seed(seed)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weight = torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, steps_per_epoch // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
    )
    yt = torch.from_numpy(y.astype(np.int64))
    task = progress.add_task(f"train {out_dir.name}", total=total) if progress else None
    rows, best = [], (-1, -math.inf)
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        losses = []
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            xb = normalise(x[idx])
            if cfg.augment:
                xb = augment(xb, gen)
            loss = F.cross_entropy(model(xb), yt[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if task is not None:
                progress.advance(task)
        proba = predict_proba(model, xv)
        val_loss = float(F.nll_loss(torch.log(torch.from_numpy(proba).clamp_min(1e-12)), torch.from_numpy(yv.astype(np.int64))))
        val_auc = auc_score(yv, proba)
        rows.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_auc": val_auc,
                     "lr": opt.param_groups[0]["lr"]})
        score = val_auc if not math.isnan(val_auc) else -val_loss
        if score > best[1]:
            best = (epoch, score)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    if task is not None:
        progress.remove_task(task)
    history = pd.DataFrame(rows)
    history.to_csv(out_dir / "history.csv", index=False)
    return FitResult(best_epoch=best[0], best_val_auc=float(history["val_auc"].iloc[best[0]]), history=history)
