"""The one learning-rate schedule: bit-identical to what each loop built before, and its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlens.config.engine import EngineConfig
from medlens.train.loop import _schedule
from medlens.train.schedule import warmup_schedule


# The factors each loop built itself before warmup_schedule, copied verbatim: the references
# that keep every loop's learning rates unchanged to the last bit.
def _legacy_fit(engine: EngineConfig, steps_per_epoch: int, total: int):
    """``medlens.train.loop._schedule``."""
    steps_per_epoch, total = max(1, steps_per_epoch), max(1, total)
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


def _legacy_seg_det(steps: int, epochs: int):
    """The lambdas of ``medlens.seg.train.fit_segnet`` and ``medlens.detection.train.fit_detector``."""
    total, warmup = epochs * steps, max(1, steps // 2)
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))


def _legacy_ssl(steps: int, epochs: int):
    """``schedule`` of ``medlens.ssl.pretraining.pretrain``."""
    total = epochs * steps
    warm = min(steps, total)

    def schedule(i: int) -> float:
        return (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, total - warm)))

    return schedule


def _factors(f, total: int) -> list[float]:
    """Every factor LambdaLR asks for: steps 0 to ``total`` (the rate after the last step)."""
    return [f(s) for s in range(total + 1)]


# (steps per epoch, total steps): empty parts, single steps, step budgets shorter than an epoch
FIT_SHAPES = [(0, 0), (1, 1), (3, 5), (3, 60), (37, 740), (704, 600), (704, 1408)]


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
@pytest.mark.parametrize("warmup_epochs", [0.0, 0.5, 1.0, 2.5])
def test_fit_schedule_is_unchanged(schedule, warmup_epochs):
    for step_epochs, step_gamma in [(1, 0.1), (2, 0.1), (10, 0.5)]:
        engine = EngineConfig(schedule=schedule, warmup_epochs=warmup_epochs, step_epochs=step_epochs,
                              step_gamma=step_gamma)
        for steps_per_epoch, total in FIT_SHAPES:
            new = _factors(_schedule(engine, steps_per_epoch, total), max(1, total))
            assert new == _factors(_legacy_fit(engine, steps_per_epoch, total), max(1, total)), \
                (step_epochs, step_gamma, steps_per_epoch, total)


@pytest.mark.parametrize("steps, epochs", [(1, 1), (1, 6), (2, 3), (3, 20), (10, 2), (57, 20), (250, 6)])
def test_seg_and_detection_schedules_are_unchanged(steps, epochs):
    total = epochs * steps
    new = warmup_schedule(total, max(1, steps // 2))  # as fit_segnet and fit_detector call it
    assert _factors(new, total) == _factors(_legacy_seg_det(steps, epochs), total)


@pytest.mark.parametrize("steps, epochs", [(1, 1), (1, 40), (2, 2), (5, 1), (7, 40), (64, 40), (3, 100)])
def test_ssl_schedule_is_unchanged(steps, epochs):
    total = epochs * steps
    new = warmup_schedule(total, min(steps, total), decay_after_warmup=True)  # as pretrain calls it
    assert _factors(new, total) == _factors(_legacy_ssl(steps, epochs), total)


def _closed_form(s: int, total: int, warmup: int, after: bool) -> float:
    """Linear warm-up times 0.5 (1 + cos(pi t)), t going from 0 to 1 between the decay's start and the end."""
    start = warmup if after else 0
    t = np.clip((s - start) / (total - start), 0.0, 1.0)
    return float(np.minimum(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * t)))


@pytest.mark.parametrize("total, warmup", [(100, 10), (600, 60), (7, 3), (50, 1)])
@pytest.mark.parametrize("after", [False, True])
def test_cosine_matches_the_closed_form_at_its_boundaries(total, warmup, after):
    f = warmup_schedule(total, warmup, decay_after_warmup=after)
    for s in (0, warmup - 1, warmup, total // 2, total - 1, total):
        assert f(s) == pytest.approx(_closed_form(s, total, warmup, after), abs=1e-15), s
    assert f(0) == pytest.approx(1 / warmup)  # the first step: a warm-up's first share
    assert f(total) == 0.0  # the floor, reached on the last step
    assert f(total + 5) == f(total)  # and kept past it
    if after:
        assert f(warmup - 1) == f(warmup) == 1.0  # the peak: end of warm-up, start of the cosine
    else:
        assert f(warmup - 1) == pytest.approx(0.5 * (1 + math.cos(math.pi * (warmup - 1) / total)))


def test_step_and_constant_decays():
    step = warmup_schedule(100, 4, decay="step", step_every=10, step_gamma=0.5)
    assert [step(s) for s in (0, 3, 9, 10, 19, 20, 99)] == [0.25, 1.0, 1.0, 0.5, 0.5, 0.25, 0.5 ** 9]
    constant = warmup_schedule(100, 4, decay="constant")
    assert [constant(s) for s in (0, 3, 50, 100)] == [0.25, 1.0, 1.0, 1.0]


def test_a_warmup_shorter_than_one_step_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        warmup_schedule(10, 0)
