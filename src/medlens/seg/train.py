"""Training and inference of :class:`~medlens.seg.models.SegNet` on in-memory tensors.

Whole-image or patch training (random crops, half of them centred on a lesion pixel),
or full-resolution patch training on lists of images of any size (:class:`PatchSampler`);
sliding-window inference (MONAI) for patch-trained models, flips/rot90 applied to image
and mask together, and the best epoch kept by a validation score: pooled Dice
(segmentation), AUC (classifier), their mean (multi-task), or pooled F1 at the best
threshold (full resolution). Seeded: reproducible on CPU; the epochs run on
:func:`medlens.train.engine.run_epochs`, so ``last.pt`` lets a killed run resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress

from medlens.config import TrainConfig
from medlens.data.arrays import normalise
from medlens.config.seg import SegConfig
from medlens.seg.data import SegArrays
from medlens.seg.losses import MultiTaskLoss, segmentation_loss, severity_from_output, severity_loss
from medlens.seg.models import SegNet
from medlens.train.checkpoint import fingerprint
from medlens.train.engine import EpochTask, run_epochs
from medlens.train.loop import array_digest, seed_everything
from medlens.train.schedule import warmup_schedule

__all__ = ["data_digest", "fit_segnet", "predict"]


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


class PatchSampler:
    """Random training patches of full-resolution images (:class:`~medlens.seg.fullres.FullResImage`).

    A share ``foreground_fraction`` of the patches is centred on a random foreground pixel
    (vessel or lesion: the thin structures and their boundaries are what the loss must
    see), the others on a random field-of-view pixel. Images smaller than the patch are
    zero-padded. Coordinates are indexed once, so a draw costs no search.
    """

    def __init__(self, items: list, size: int, foreground_fraction: float) -> None:
        self.items, self.size, self.fg = items, int(size), float(foreground_fraction)
        self.fg_idx = [np.flatnonzero(it.mask) for it in items]
        self.fov_idx = [np.flatnonzero(it.fov) for it in items]

    def __call__(self, image_ids: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, s = len(image_ids), self.size
        u = torch.rand(n, 2, generator=gen).numpy()
        x = np.zeros((n, self.items[0].image.shape[0], s, s), np.float32)
        m = np.zeros((n, 1, s, s), np.float32)
        for j, i in enumerate(image_ids):
            it = self.items[i]
            h, w = it.mask.shape
            pool = self.fg_idx[i] if u[j, 0] < self.fg and self.fg_idx[i].size else self.fov_idx[i]
            cy, cx = divmod(int(pool[min(int(u[j, 1] * pool.size), pool.size - 1)]), w) if pool.size else (h // 2, w // 2)
            y0, x0 = min(max(cy - s // 2, 0), max(h - s, 0)), min(max(cx - s // 2, 0), max(w - s, 0))
            ph, pw = min(s, h - y0), min(s, w - x0)
            x[j, :, :ph, :pw] = it.image[:, y0:y0 + ph, x0:x0 + pw]
            m[j, 0, :ph, :pw] = it.mask[y0:y0 + ph, x0:x0 + pw]
        return torch.from_numpy(x), torch.from_numpy(m)


def _windows(model: SegNet, x: torch.Tensor, patch_size: int, batch_size: int, overlap: float) -> torch.Tensor:
    """Sigmoid probabilities of a float batch by MONAI's Gaussian-weighted sliding window."""
    from monai.inferers import sliding_window_inference

    roi = (2 * patch_size, 2 * patch_size)  # twice the training patch: fewer seams, same receptive field
    return sliding_window_inference(x, roi, sw_batch_size=batch_size, predictor=lambda t: torch.sigmoid(model(t)["seg"]),
                                    overlap=overlap, mode="gaussian")


@torch.no_grad()
def predict_fullres(model: SegNet, items: list, *, patch_size: int, flips: bool = False, overlap: float = 0.25,
                    batch_size: int = 8) -> list[np.ndarray]:
    """Foreground probability ``h×w`` (float32, working scale) of each full-resolution image.

    Sliding-window inference over the whole image (windows of twice the patch size,
    overlapping by ``overlap``, Gaussian-weighted); with ``flips`` the mean over the
    image and its horizontal, vertical and double flips.
    """
    model.eval()
    out = []
    for it in items:
        x = torch.from_numpy(it.image)[None]
        views = [(3,), (2,), (2, 3)] if flips else []
        p = _windows(model, x, patch_size, batch_size, overlap)
        for dims in views:
            p = p + _windows(model, x.flip(dims), patch_size, batch_size, overlap).flip(dims)
        out.append((p / (1 + len(views)))[0, 0].numpy().astype(np.float32))
    return out


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


def _val_score(model: SegNet, val, seg_cfg: SegConfig) -> dict[str, float]:
    from medlens.seg.metrics import dice_score

    if isinstance(val, list):  # full resolution: pooled F1 at the best threshold, inside the FOV
        from medlens.seg.pixels import best_threshold, pixel_counts, scores_from_counts

        prob = predict_fullres(model, val, patch_size=seg_cfg.patch_size)
        truth, fov = [it.mask for it in val], [it.fov for it in val]
        t = best_threshold(truth, prob, fov)
        return {"val_f1": scores_from_counts(*pixel_counts(truth, prob, fov, threshold=t).sum(0))["f1"]}
    p = predict(model, val.images, patch_size=seg_cfg.patch_size)
    res = {}
    if "seg_prob" in p:
        res["val_dice"] = dice_score(val.masks[:, 0].numpy().ravel()[None], (p["seg_prob"] > 0.5).ravel()[None])
    if "cls_prob" in p and len(np.unique(val.labels)) == 2:
        from medlens.evaluate import auc_score

        res["val_auc"] = float(auc_score(val.labels, p["cls_prob"]))
    return res


