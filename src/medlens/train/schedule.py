"""The learning-rate schedule of every training loop: linear warm-up, then a decay.

:func:`warmup_schedule` returns the per-step factor that ``torch.optim.lr_scheduler.LambdaLR``
multiplies the base learning rate with; the loops call ``sched.step()`` after every
optimiser step, so all lengths are in optimiser steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

__all__ = ["warmup_schedule"]


def warmup_schedule(total_steps: int, warmup_steps: int, *, decay: Literal["cosine", "step", "constant"] = "cosine",
                    decay_after_warmup: bool = False, step_every: int = 1,
                    step_gamma: float = 1.0) -> Callable[[int], float]:
    """Learning-rate factor of step ``s``: linear warm-up times a cosine, step or no decay.

    The factor is ``min(1, (s + 1) / warmup_steps) * decay(t)``, where ``t`` counts the steps
    since the decay started (step 0, or the end of the warm-up with ``decay_after_warmup``):

    - ``'cosine'``: ``0.5 * (1 + cos(pi * t / span))``, from 1 down to 0 at ``total_steps``
      (``span``: the steps from the decay's start to ``total_steps``, at least 1);
    - ``'step'``: ``step_gamma ** (t // step_every)``;
    - ``'constant'``: 1.

    Past ``total_steps`` the factor stays at its value there. The loops use it as

    - :func:`medlens.train.loop.fit`: ``engine.schedule``, a warm-up of
      ``engine.warmup_epochs`` epochs but at most a tenth of all steps, cosine from step 0;
    - :func:`medlens.seg.train.fit_segnet`, :func:`medlens.detection.train.fit_detector`:
      a warm-up of half an epoch, cosine from step 0;
    - :func:`medlens.ssl.pretraining.pretrain`: a warm-up of one epoch, cosine after it
      (``decay_after_warmup=True``).

    A pure function rather than torch's ``SequentialLR(LinearLR, CosineAnnealingLR)``:
    those compute the factor recursively and differ from the loops' closed forms by float
    rounding (up to 6e-16), and ``SequentialLR`` cannot express a warm-up multiplying a
    cosine that already runs. For the same reason the cosine's angle is rounded in the
    order each loop always used (``pi * (t / span)`` from step 0, ``pi * t / span`` after
    the warm-up), so no run's learning rates change.

    Parameters
    ----------
    total_steps : int
        Optimiser steps of the whole run; the cosine reaches 0 here.
    warmup_steps : int
        Steps of the linear warm-up (at least 1; 1 means none: step 0 already has factor 1).
    decay : {'cosine', 'step', 'constant'}
    decay_after_warmup : bool
        Start the decay when the warm-up ends (the cosine then spans the remaining steps)
        instead of at step 0.
    step_every : int
        ``'step'``: steps between decays.
    step_gamma : float
        ``'step'``: factor of each decay.

    Returns
    -------
    callable
        ``factor(step) -> float`` for ``LambdaLR``.

    Raises
    ------
    ValueError
        ``warmup_steps`` or ``step_every`` below 1.

    Examples
    --------
    >>> f = warmup_schedule(100, 10)
    >>> [round(f(s), 4) for s in (0, 9, 50, 100)]
    [0.1, 0.9801, 0.5, 0.0]
    >>> g = warmup_schedule(100, 10, decay_after_warmup=True)
    >>> [round(g(s), 4) for s in (0, 9, 10, 55, 100)]
    [0.1, 1.0, 1.0, 0.5, 0.0]
    """
    if warmup_steps < 1 or step_every < 1:
        raise ValueError(f"warmup_steps and step_every must be at least 1, not {warmup_steps} and {step_every}")
    start = warmup_steps if decay_after_warmup else 0
    span = max(1, total_steps - start)

    def factor(step: int) -> float:
        s = min(step, total_steps)
        warm = min(1.0, (s + 1) / warmup_steps)
        t = max(0, s - start)
        if decay == "cosine":
            angle = math.pi * t / span if decay_after_warmup else math.pi * (t / span)
            return warm * 0.5 * (1 + math.cos(angle))
        if decay == "step":
            return warm * step_gamma ** (t // step_every)
        return warm

    return factor
