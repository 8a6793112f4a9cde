"""The one epoch loop that the task loops hand their model, loss and validation to.

:func:`run_epochs` owns what every training loop shares: the epochs and their optimiser
steps (zero grad, backward, optional gradient clipping, optimiser and scheduler step),
the progress task, the history rows and ``history.csv``, the best weights in
``model.safetensors``, the resumable ``last.pt`` (fingerprint, weights, optimiser until
the last epoch, scheduler, random states, history, best score) and resuming from it, the
``on_epoch_end`` hook, the DDP buffer broadcast before validation, and writing on rank 0
only. A task supplies an :class:`EpochTask`: its model, a per-batch loss, its batch order
and its validation score (:func:`medlens.train.loop.fit`, :func:`medlens.detection.train.fit_detector`,
:func:`medlens.seg.train.fit_segnet`, :func:`medlens.ssl.pretraining.pretrain`), and the
classification loop's extras as hooks: an AMP gradient scaler, a weight EMA, precise BN
before validation, validations only every few epochs, early stopping, checkpoints at most
every ``checkpoint_interval`` seconds.

The engine draws no random number and adds no float operation of its own: a task moved
onto it trains to bit-identical weights, and a run killed after an epoch resumes to the
weights of an uninterrupted one (CPU, same seed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import Progress
from safetensors.torch import save_file

from medlens.train.checkpoint import LAST, AsyncSaver, resumable_state, snapshot
from medlens.train.distributed import dist_info

__all__ = ["EpochTask", "Trained", "run_epochs"]

log = logging.getLogger(__name__)

Score = tuple[float, ...]
"""A validation score, compared in order (higher is better): the epoch with the highest is kept."""


@dataclass
class EpochTask:
    """What a task hands :func:`run_epochs`.

    Attributes
    ----------
    model : torch.nn.Module
        The unwrapped network: put in train mode every epoch and checkpointed as ``model``.
    optimizer : torch.optim.Optimizer
    scheduler : torch.optim.lr_scheduler.LRScheduler
        Stepped after every optimiser step.
    epochs : int
    steps_per_epoch : int
        A resumed run's progress starts at ``start × steps_per_epoch``.
    batches : callable
        ``batches(epoch)`` yields the epoch's batches in order (anything ``loss`` takes);
        it draws the epoch's order (from ``generator``) when first iterated.
    loss : callable
        ``loss(batch)``: the batch's loss (forward pass, augmentation and targets included).
    evaluate : callable
        ``evaluate(epoch, losses) -> (score, row)`` after a validated epoch, with the
        ``loss.item()`` values since the last validation: the validation :data:`Score`
        (None: nothing is validated, ``model.safetensors`` is not written) and the history
        row's columns after ``epoch``.
    generator : torch.Generator, optional
        The task's generator of batch orders and augmentation, checkpointed and restored.
    clip_params : list of tensors, optional
        Parameters whose gradient norm is clipped to ``clip`` before every step.
    clip : float, optional
    scaler : torch.amp.GradScaler, optional
        Mixed precision: the loss is scaled for ``backward`` and the gradients unscaled
        before clipping (checkpoint it through ``state``).
    after_step : callable, optional
        Called after every scheduler step (e.g. a weight EMA's update).
    state : dict
        Further objects with ``state_dict`` / ``load_state_dict`` (learned loss weights,
        the scaler, an EMA), checkpointed under their keys.
    total_steps : int, optional
        The progress task's length (default ``epochs × steps_per_epoch``).
    validate_every : int
        Validate (then write the history, checkpoint, call ``on_epoch_end``) after every
        ``validate_every``-th epoch and after the last.
    before_validation : callable, optional
        Called before the validation (and before the DDP buffer broadcast), e.g. precise BN.
    validated : torch.nn.Module, optional
        The network validated and kept (default ``model``; e.g. an EMA of it): its buffers
        are broadcast from rank 0 before validation.
    best_weights : callable, optional
        The tensors written to ``model.safetensors`` when the score improves (default:
        ``validated``'s state dict on the CPU).
    patience : int, optional
        Stop after this many validations without a better score.
    checkpoint : bool
        Write ``last.pt``.
    checkpoint_interval : float
        Seconds between checkpoints (the last validated epoch always writes one).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    steps_per_epoch: int
    batches: Callable[[int], Iterable[Any]]
    loss: Callable[[Any], torch.Tensor]
    evaluate: Callable[[int, list[float]], tuple[Score | None, dict]]
    generator: torch.Generator | None = None
    clip_params: list[torch.Tensor] | None = None
    clip: float | None = None
    scaler: torch.amp.GradScaler | None = None
    after_step: Callable[[], None] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    total_steps: int | None = None
    validate_every: int = 1
    before_validation: Callable[[], None] | None = None
    validated: torch.nn.Module | None = None
    best_weights: Callable[[], dict[str, torch.Tensor]] | None = None
    patience: int | None = None
    checkpoint: bool = True
    checkpoint_interval: float = 0.0


@dataclass
class Trained:
    """What :func:`run_epochs` returns: the history (one row per validated epoch) and the kept epoch (-1: none)."""

    history: pd.DataFrame
    best_epoch: int


def _better(score: Score, best: Score | None) -> bool:
    """``score > best``; the first score competes with minus infinity in every place (a NaN never wins)."""
    return score > (best if best is not None else tuple(-math.inf for _ in score))


def _step(task: EpochTask, loss: torch.Tensor) -> None:
    """One optimiser step on ``loss``: backward, clipping, optimiser and scheduler step."""
    opt, scaler = task.optimizer, task.scaler
    opt.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if task.clip is not None:
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(task.clip_params, task.clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    task.scheduler.step()
    if task.after_step is not None:
        task.after_step()


def run_epochs(task: EpochTask, out_dir: Path, *, fingerprint: str, resume: bool | str, command: str,
               label: str, progress: Progress | None = None, on_epoch_end: Callable[[int], None] | None = None,
               covers: str = "") -> Trained:
    """Train ``task`` for its epochs; rank 0 writes ``history.csv``, ``last.pt`` and ``model.safetensors``.

    After every validated epoch: the validation (buffers broadcast from rank 0 first under
    DDP, so every rank validates alike and keeps the same best epoch), the history row,
    ``model.safetensors`` when the score beats the best so far, ``history.csv``, the
    ``last.pt`` checkpoint (written in the background, from a copy while training goes on)
    and ``on_epoch_end``.

    Parameters
    ----------
    task : EpochTask
    out_dir : path
        Created on rank 0.
    fingerprint : str
        :func:`medlens.train.checkpoint.fingerprint` of the settings; ``last.pt`` resumes
        only when it matches.
    resume : {'auto', True, False}
        As :func:`medlens.train.checkpoint.resumable_state`.
    command : str
        The command named in resume errors.
    label : str
        The progress task's description.
    progress : rich Progress, optional
        One task (rank 0 only) advancing per optimiser step.
    on_epoch_end : callable, optional
        Called with the epoch index after its checkpoint is on disk.
    covers : str
        What the fingerprint covers, for the mismatch message.

    Returns
    -------
    Trained
        The history (a resumed run's earlier epochs included) and the kept epoch.

    Raises
    ------
    StageInputMissing
        ``resume=True`` without a checkpoint.
    ConfigError
        ``resume=True`` with a checkpoint of other settings.
    """
    rank, world = dist_info()
    main = rank == 0
    out_dir = Path(out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model, opt, sched, gen = task.model, task.optimizer, task.scheduler, task.generator
    validated = task.validated if task.validated is not None else model
    rows: list[dict] = []
    best: Score | None = None
    best_epoch, since_best, start, stopped = -1, 0, 0, False
    ckpt = out_dir / LAST
    state = resumable_state(ckpt, fingerprint, resume, command=command, settings=covers)
    if state is not None:
        model.load_state_dict(state["model"])
        if "optimizer" in state:  # (a finished run's checkpoint has none: no step is left to take)
            opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        for key, obj in task.state.items():
            obj.load_state_dict(state[key])
        if gen is not None:
            gen.set_state(state["gen"])
        if "torch_rng" in state:  # (pretraining's checkpoints before the engine have none)
            torch.set_rng_state(state["torch_rng"])
        rows, start = state["history"], state["epoch"] + 1
        kept = state.get("best_score")  # a list; a float in the classification loop's before the engine
        best = None if kept is None else tuple(kept) if isinstance(kept, (list, tuple)) else (kept,)
        best_epoch, since_best = state.get("best_epoch", -1), state.get("since_best", 0)
        stopped = state.get("stopped", False)
    saver, saved_at = AsyncSaver(), time.monotonic()
    total = task.total_steps if task.total_steps is not None else task.epochs * task.steps_per_epoch
    bar = progress.add_task(label, total=total, completed=start * task.steps_per_epoch) \
        if progress is not None and main else None
    try:
        losses: list[float] = []
        for epoch in range(start, task.epochs):
            if stopped:
                break
            model.train()
            for batch in task.batches(epoch):
                loss = task.loss(batch)
                _step(task, loss)
                losses.append(loss.item())
                if bar is not None:
                    progress.advance(bar)
            if (epoch + 1) % task.validate_every and epoch != task.epochs - 1:
                continue  # no validation (and no checkpoint) after this epoch
            if task.before_validation is not None:
                task.before_validation()
            if world > 1:  # every rank validates the same weights and buffers, so all decide alike
                import torch.distributed as dist

                for b in validated.buffers():
                    dist.broadcast(b, 0)
            score, row = task.evaluate(epoch, losses)
            rows.append({"epoch": epoch, **row})
            losses = []
            if score is not None:
                if _better(score, best):
                    best, best_epoch, since_best = score, epoch, 0
                    if main:
                        weights = task.best_weights() if task.best_weights is not None else \
                            {k: v.detach().cpu().contiguous() for k, v in validated.state_dict().items()}
                        save_file(weights, str(out_dir / "model.safetensors"))
                else:
                    since_best += 1
                stopped = task.patience is not None and since_best >= task.patience
            if main:
                pd.DataFrame(rows).to_csv(out_dir / "history.csv", index=False)
                final = stopped or epoch == task.epochs - 1
                if task.checkpoint and (final or time.monotonic() - saved_at >= task.checkpoint_interval):
                    saved_at = time.monotonic()
                    # the finished run's checkpoint leaves out the optimiser state (twice the weights' size
                    # with Adam): no step is left to take with it
                    state = {"fingerprint": fingerprint, "epoch": epoch, "model": model.state_dict(),
                             **({} if final else {"optimizer": opt.state_dict()}), "scheduler": sched.state_dict(),
                             **{key: obj.state_dict() for key, obj in task.state.items()},
                             **({"gen": gen.get_state()} if gen is not None else {}),
                             "torch_rng": torch.get_rng_state(), "history": list(rows), "best_epoch": best_epoch,
                             "best_score": list(best) if best is not None else None, "since_best": since_best,
                             "stopped": stopped}
                    # training goes on after an intermediate checkpoint, so that one is written from a copy
                    saver.save(state if final else snapshot(state), ckpt)
            if on_epoch_end is not None:
                saver.wait()
                on_epoch_end(epoch)
            if stopped:
                log.info("%s: early stop after epoch %d (best %d)", out_dir.name, epoch, best_epoch)
    finally:
        saver.wait()
        if bar is not None:
            progress.remove_task(bar)
    history = pd.DataFrame(rows)
    if main:
        history.to_csv(out_dir / "history.csv", index=False)
    return Trained(history, best_epoch)
