"""The training loop: one :func:`fit` for every task, alone or under ``torchrun``.

Images come from the run's image cache (:class:`~medlens.data.cache.ImageCache`, read batch
by batch through a ``DataLoader``) or from a uint8 tensor in memory; each step normalises
a batch, augments it, optionally mixes it (mixup/cutmix) and takes one optimiser step.
After every epoch the model is validated, the best epoch (by validation AUC or loss) is
written to ``model.safetensors``, ``history.csv`` is updated, and the full training state
goes to ``last.pt`` so a killed run resumes where it stopped: the epochs run on
:func:`medlens.train.engine.run_epochs`, which :func:`fit` hands its loss, batch order and
validation.

Reproducible on CPU: one seed drives initialisation, shuffling, augmentation and mixing,
and a resumed run reaches the same final weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rich.progress import Progress

from medlens.config import TrainConfig
from medlens.data.arrays import normalise
from medlens.data.cache import ImageCache
from medlens.data.transforms import cutmix, mixup, one_hot, random_augment
from medlens.evaluate.metrics import auc_score
from medlens.train.checkpoint import fingerprint
from medlens.config.engine import AugmentConfig, EngineConfig
from medlens.train.distributed import dist_info, pick_device
from medlens.train.engine import EpochTask, run_epochs
from medlens.train.schedule import warmup_schedule


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


def _as_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch


def read_batches(images: torch.Tensor | ImageCache, batches: list[torch.Tensor], device: torch.device,
                 workers: int = 0):
    """Yield the uint8 batches ``images[idx]`` for each index tensor of ``batches``, in order.

    An :class:`~medlens.data.cache.ImageCache` is read through a ``DataLoader`` (``workers``
    processes, pinned memory on CUDA), so only the batches in flight are in memory; a tensor
    already in memory is indexed directly.
    """
    if not isinstance(images, ImageCache):
        for idx in batches:
            yield images[idx]
        return
    from torch.utils.data import DataLoader

    # a private generator: the loader's base seed must not draw from torch's global stream
    yield from DataLoader(images, batch_sampler=[b.tolist() for b in batches], num_workers=workers,
                          pin_memory=device.type == "cuda", collate_fn=_as_batch,
                          generator=torch.Generator().manual_seed(0))


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
    images : uint8 tensor (N, C, H, W) or ImageCache
        Training images; at most ``max_images`` of them, evenly spaced over the set, in
        batches of ``batch_size`` (Detectron2's PreciseBN also bounds its pass).
    """
    from torch.optim.swa_utils import update_bn

    pick = torch.linspace(0, len(images) - 1, min(len(images), max_images)).round().long()
    chunks = (images[idx] for idx in pick.split(batch_size))
    update_bn((normalise(c.to(device)) for c in chunks if len(c) > 1), model)  # one image: no batch statistics
    model.eval()


