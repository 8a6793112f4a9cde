"""The training loop: kill-and-resume equals an uninterrupted run; every task and option trains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from medlens.config import TrainConfig
from medlens.errors import ConfigError, StageInputMissing
from medlens.models import create_model
from medlens.train.checkpoint import LAST, load_last
from medlens.config.engine import AugmentConfig, EngineConfig
from medlens.train.loop import classifier_bias_key, fit, predict_proba
from medlens.train.report import kept_row


class Killed(Exception):
    """Stands in for SIGKILL after an epoch's checkpoint reached the disk."""


def _model(k: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("test_efficientnet", num_classes=k, in_chans=3)


def _weights(model):
    return {k: v.detach().clone().float() for k, v in model.state_dict().items()}


ENGINE = EngineConfig(checkpoint_interval=0,
                      augment=AugmentConfig(rotation=15, mixup_alpha=0.4, cutmix_alpha=1.0, mix_prob=0.7))


@pytest.mark.slow
@pytest.mark.parametrize("ema", [None, 0.9], ids=["plain", "ema"])
def test_kill_and_resume_equals_uninterrupted(tiny_tensors, tmp_path, ema):
    train, val = tiny_tensors
    cfg = TrainConfig(epochs=3, batch_size=8, image_size=32)
    engine = ENGINE.model_copy(update={"ema": ema})
    full = _model()
    (tmp_path / "full").mkdir()
    fit(full, train, val, cfg, num_classes=2, seed=7, out_dir=tmp_path / "full", engine=engine)

    out = tmp_path / "killed"
    out.mkdir()

    def kill(epoch: int) -> None:
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        fit(_model(), train, val, cfg, num_classes=2, seed=7, out_dir=out, engine=engine, on_epoch_end=kill)
    assert load_last(out / LAST)["epoch"] == 1
    resumed = create_model("test_efficientnet", num_classes=2, in_chans=3)  # fresh, differently initialised
    res = fit(resumed, train, val, cfg, num_classes=2, seed=7, out_dir=out, engine=engine, resume=True)
    a, b = _weights(full), _weights(resumed)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    kept_a, kept_b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert max(float((kept_a[k].float() - kept_b[k].float()).abs().max()) for k in kept_a) < 1e-6
    assert list(res.history["epoch"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(res.history, pd.read_csv(tmp_path / "full" / "history.csv"), check_exact=False)


def test_resume_without_checkpoint_or_with_other_settings(tiny_tensors, tmp_path):
    train, val = tiny_tensors
    cfg = TrainConfig(epochs=1, batch_size=8, image_size=32)
    with pytest.raises(StageInputMissing, match=LAST):
        fit(_model(), train, val, cfg, num_classes=2, seed=0, out_dir=tmp_path, resume=True)
    fit(_model(), train, val, cfg, num_classes=2, seed=0, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="other settings"):
        fit(_model(), train, val, cfg.model_copy(update={"lr": 1e-4}), num_classes=2, seed=0, out_dir=tmp_path,
            resume=True)
    # 'auto' starts afresh on changed settings; on a finished run it returns at once
    res = fit(_model(), train, val, cfg, num_classes=2, seed=0, out_dir=tmp_path, resume="auto")
    assert len(res.history) == 1


@pytest.mark.parametrize("engine", [
    EngineConfig(optimizer="sgd", schedule="step", step_epochs=1, imbalance="sampler", monitor="loss",
                 early_stopping=1, grad_clip=None, checkpoint=False),
    EngineConfig(schedule="constant", warmup_epochs=0, imbalance="none", augment=AugmentConfig(cutmix_alpha=1.0)),
], ids=["sgd-step-sampler-early", "constant-cutmix"])
def test_options_train(tiny_tensors, tmp_path, engine):
    train, val = tiny_tensors
    res = fit(_model(), train, val, TrainConfig(epochs=3, batch_size=8, image_size=32), num_classes=2, seed=0,
              out_dir=tmp_path, engine=engine)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "history.csv").is_file()
    assert set(res.history.columns) == {"epoch", "step", "train_loss", "val_loss", "val_auc", "lr", "monitor"}
    h = pd.read_csv(tmp_path / "history.csv")
    assert set(h["monitor"]) == {engine.monitor}
    assert int(h.loc[kept_row(h), "epoch"]) == res.best_epoch  # the report names the epoch training kept
    if engine.early_stopping:
        assert len(res.history) <= 3 and not (tmp_path / LAST).exists()


def test_multilabel_and_regression(tiny_tensors, tmp_path):
    (x, y), (xv, yv) = tiny_tensors
    cfg = TrainConfig(epochs=1, batch_size=8, image_size=32)
    multi = lambda v: torch.stack([torch.tensor(v), 1 - torch.tensor(v)], 1).numpy().astype("float32")  # noqa: E731
    res = fit(_model(2), (x, multi(y)), (xv, multi(yv)), cfg, num_classes=2, seed=0, out_dir=tmp_path,
              engine=EngineConfig(task="multilabel", augment=AugmentConfig(mixup_alpha=0.4)))
    assert 0 <= res.best_val_auc <= 1
    res = fit(_model(1), (x, y * 3.0), (xv, yv * 3.0), cfg, num_classes=1, seed=0, out_dir=tmp_path,
              engine=EngineConfig(task="regression", monitor="loss"))
    assert res.history["val_loss"].notna().all()


def test_step_budget_and_spaced_validation(tiny_tensors, tmp_path):
    """train.steps fixes the optimiser steps (epochs follow from the set's size); validations are spaced."""
    train, val = tiny_tensors  # 40 images, batch 8: 5 steps per epoch
    engine = EngineConfig(max_validations=4, checkpoint=False)
    res = fit(_model(), train, val, TrainConfig(steps=37, batch_size=8, image_size=32), num_classes=2, seed=0,
              out_dir=tmp_path, engine=engine)
    assert list(res.history["epoch"]) == [1, 3, 5, 7]  # 8 epochs (the last one 2 steps), every 2nd validated
    assert int(res.history["step"].iloc[-1]) == 37
    assert res.history["lr"].iloc[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine schedule spans the budget


def test_min_steps_gives_a_small_set_more_epochs(tiny_tensors, tmp_path):
    """train.min_steps raises the epochs of a small set to reach it; a set that already has enough keeps its epochs."""
    train, val = tiny_tensors  # 40 images, batch 8: 5 steps per epoch
    engine = EngineConfig(checkpoint=False)
    res = fit(_model(), train, val, TrainConfig(epochs=2, min_steps=23, batch_size=8, image_size=32), num_classes=2,
              seed=0, out_dir=tmp_path, engine=engine)
    assert int(res.history["step"].iloc[-1]) == 23 and res.history["epoch"].iloc[-1] == 4  # 5 epochs, the last 3 steps
    (tmp_path / "b").mkdir()
    res = fit(_model(), train, val, TrainConfig(epochs=3, min_steps=10, batch_size=8, image_size=32), num_classes=2,
              seed=0, out_dir=tmp_path / "b", engine=engine)
    assert int(res.history["step"].iloc[-1]) == 15


def test_ema_keeps_the_averaged_weights(tiny_tensors, tmp_path):
    train, val = tiny_tensors
    model = _model()
    fit(model, train, val, TrainConfig(epochs=2, batch_size=8, image_size=32), num_classes=2, seed=0,
        out_dir=tmp_path, engine=EngineConfig(ema=0.99, precise_bn=False, checkpoint=False, monitor="loss"))
    kept = load_file(str(tmp_path / "model.safetensors"))
    live = model.state_dict()
    key = classifier_bias_key(model).replace("bias", "weight")
    assert not torch.allclose(kept[key], live[key])  # not the last weights of the optimiser


def test_prior_correction_shifts_the_saved_biases(tiny_tensors, tmp_path):
    """The kept model predicts p(c|x) at the training prevalence: the weighted model's p / w, renormalised."""
    (x, y), val = tiny_tensors
    x, y = x[:28], y[:28].copy()
    y[:20] = 1  # 3:1 imbalance (24 positive, 4 negative)
    cfg = TrainConfig(epochs=1, batch_size=8, image_size=32, augment=False)
    for name, engine in (("weighted", EngineConfig(checkpoint=False)),
                         ("corrected", EngineConfig(checkpoint=False, prior_correction=True))):
        (tmp_path / name).mkdir()
        fit(_model(), (x, y), val, cfg, num_classes=2, seed=0, out_dir=tmp_path / name, engine=engine)
    w = np.array([28 / (2 * 4), 28 / (2 * 24)])
    probs = {}
    for name in ("weighted", "corrected"):
        m = _model()
        m.load_state_dict(load_file(str(tmp_path / name / "model.safetensors")))
        probs[name] = predict_proba(m, val[0])
    expected = probs["weighted"] / w
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probs["corrected"], expected, atol=1e-5)
    assert probs["corrected"][:, 1].mean() > probs["weighted"][:, 1].mean()


def test_label_smoothing_changes_the_loss():
    from medlens.train.loop import _Objective

    y = np.array([0, 1, 1, 0])
    logits = torch.tensor([[4.0, -4.0], [-4.0, 4.0], [-3.0, 3.0], [2.0, -2.0]])
    hard = _Objective("classification", y, 2, "none").loss(logits, torch.from_numpy(y))
    smooth = _Objective("classification", y, 2, "none", label_smoothing=0.2).loss(logits, torch.from_numpy(y))
    soft = _Objective("classification", y, 2, "none", label_smoothing=0.2).loss(
        logits, torch.nn.functional.one_hot(torch.from_numpy(y), 2).float())
    assert float(smooth) > float(hard) + 0.1
    assert float(soft) == pytest.approx(float(smooth), rel=1e-6)  # mixup's soft targets are smoothed alike


def test_warmup_is_at_most_a_tenth_of_a_step_budget():
    """A step budget shorter than one epoch (a 90,000-image set, 600 steps) still reaches the peak rate."""
    from medlens.train.loop import _schedule

    big = _schedule(EngineConfig(warmup_epochs=1.0), steps_per_epoch=704, total=600)
    assert big(59) == pytest.approx(0.5 * (1 + np.cos(np.pi * 59 / 600)))  # warm-up over: cosine alone
    assert big(29) < 0.51
    small = _schedule(EngineConfig(warmup_epochs=1.0), steps_per_epoch=37, total=600)  # PneumoniaMNIST: unchanged
    assert small(18) == pytest.approx(19 / 37 * 0.5 * (1 + np.cos(np.pi * 18 / 600)))
    assert small(36) == pytest.approx(0.5 * (1 + np.cos(np.pi * 36 / 600)))


def test_precise_bn_uses_evenly_spaced_training_images_up_to_its_bound():
    from medlens.data.arrays import normalise
    from medlens.train.loop import precise_bn

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 4, 4), generator=g, dtype=torch.uint8)
    bn = torch.nn.BatchNorm2d(3)
    for bound, picked in ((4, [0, 3, 6, 9]), (64, list(range(10)))):
        precise_bn(bn, images, torch.device("cpu"), batch_size=2, max_images=bound)
        x = normalise(images[picked])
        assert not bn.training
        assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-6)
        # cumulative average of the per-batch unbiased variances (batches of 2 images)
        var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in x.split(2)]).mean(0)
        assert torch.allclose(bn.running_var, var, atol=1e-5)
