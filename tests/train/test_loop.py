"""The training loop: kill-and-resume equals an uninterrupted run; every task and option trains."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from medlens.config import TrainConfig
from medlens.errors import ConfigError, StageInputMissing
from medlens.models import create_model
from medlens.train.checkpoint import LAST, load_last
from medlens.train.config import AugmentConfig, EngineConfig
from medlens.train.loop import fit


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
def test_kill_and_resume_equals_uninterrupted(tiny_tensors, tmp_path):
    train, val = tiny_tensors
    cfg = TrainConfig(epochs=3, batch_size=8, image_size=32)
    full = _model()
    (tmp_path / "full").mkdir()
    fit(full, train, val, cfg, num_classes=2, seed=7, out_dir=tmp_path / "full", engine=ENGINE)

    out = tmp_path / "killed"
    out.mkdir()

    def kill(epoch: int) -> None:
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        fit(_model(), train, val, cfg, num_classes=2, seed=7, out_dir=out, engine=ENGINE, on_epoch_end=kill)
    assert load_last(out / LAST)["epoch"] == 1
    resumed = create_model("test_efficientnet", num_classes=2, in_chans=3)  # fresh, differently initialised
    res = fit(resumed, train, val, cfg, num_classes=2, seed=7, out_dir=out, engine=ENGINE, resume=True)
    a, b = _weights(full), _weights(resumed)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
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
    assert set(res.history.columns) == {"epoch", "train_loss", "val_loss", "val_auc", "lr"}
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