def validation_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Validation AUC of predicted probabilities, ``nan`` where it is undefined instead of an error.

    The arithmetic is :func:`medlens.evaluate.metrics.auc_score` (Mann-Whitney, tied scores
    count one half); this adds the rules that let a small validation fold without some
    class pass through training.

    Parameters
    ----------
    y : ndarray of shape (n_samples,) or (n_samples, n_labels)
        Class indices 0..K-1, or a 0/1 indicator matrix (multi-label).
    proba : ndarray of shape (n_samples, K) or (n_samples, n_labels)
        Predicted probabilities, one column per class or label.

    Returns
    -------
    float
        Two columns: the AUC of column 1. More classes: the macro one-vs-rest AUC. ``nan``
        when a class is missing from ``y``. Multi-label: the macro AUC over the label columns
        that hold both classes, ``nan`` when none does.
    """
    if y.ndim == 2:
        both = [j for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
        return auc_score(y[:, both], proba[:, both]) if both else float("nan")
    if not np.isin(np.arange(proba.shape[1]), y).all():
        return float("nan")
    return auc_score(y, proba[:, 1] if proba.shape[1] == 2 else proba)


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
            return float(loss), validation_auc(y, proba)
        if self.task == "multilabel":
            p = torch.from_numpy(proba).clamp(1e-7, 1 - 1e-7)
            return float(F.binary_cross_entropy(p, torch.from_numpy(y.astype(np.float64)))), validation_auc(y, proba)
        return float(np.mean((proba.reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2)), float("nan")


def _schedule(engine: EngineConfig, steps_per_epoch: int, total: int) -> Callable[[int], float]:
    """:func:`~medlens.train.schedule.warmup_schedule` of ``engine.schedule``, epochs turned into steps."""
    steps_per_epoch, total = max(1, steps_per_epoch), max(1, total)  # (empty parts are refused by the split check)
    # warm-up in epochs, but at most a tenth of training: with a step budget a large set may get
    # fewer steps than one epoch, and the learning rate must still reach its peak
    warmup = max(1, min(int(engine.warmup_epochs * steps_per_epoch), total // 10))
    return warmup_schedule(total, warmup, decay=engine.schedule, step_every=engine.step_epochs * steps_per_epoch,
                           step_gamma=engine.step_gamma)


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
        if isinstance(a, ImageCache):  # the cache's own content digest: no pass over the pixels
            h.update(a.digest().encode())
            continue
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
    _, world = dist_info()
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
    # precise BN on 1/16 of the images trained between validations (a forward pass is about a third of a
    # training step, so about 2% of training), but at least 256 (a small study's whole training set: 64 images
    # moved the demo's external-site figures) and at most 2048
    bn_images = min(2048, max(256, every * per_rank // 16))
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

    def batches(epoch: int):
        order = _epoch_order(len(x), epoch, gen, seed=seed, weights=weights)
        n_steps = min(steps_per_epoch, total - epoch * steps_per_epoch)  # the last epoch of a step budget
        idx = [b for b in order[:n_steps * cfg.batch_size].split(cfg.batch_size)
               if len(b) > 1]  # batch norm needs two samples
        yield from zip(idx, read_batches(x, idx, device, engine.loader_workers))

    def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        idx, xb = batch
        xb = normalise(xb.to(device, non_blocking=True))
        target = yt[idx].to(device, non_blocking=True)
        if cfg.augment:
            xb = random_augment(xb, gen, engine.augment)
            xb, target = _mix(xb, target, gen, engine.augment, num_classes, engine.task)
        with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
            return obj.loss(net(xb), target)

    def evaluate(epoch: int, losses: list[float]) -> tuple[tuple[float], dict]:
        proba = predict_proba(kept, xv, task=engine.task)
        if shift is not None:
            proba = _shift_proba(proba, shift)
        val_loss, val_auc = obj.validate(proba, yv)
        monitor = "auc" if engine.monitor == "auc" and not math.isnan(val_auc) else "loss"
        return (val_auc if monitor == "auc" else -val_loss,), {
            "step": int(sched.last_epoch), "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "val_loss": val_loss, "val_auc": val_auc, "lr": opt.param_groups[0]["lr"], "monitor": monitor}

    def best_weights() -> dict[str, torch.Tensor]:
        kept_state = {k: v.detach().cpu().contiguous() for k, v in kept.state_dict().items()}
        if shift is not None:  # the saved model itself predicts at the training prevalence
            key = classifier_bias_key(kept)
            kept_state[key] = kept_state[key] + torch.from_numpy(shift).to(kept_state[key].dtype)
        return kept_state

    task = EpochTask(
        model, opt, sched, epochs, steps_per_epoch, batches, loss, evaluate, generator=gen,
        clip_params=list(model.parameters()), clip=engine.grad_clip, scaler=scaler,
        after_step=(lambda: ema.update(model, step=int(sched.last_epoch))) if ema is not None else None,
        state={"scaler": scaler, **({"ema": ema.module} if ema is not None else {})}, total_steps=total,
        validate_every=every, validated=kept, best_weights=best_weights, patience=engine.early_stopping,
        before_validation=(lambda: precise_bn(kept, x, device, max_images=bn_images)) if engine.precise_bn else None,
        checkpoint=engine.checkpoint, checkpoint_interval=engine.checkpoint_interval)
    res = run_epochs(task, out_dir, fingerprint=fingerprint(settings), resume=resume, command="train",
                     label=f"train {out_dir.name}", progress=progress, on_epoch_end=on_epoch_end,
                     covers=" (model, train, engine, seed or data)")
    history = res.history
    return FitResult(best_epoch=res.best_epoch,
                     best_val_auc=float(history.loc[history["epoch"] == res.best_epoch, "val_auc"].iloc[0]),
                     history=history)
