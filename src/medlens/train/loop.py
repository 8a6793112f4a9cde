"""The training loop: one :func:`fit` for every task, alone or under ``torchrun``.

Data sets are small, so images live in memory as one uint8 tensor; each step normalises
a batch, augments it, optionally mixes it (mixup/cutmix) and takes one optimiser step.
After every epoch the model is validated, the best epoch (by validation AUC or loss) is
written to ``model.safetensors``, ``history.csv`` is updated, and the full training state
goes to ``last.pt`` so a killed run resumes where it stopped.

Reproducible on CPU: one seed drives initialisation, shuffling, augmentation and mixing,
and a resumed run reaches the same final weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
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
from medlens.data.transforms import cutmix, mixup, one_hot, random_augment
from medlens.train.checkpoint import LAST, AsyncSaver, fingerprint, resumable_state, snapshot
from medlens.config.engine import AugmentConfig, EngineConfig
from medlens.train.distributed import dist_info, pick_device

log = logging.getLogger(__name__)


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
    """Random flips and brightness/contrast jitter on a normalised float batch (the defaults)."""
    return random_augment(batch, gen, AugmentConfig())


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 128,
                  task: str = "classification") -> np.ndarray:
    """Scores ``(N, K)`` for a uint8 image tensor, on the model's device.

    Softmax probabilities for classification (binary: positive score = column 1), sigmoid
    probabilities for multilabel, raw outputs ``(N, 1)`` for regression.
    """
    model.eval()
    dev = next(model.parameters()).device
    act = {"classification": lambda z: F.softmax(z, 1), "multilabel": torch.sigmoid}.get(task, lambda z: z)
    out = [act(model(normalise(images[i:i + batch_size].to(dev))).float()).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


@torch.no_grad()
def precise_bn(model: torch.nn.Module, images: torch.Tensor, device: torch.device, *, batch_size: int = 128,
               max_images: int = 2048) -> None:
    """Recompute every BatchNorm's running mean and variance on un-augmented training images.

    The running statistics that BatchNorm keeps during training are an exponential average
    (momentum 0.1) over the last few augmented batches of 16, taken while the weights move.
    Evaluated with them, a small from-scratch network's validation loss jumps by an order
    of magnitude between epochs even at a tiny learning rate (the demo's fold 0: 0.21 → 1.25
    at lr 2e-4). Exact population statistics of the current weights ("precise BN", Wu &
    Johnson 2021, as :func:`torch.optim.swa_utils.update_bn`) remove that noise.

    Parameters
    ----------
    model : torch.nn.Module
        Left in eval mode.
    images : uint8 tensor (N, C, H, W)
        Training images; at most ``max_images`` (the first ones) are used.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    for i in range(0, min(len(images), max_images), batch_size):
        chunk = images[i:i + batch_size]
        if len(chunk) > 1:
            model(normalise(chunk.to(device)))
    for m, mom in saved.items():
        m.momentum = mom
    model.eval()


