"""Training and inference of :class:`~medlens.seg.models.SegNet` on in-memory tensors.

Whole-image or patch training (random crops, half of them centred on a lesion pixel),
sliding-window inference (MONAI) for patch-trained models, flips/rot90 applied to image
and mask together, and the best epoch kept by a validation score: pooled Dice
(segmentation), AUC (classifier) or their mean (multi-task). Seeded: reproducible on CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress
from safetensors.torch import save_file

from medlens.config import TrainConfig
from medlens.data.arrays import normalise
from medlens.seg.config import SegConfig
from medlens.seg.data import SegArrays
from medlens.seg.losses import MultiTaskLoss, segmentation_loss, severity_from_output, severity_loss
from medlens.seg.models import SegNet

__all__ = ["fit_segnet", "predict"]


def _seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _augment(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random flips and rot90 on image and mask; brightness/contrast jitter on the image."""
    n = x.shape[0]
    for dim, flag in ((3, torch.rand(n, generator=gen) < 0.5), (2, torch.rand(n, generator=gen) < 0.5)):
        x = torch.where(flag[:, None, None, None], x.flip(dim), x)
        m = torch.where(flag[:, None, None, None], m.flip(dim), m)
    rot = torch.rand(n, generator=gen) < 0.5
    x = torch.where(rot[:, None, None, None], x.transpose(2, 3), x)
    m = torch.where(rot[:, None, None, None], m.transpose(2, 3), m)
    gain = 1 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return x * gain + bias, m


