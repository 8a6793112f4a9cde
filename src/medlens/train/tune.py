"""Hyper-parameter search with Optuna: learning rate, backbone and image size.

The objective of a trial is the mean validation AUC over the study's folds (the test and
external sets are never looked at). After each fold the running mean is reported, so the
median pruner stops trials that are clearly worse than earlier ones. The best trial is
written back as a complete study YAML that ``medlens run`` takes as it is.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.config import StudyConfig, dump_config, parse_config
from medlens.errors import ConfigError, StageInputMissing
from medlens.train.fold import FoldData, build_model, task_classes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may vary; a single-value choice fixes that setting."""

    lr: tuple[float, float] = (1e-4, 1e-2)
    backbones: tuple[str, ...] = ("resnet18", "mobilenetv3_small_100", "efficientnet_b0")
    image_sizes: tuple[int, ...] = (64, 96, 128)
    epochs: int | None = None
    """Epochs per trial (default: the config's)."""


def load_inputs(cfg: StudyConfig) -> tuple[pd.DataFrame, dict]:
    """The run directory's Manifest and splits, or a :class:`StageInputMissing` naming the command."""
    from medlens.data.manifest import load_manifest
    from medlens.data.splits import check_leakage, load_splits

    m, s = cfg.out / "manifest.parquet", cfg.out / "splits.json"
    for path in (m, s):
        if not path.is_file():
            raise StageInputMissing(f"{path} not found; run `medlens run` on this config first "
                                    "(its ingest and split stages create it)")
    manifest, splits = load_manifest(m), load_splits(s)
    check_leakage(manifest, splits)
    return manifest, splits


def trial_config(cfg: StudyConfig, params: dict) -> StudyConfig:
    """``cfg`` with a trial's learning rate, backbone and image size."""
    d = cfg.model_dump(mode="json")
    d["train"]["lr"] = float(params["lr"])
    d["train"]["image_size"] = int(params["image_size"])
    d["model"]["name"] = params["backbone"]
    return parse_config(d, source="tuned config")


def tune(cfg: StudyConfig, *, trials: int, storage: str | None = None, space: SearchSpace = SearchSpace(),
         study_name: str | None = None, out: Path | None = None) -> Path:
    """Run ``trials`` Optuna trials and write the best config as YAML.

    Parameters
    ----------
    cfg : StudyConfig
        The study; its run directory must hold ``manifest.parquet`` and ``splits.json``.
    trials : int
        Trials to run in this call (a persistent ``storage`` accumulates over calls).
    storage : str, optional
        Optuna storage URL, e.g. ``sqlite:///runs/demo/tune.db``; in memory if omitted.
    space : SearchSpace
    study_name : str, optional
        Default ``<cfg.name>-tune``.
    out : path, optional
        Where to write the best config; default ``<run>/tune/best.yaml``.

    Returns
    -------
    Path of the best config YAML.
    """
    import optuna

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    manifest, splits = load_inputs(cfg)
    classes = task_classes(cfg, manifest)
    work = cfg.out / "tune"
    work.mkdir(parents=True, exist_ok=True)
    cache: dict[tuple, tuple] = {}
    backbones = (cfg.model.name,) if cfg.model.pretrained is not None else space.backbones

    def data(tcfg: StudyConfig, ids: list[str]):
        key = (tcfg.train.image_size, tuple(ids))
        if key not in cache:
            cache[key] = FoldData(tcfg, manifest)(ids)
        return cache[key]

    def objective(trial: optuna.Trial) -> float:
        from medlens.train.loop import fit, seed_everything

        params = {"lr": trial.suggest_float("lr", *space.lr, log=True),
                  "backbone": trial.suggest_categorical("backbone", list(backbones)),
                  "image_size": trial.suggest_categorical("image_size", list(space.image_sizes))}
        tcfg = trial_config(cfg, params)
        train_cfg = tcfg.train.model_copy(update={"epochs": space.epochs}) if space.epochs else tcfg.train
        engine = tcfg.engine.model_copy(update={"checkpoint": False})
        aucs = []
        for k, fold in enumerate(splits["folds"]):
            fold_dir = work / f"trial_{trial.number}" / f"fold_{k}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            seed_everything(cfg.seed * 1000 + k)
            try:
                res = fit(build_model(tcfg, classes), data(tcfg, fold["train"]), data(tcfg, fold["val"]), train_cfg,
                          num_classes=classes, seed=cfg.seed * 1000 + k, out_dir=fold_dir, engine=engine)
            finally:
                shutil.rmtree(fold_dir.parent, ignore_errors=True)
            aucs.append(res.best_val_auc if not math.isnan(res.best_val_auc) else 0.5)
            trial.report(float(np.mean(aucs)), step=k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(aucs))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name or f"{cfg.name}-tune", storage=storage, direction="maximize",
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    study.optimize(objective, n_trials=trials, catch=(ConfigError,))
    study.trials_dataframe().to_csv(work / "trials.csv", index=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError("no tuning trial completed (all pruned or failed); see " + str(work / "trials.csv"))
    best = study.best_trial
    out = Path(out) if out is not None else work / "best.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# best of {len(done)} completed trials (Optuna study '{study.study_name}'): "
                   f"mean validation AUC {best.value:.4f} over {len(splits['folds'])} folds\n"
                   f"# params: {best.params}\n" + dump_config(trial_config(cfg, best.params)))
    log.info("best trial %d: %s (mean val AUC %.4f) -> %s", best.number, best.params, best.value, out)
    return out