def auc_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC on the positive column, macro one-vs-rest AUC, or macro AUC over label columns.

    ``nan`` where a class is missing.
    """
    if y.ndim == 2:  # multilabel: macro over columns with both classes
        aucs = [roc_auc_score(y[:, j], proba[:, j]) for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
        return float(np.mean(aucs)) if aucs else float("nan")
    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=np.arange(proba.shape[1])))


class _Objective:
    """Loss and validation metrics of one task, with the imbalance correction."""

    def __init__(self, task: str, y: np.ndarray, num_classes: int, imbalance: str,
                 label_smoothing: float = 0.0) -> None:
        self.task, self.k, self.smoothing = task, num_classes, label_smoothing
        self.weight = self.pos_weight = None
        if task == "classification" and imbalance == "class_weight":
            counts = np.bincount(y, minlength=num_classes).astype(np.float64)
            self.weight = torch.tensor(counts.sum() / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)
        if task == "multilabel" and imbalance == "class_weight":
            pos = y.sum(0)
            self.pos_weight = torch.tensor((len(y) - pos) / np.maximum(pos, 1), dtype=torch.float32)

    def targets(self, y: np.ndarray) -> torch.Tensor:
        if self.task == "classification":
            return torch.from_numpy(y.astype(np.int64))
        return torch.from_numpy(y.astype(np.float32).reshape(len(y), -1))

    def sample_weights(self, y: np.ndarray) -> torch.Tensor:
        """Per-sample weights for the balanced sampler (inverse class frequency)."""
        labels = y if self.task == "classification" else (y.reshape(len(y), -1)[:, 0] > 0).astype(int)
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        return torch.tensor(1.0 / np.maximum(counts[labels], 1), dtype=torch.float64)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        dev = logits.device
        if self.task == "classification":
            w = None if self.weight is None else self.weight.to(dev)
            if target.ndim == 1:
                return F.cross_entropy(logits, target, weight=w, label_smoothing=self.smoothing)
            target = target * (1 - self.smoothing) + self.smoothing / self.k
            per = -(target * F.log_softmax(logits, 1))  # soft targets from mixup / cutmix
            return (per * w).sum(1).mean() if w is not None else per.sum(1).mean()
        if self.task == "multilabel":
            pw = None if self.pos_weight is None else self.pos_weight.to(dev)
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
        return F.mse_loss(logits, target)

    def prior_shift(self) -> np.ndarray:
        """Logit shift ``-log(class weight)`` that turns a class-weighted model's scores back into
        probabilities at the training prevalence (weighted cross-entropy learns p(c|x)·w_c)."""
        return -np.log(self.weight.numpy().astype(np.float64))

    def validate(self, proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """``(val_loss, val_auc)``; AUC is nan for regression."""
        if self.task == "classification":
            loss = F.nll_loss(torch.log(torch.from_numpy(proba).clamp_min(1e-12)), torch.from_numpy(y.astype(np.int64)))
            return float(loss), auc_score(y, proba)
        if self.task == "multilabel":
            p = torch.from_numpy(proba).clamp(1e-7, 1 - 1e-7)
            return float(F.binary_cross_entropy(p, torch.from_numpy(y.astype(np.float64)))), auc_score(y, proba)
        return float(np.mean((proba.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2)), float("nan")


def _schedule(engine: EngineConfig, steps_per_epoch: int, total: int) -> Callable[[int], float]:
    steps_per_epoch, total = max(1, steps_per_epoch), max(1, total)  # (empty parts are refused by the split check)
    # warm-up in epochs, but at most a tenth of training: with a step budget a large set may get
    # fewer steps than one epoch, and the learning rate must still reach its peak
    warmup = max(1, min(int(engine.warmup_epochs * steps_per_epoch), total // 10))
    step_len = engine.step_epochs * steps_per_epoch

    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / warmup)
        if engine.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
        if engine.schedule == "step":
            return warm * engine.step_gamma ** (s // step_len)
        return warm

    return factor


def _optimizer(model: torch.nn.Module, cfg: TrainConfig, engine: EngineConfig) -> torch.optim.Optimizer:
    if engine.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=engine.momentum, weight_decay=cfg.weight_decay,
                               nesterov=engine.momentum > 0)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _epoch_order(n: int, epoch: int, gen: torch.Generator, *, seed: int, weights: torch.Tensor | None) -> torch.Tensor:
    """Sample indices of one epoch for this rank (DistributedSampler semantics under DDP)."""
    rank, world = dist_info()
    if weights is not None:  # balanced sampler: draws with replacement, same on every rank, then sharded
        order = torch.multinomial(weights, n, replacement=True, generator=gen)
        return order[rank::world] if world > 1 else order
    if world == 1:
        return torch.randperm(n, generator=gen)
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


def _mix(xb: torch.Tensor, target: torch.Tensor, gen: torch.Generator, aug: AugmentConfig, k: int, task: str):
    """Mixup or cutmix (chosen at random when both are on) with soft targets."""
    modes = [m for m, a in (("mixup", aug.mixup_alpha), ("cutmix", aug.cutmix_alpha)) if a > 0]
    if not modes or task == "regression" or float(torch.rand(1, generator=gen)) >= aug.mix_prob:
        return xb, target
    mode = modes[int(torch.randint(0, len(modes), (1,), generator=gen))] if len(modes) > 1 else modes[0]
    soft = one_hot(target, k) if target.ndim == 1 else target
    fn, alpha = (mixup, aug.mixup_alpha) if mode == "mixup" else (cutmix, aug.cutmix_alpha)
    xb, soft, _ = fn(xb, soft.to(xb.device), gen, alpha=alpha)
    return xb, soft


def classifier_bias_key(model: torch.nn.Module) -> str:
    """State-dict key of the bias of a timm classifier's output layer."""
    head = model.get_classifier()
    for name, param in model.named_parameters():
        if param is head.bias:
            return name
    raise ValueError(f"{type(model).__name__}: the classifier has no bias to shift")