def _crop(x: torch.Tensor, m: torch.Tensor, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``size`` patches; half centred on a random lesion pixel where there is one."""
    h, w = x.shape[2:]
    xs, ms = [], []
    for i in range(x.shape[0]):
        fg = torch.nonzero(m[i, 0])
        if len(fg) and torch.rand(1, generator=gen).item() < 0.5:
            cy, cx = fg[int(torch.randint(len(fg), (1,), generator=gen))].tolist()
            y0 = min(max(cy - size // 2, 0), h - size)
            x0 = min(max(cx - size // 2, 0), w - size)
        else:
            y0 = int(torch.randint(h - size + 1, (1,), generator=gen))
            x0 = int(torch.randint(w - size + 1, (1,), generator=gen))
        xs.append(x[i, :, y0:y0 + size, x0:x0 + size])
        ms.append(m[i, :, y0:y0 + size, x0:x0 + size])
    return torch.stack(xs), torch.stack(ms)


@torch.no_grad()
def predict(model: SegNet, images: torch.Tensor, *, patch_size: int | None = None, batch_size: int = 64) -> dict:
    """Outputs for a uint8 image tensor ``N×C×H×W``.

    Returns
    -------
    dict
        ``seg_prob`` float32 ``N×H×W`` (if the model segments), ``cls_prob`` ``(N,)``
        probability of the positive class (if it classifies), ``severity`` ``(N,)`` grade
        (if it has a severity head).
    """
    model.eval()
    out: dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        x = normalise(images[i:i + batch_size])
        if patch_size is not None and model.seg_head:
            from monai.inferers import sliding_window_inference

            seg = sliding_window_inference(x, (patch_size, patch_size), sw_batch_size=batch_size,
                                           predictor=lambda t: model(t)["seg"], overlap=0.25, mode="gaussian")
            res = {"seg": seg}
        else:
            res = model(x)
        if "seg" in res:
            out.setdefault("seg_prob", []).append(torch.sigmoid(res["seg"][:, 0]))
        if "cls" in res:
            out.setdefault("cls_prob", []).append(F.softmax(res["cls"], 1)[:, 1])
        if "severity" in res:
            out.setdefault("severity", []).append(severity_from_output(res["severity"]))
    return {k: torch.cat(v).numpy().astype(np.float32 if k == "seg_prob" else np.float64) for k, v in out.items()}


def _val_score(model: SegNet, val: SegArrays, seg_cfg: SegConfig) -> dict[str, float]:
    from medlens.seg.metrics import dice_score

    p = predict(model, val.images, patch_size=seg_cfg.patch_size)
    res = {}
    if "seg_prob" in p:
        res["val_dice"] = dice_score(val.masks[:, 0].numpy().ravel()[None], (p["seg_prob"] > seg_cfg.threshold).ravel()[None])
    if "cls_prob" in p and len(np.unique(val.labels)) == 2:
        from medlens.evaluate import auc_score

        res["val_auc"] = float(auc_score(val.labels, p["cls_prob"]))
    return res


def fit_segnet(model: SegNet, train: SegArrays, val: SegArrays, train_cfg: TrainConfig, seg_cfg: SegConfig, *,
               seed: int, out_dir: Path, progress: Progress | None = None) -> pd.DataFrame:
    """Train ``model``; write ``model.safetensors`` (best epoch) and ``history.csv`` into ``out_dir``.

    Parameters
    ----------
    model : SegNet
        Its heads decide the losses: segmentation (Dice + BCE/focal), classification
        (class-weighted cross-entropy), severity (smooth-L1 or ordinal BCE).
    train, val : SegArrays
    train_cfg : TrainConfig
        epochs, batch_size, lr, weight_decay, augment.
    seg_cfg : SegConfig
        loss, task weights and weighting, patch size, threshold.
    seed : int
    out_dir : path

    Returns
    -------
    pandas.DataFrame
        The history (one row per epoch), also written to ``history.csv``.
    """
    _seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    seg_loss = segmentation_loss(seg_cfg.loss) if model.seg_head else None
    weights = {"seg": seg_cfg.seg_weight if model.seg_head else 0.0,
               "cls": (seg_cfg.cls_weight if model.seg_head else 1.0) if model.cls is not None else 0.0,
               "severity": seg_cfg.severity_weight if model.severity is not None else 0.0}
    combine = MultiTaskLoss(weights, uncertainty=seg_cfg.loss_weighting == "uncertainty" and len(
        [w for w in weights.values() if w > 0]) > 1)
    counts = np.bincount(train.labels, minlength=2).astype(float)
    cls_w = torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)
    params = list(model.parameters()) + list(combine.parameters())
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    steps = math.ceil(len(train) / train_cfg.batch_size)
    total, warmup = train_cfg.epochs * steps, max(1, steps // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    y = torch.from_numpy(train.labels.astype(np.int64))
    sev = torch.from_numpy(np.nan_to_num(train.severity, nan=0.0))
    task = progress.add_task(f"seg {out_dir.name}", total=total) if progress else None
    rows, best = [], -math.inf
    for epoch in range(train_cfg.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        losses: list[float] = []
        part_losses: dict[str, list[float]] = {}
        for i in range(0, len(train), train_cfg.batch_size):
            idx = perm[i:i + train_cfg.batch_size]
            if len(idx) < 2:
                continue
            xb, mb = normalise(train.images[idx]), train.masks[idx].float()
            if seg_cfg.patch_size is not None:
                xb, mb = _crop(xb, mb, seg_cfg.patch_size, gen)
            if train_cfg.augment:
                xb, mb = _augment(xb, mb, gen)
            out = model(xb)
            parts = {}
            if seg_loss is not None:
                parts["seg"] = seg_loss(out["seg"], mb)
            if "cls" in out:
                parts["cls"] = F.cross_entropy(out["cls"], y[idx], weight=cls_w)
            if "severity" in out:
                parts["severity"] = severity_loss(out["severity"], sev[idx])
            loss = combine(parts)
            for k, v in parts.items():
                part_losses.setdefault(k, []).append(v.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if task is not None:
                progress.advance(task)
        scores = _val_score(model, val, seg_cfg)
        score = float(np.nanmean(list(scores.values()))) if scores else -float(np.mean(losses))
        rows.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                     **{f"loss_{k}": float(np.mean(v)) for k, v in part_losses.items()}, **scores, "score": score,
                     "lr": opt.param_groups[0]["lr"]})
        if score > best:
            best = score
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    if task is not None:
        progress.remove_task(task)
    history = pd.DataFrame(rows)
    history.to_csv(out_dir / "history.csv", index=False)
    return history