def data_digest(part: SegArrays | list) -> str:
    """Content hash of one part's data (whole-image arrays, or full-resolution images)."""
    if isinstance(part, list):
        return array_digest(*(a for im in part for a in (im.image, im.mask, im.fov)))
    return array_digest(part.images, part.masks, part.labels, np.nan_to_num(part.severity, nan=-1.0))


def fit_segnet(model: SegNet, train: SegArrays | list, val: SegArrays | list, train_cfg: TrainConfig,
               seg_cfg: SegConfig, *, seed: int, out_dir: Path, progress: Progress | None = None,
               resume: bool | str = False, on_epoch_end: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Train ``model``; write ``model.safetensors`` (best epoch), ``history.csv`` and ``last.pt`` into ``out_dir``.

    The epochs run on :func:`medlens.train.engine.run_epochs`: ``last.pt`` holds the whole
    training state after every epoch, so a killed run resumes to the same final weights.

    Parameters
    ----------
    model : SegNet
        Its heads decide the losses: segmentation (Dice + BCE/focal), classification
        (class-weighted cross-entropy), severity (smooth-L1 or ordinal BCE).
    train, val : SegArrays, or lists of :class:`~medlens.seg.fullres.FullResImage`
        Full-resolution lists train on ``seg_cfg.patches_per_image`` patches per image
        and epoch (:class:`PatchSampler`) and validate by sliding window.
    train_cfg : TrainConfig
        epochs, batch_size, lr, weight_decay, augment.
    seg_cfg : SegConfig
        loss, task weights and weighting, patch size, threshold.
    seed : int
    out_dir : path
    progress : rich Progress, optional
        Adds one task advancing per batch.
    resume : {False, True, 'auto'}
        As :func:`medlens.train.loop.fit`: 'auto' continues from a ``last.pt`` written with
        the same settings and data, True requires one.
    on_epoch_end : callable, optional
        Called with the epoch index after its checkpoint is on disk.

    Returns
    -------
    pandas.DataFrame
        The history (one row per epoch), also written to ``history.csv``.
    """
    seed_everything(seed)
    out_dir = Path(out_dir)
    gen = torch.Generator().manual_seed(seed)
    seg_loss = segmentation_loss(seg_cfg.loss) if model.seg_head else None
    weights = {"seg": seg_cfg.seg_weight if model.seg_head else 0.0,
               "cls": (seg_cfg.cls_weight if model.seg_head else 1.0) if model.cls is not None else 0.0,
               "severity": seg_cfg.severity_weight if model.severity is not None else 0.0}
    combine = MultiTaskLoss(weights, uncertainty=seg_cfg.loss_weighting == "uncertainty" and len(
        [w for w in weights.values() if w > 0]) > 1)
    fullres = isinstance(train, list)
    sampler = PatchSampler(train, seg_cfg.patch_size, seg_cfg.foreground_fraction) if fullres else None
    draws = len(train) * (seg_cfg.patches_per_image if fullres else 1)
    labels = np.zeros(len(train), int) if fullres else train.labels
    counts = np.bincount(labels, minlength=2).astype(float)
    cls_w = torch.tensor(counts.sum() / (2 * np.maximum(counts, 1)), dtype=torch.float32)
    params = list(model.parameters()) + list(combine.parameters())
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    steps = math.ceil(draws / train_cfg.batch_size)
    total = train_cfg.epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(total, max(1, steps // 2)))  # half an epoch
    y = torch.from_numpy(labels.astype(np.int64))
    sev = torch.zeros(len(train)) if fullres else torch.from_numpy(np.nan_to_num(train.severity, nan=0.0))
    settings = {"train": train_cfg.model_dump(mode="json"), "seg": seg_cfg.model_dump(mode="json"), "seed": seed,
                "model": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
                "data": [data_digest(train), data_digest(val)]}
    part_losses: dict[str, list[float]] = {}

    def batches(epoch: int):
        part_losses.clear()
        perm = torch.randperm(draws, generator=gen) % len(train)
        for i in range(0, draws, train_cfg.batch_size):
            idx = perm[i:i + train_cfg.batch_size]
            if len(idx) >= 2:
                yield idx

    def loss(idx: torch.Tensor) -> torch.Tensor:
        if fullres:
            xb, mb = sampler(idx.numpy(), gen)
        else:
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
        for k, v in parts.items():
            part_losses.setdefault(k, []).append(v.item())
        return combine(parts)

    def evaluate(epoch: int, losses: list[float]) -> tuple[tuple[float], dict]:
        scores = _val_score(model, val, seg_cfg)
        score = float(np.nanmean(list(scores.values()))) if scores else -float(np.mean(losses))
        return (score,), {"train_loss": float(np.mean(losses)),
                          **{f"loss_{k}": float(np.mean(v)) for k, v in part_losses.items()}, **scores, "score": score,
                          "lr": opt.param_groups[0]["lr"]}

    task = EpochTask(model, opt, sched, train_cfg.epochs, steps, batches, loss, evaluate, generator=gen,
                     clip_params=params, clip=5.0, state={"loss_weights": combine})
    return run_epochs(task, out_dir, fingerprint=fingerprint(settings), resume=resume, command="run",
                      label=f"seg {out_dir.name}", progress=progress, on_epoch_end=on_epoch_end).history