def _shift_proba(proba: np.ndarray, shift: np.ndarray) -> np.ndarray:
    p = proba * np.exp(shift - shift.max())
    return p / p.sum(1, keepdims=True)


def array_digest(*arrays) -> str:
    """Content hash of arrays (shape, dtype, bytes), so a checkpoint never resumes on other data."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


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
    engine: EngineConfig = EngineConfig(),
    resume: bool | str = False,
    on_epoch_end: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``model``; write ``model.safetensors`` (best epoch), ``history.csv`` and ``last.pt``.

    Parameters
    ----------
    model : torch.nn.Module
        Built by :func:`medlens.models.create_model` with the task's number of outputs.
    train, val : (uint8 tensor N×C×H×W, targets)
        Targets: int class indices ``(N,)`` (classification), 0/1 array ``(N, K)``
        (multilabel) or float ``(N,)`` (regression).
    cfg : TrainConfig
        Image size, epochs or steps, batch size (per process), learning rate, weight decay,
        augment.
    num_classes : int
        Classes (or label columns); 1 for regression.
    seed : int
    out_dir : path
        The fold directory; only rank 0 writes into it.
    progress : rich Progress, optional
        Adds one task advancing per batch.
    engine : EngineConfig
        Task, optimiser, schedule, imbalance handling (and prior correction), label smoothing,
        weight EMA, validations, early stopping, device, augmentation.
    resume : {False, True, 'auto'}
        True continues from ``out_dir/last.pt`` and fails if there is none or it was written
        with other settings; 'auto' continues only from a matching checkpoint.
    on_epoch_end : callable, optional
        Called with the epoch index after its checkpoint is on disk.

    Raises
    ------
    StageInputMissing
        ``resume=True`` without a checkpoint.
    ConfigError
        ``resume=True`` with a checkpoint of other settings.
    """
    rank, world = dist_info()
    main = rank == 0
    device = pick_device(engine.device)
    out_dir = Path(out_dir)
    seed_everything(seed)
    x, y = train
    xv, yv = val
    gen = torch.Generator().manual_seed(seed)
    obj = _Objective(engine.task, y, num_classes, engine.imbalance, engine.label_smoothing)
    shift = obj.prior_shift() if engine.prior_correction else None
    net = model.to(device)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    opt = _optimizer(model, cfg, engine)
    weights = obj.sample_weights(y) if engine.imbalance == "sampler" else None
    per_rank = math.ceil(len(x) / world)
    steps_per_epoch = math.ceil(per_rank / cfg.batch_size)
    total = cfg.steps if cfg.steps is not None else max(cfg.epochs * steps_per_epoch, cfg.min_steps or 0)
    epochs = math.ceil(total / steps_per_epoch)
    every = math.ceil(epochs / engine.max_validations)  # validate every `every` epochs and after the last
    ema = None
    if engine.ema is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=engine.ema, use_warmup=True)
    kept = ema.module if ema is not None else model  # the weights that are validated and saved
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(engine, steps_per_epoch, total))
    use_amp = engine.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    yt = obj.targets(y)

    settings = {"train": cfg.model_dump(mode="json"), "seed": seed,
                "engine": engine.model_dump(mode="json", exclude={"checkpoint", "checkpoint_interval"}),
                "classes": num_classes, "data": array_digest(x, y, xv, yv), "world": world, "model": type(model).__name__,
                "params": sum(p.numel() for p in model.parameters())}
    fp = fingerprint(settings)
    rows: list[dict] = []
    best, since_best, start, stopped = (-1, -math.inf), 0, 0, False
    ckpt = out_dir / LAST
    state = resumable_state(ckpt, fp, resume, command="train", settings=" (model, train, engine, seed or data)")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        rows, best = state["history"], (state["best_epoch"], state["best_score"])
        since_best, start, stopped = state["since_best"], state["epoch"] + 1, state["stopped"]

    saver, saved_at = AsyncSaver(), time.monotonic()
    task = progress.add_task(f"train {out_dir.name}", total=total, completed=start * steps_per_epoch) \
        if progress is not None and main else None
    try:
        losses: list[float] = []
        for epoch in range(start, epochs):
            if stopped:
                break
            net.train()
            order = _epoch_order(len(x), epoch, gen, seed=seed, weights=weights)
            n_steps = min(steps_per_epoch, total - epoch * steps_per_epoch)  # the last epoch of a step budget
            for i in range(0, min(len(order), n_steps * cfg.batch_size), cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                if len(idx) < 2:
                    continue  # batch norm needs two samples
                xb = normalise(x[idx].to(device, non_blocking=True))
                target = yt[idx].to(device, non_blocking=True)
                if cfg.augment:
                    xb = random_augment(xb, gen, engine.augment)
                    xb, target = _mix(xb, target, gen, engine.augment, num_classes, engine.task)
                with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
                    loss = obj.loss(net(xb), target)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if engine.grad_clip is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), engine.grad_clip)
                scaler.step(opt)
                scaler.update()
                sched.step()
                if ema is not None:
                    ema.update(model, step=int(sched.last_epoch))
                losses.append(loss.item())
                if task is not None:
                    progress.advance(task)
            if (epoch + 1) % every and epoch != epochs - 1:
                continue  # no validation (and no checkpoint) after this epoch
            if engine.precise_bn:
                precise_bn(kept, x, device)
            if world > 1:  # every rank validates the same weights and buffers, so all decide alike
                import torch.distributed as dist

                for b in kept.buffers():
                    dist.broadcast(b, 0)
            proba = predict_proba(kept, xv, task=engine.task)
            if shift is not None:
                proba = _shift_proba(proba, shift)
            val_loss, val_auc = obj.validate(proba, yv)
            monitor = "auc" if engine.monitor == "auc" and not math.isnan(val_auc) else "loss"
            rows.append({"epoch": epoch, "step": int(sched.last_epoch),
                         "train_loss": float(np.mean(losses)) if losses else float("nan"),
                         "val_loss": val_loss, "val_auc": val_auc, "lr": opt.param_groups[0]["lr"], "monitor": monitor})
            losses = []
            score = val_auc if monitor == "auc" else -val_loss
            if score > best[1]:
                best, since_best = (epoch, score), 0
                if main:
                    kept_state = {k: v.detach().cpu().contiguous() for k, v in kept.state_dict().items()}
                    if shift is not None:  # the saved model itself predicts at the training prevalence
                        key = classifier_bias_key(kept)
                        kept_state[key] = kept_state[key] + torch.from_numpy(shift).to(kept_state[key].dtype)
                    save_file(kept_state, str(out_dir / "model.safetensors"))
            else:
                since_best += 1
            stopped = engine.early_stopping is not None and since_best >= engine.early_stopping
            if main:
                pd.DataFrame(rows).to_csv(out_dir / "history.csv", index=False)
                final = stopped or epoch == epochs - 1
                if engine.checkpoint and (final or time.monotonic() - saved_at >= engine.checkpoint_interval):
                    saved_at = time.monotonic()
                    state = {
                        "fingerprint": fp, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "gen": gen.get_state(),
                        "torch_rng": torch.get_rng_state(), "history": list(rows), "best_epoch": best[0],
                        "best_score": best[1], "since_best": since_best, "stopped": stopped,
                        **({"ema": ema.module.state_dict()} if ema is not None else {})}
                    # training goes on after an intermediate checkpoint, so that one is written from a copy
                    saver.save(state if final else snapshot(state), ckpt)
            if on_epoch_end is not None:
                saver.wait()
                on_epoch_end(epoch)
            if stopped:
                log.info("%s: early stop after epoch %d (best %d)", out_dir.name, epoch, best[0])
    finally:
        saver.wait()
        if task is not None:
            progress.remove_task(task)
    history = pd.DataFrame(rows)
    if main:
        history.to_csv(out_dir / "history.csv", index=False)
    return FitResult(best_epoch=best[0], best_val_auc=float(history.loc[history["epoch"] == best[0], "val_auc"].iloc[0]),
                     history=history)
