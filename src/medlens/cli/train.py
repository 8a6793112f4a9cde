"""``medlens train`` and ``medlens tune``: thin wrappers over :mod:`medlens.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medlens.errors import ConfigError


def train(
    config: Annotated[Path, typer.Argument(help="Study YAML; its run directory must hold manifest.parquet, splits.json.")],
    fold: Annotated[Optional[int], typer.Option(help="Train only this fold (default: every fold).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from fold_k/last.pt after a kill.")] = False,
) -> None:
    """Train the folds of a study (alone, or on every process of `torchrun --nproc_per_node N`).

    Writes fold_k/model.safetensors (best epoch), last.pt (weights, optimiser and RNG state),
    history.csv and predictions.parquet. Under torchrun only rank 0 writes.
    """
    from medlens.config import load_config
    from medlens.errors import StageInputMissing
    from medlens.progress import progress_bar
    from medlens.train.checkpoint import LAST
    from medlens.train.distributed import init_distributed, shutdown
    from medlens.train.fold import train_fold
    from medlens.train.tune import load_inputs

    from medlens.models import check_pretrained

    cfg = load_config(config)
    check_pretrained(cfg.model.pretrained)
    rank, world = init_distributed(cfg.engine.device)
    try:
        manifest, splits = load_inputs(cfg)
        n = len(splits["folds"])
        if fold is not None and not 0 <= fold < n:
            raise ConfigError(f"--fold {fold}: the study has folds 0..{n - 1}")
        folds = [fold] if fold is not None else list(range(n))
        fold_dir = cfg.out / "det" if cfg.task == "detection" else cfg.out
        has = {k: (fold_dir / f"fold_{k}" / LAST).is_file() for k in folds}
        if resume and not any(has.values()):
            raise StageInputMissing(f"--resume: no {LAST} in {fold_dir}/fold_{{{','.join(map(str, folds))}}}; "
                                    "train without --resume")
        if cfg.task == "detection":
            from medlens.detection.stage import train_fold as train_detector

            with progress_bar() as progress:
                for k in folds:
                    train_detector(cfg, cfg.out, k, progress=progress if rank == 0 else None,
                                   resume=bool(resume and has[k]))
                    if rank == 0:
                        typer.echo(f"fold {k}: detector trained ({world} process{'es' if world > 1 else ''}) -> "
                                   f"{cfg.out / 'det' / f'fold_{k}'}")
            return
        with progress_bar() as progress:
            for k in folds:
                res = train_fold(cfg, manifest, splits, k, progress if rank == 0 else None,
                                 resume=bool(resume and has[k]))
                if rank == 0:
                    typer.echo(f"fold {k}: best epoch {res.best_epoch}, val AUC {res.best_val_auc:.3f} "
                               f"({world} process{'es' if world > 1 else ''}) -> {cfg.out / f'fold_{k}'}")
    finally:
        shutdown()


def tune(
    config: Annotated[Path, typer.Argument(help="Study YAML; run `medlens run` on it first (or its ingest/split).")],
    objective: Annotated[str, typer.Option(
        help="auc: maximise mean validation AUC over lr x backbone x size; requirement,latency: the lightest "
             "model whose validation CI meets the config's requirement (then trained and tested once).")] = "auc",
    trials: Annotated[Optional[int], typer.Option(
        help="Trials to run now (default: 20 for auc; the whole grid for requirement,latency).")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage, e.g. sqlite:///runs/demo/tune.db.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="auc: best config YAML (default: `<run>/tune/best.yaml`).")] = None,
    backbones: Annotated[Optional[str], typer.Option(
        help="Comma-separated timm names (default auc: resnet18,mobilenetv3_small_100,efficientnet_b0; "
             "requirement,latency: MobileNetV3 small/large at several widths, efficientnet_b0, resnet18).")] = None,
    sizes: Annotated[Optional[str], typer.Option(
        help="Comma-separated image sizes (default auc: 64,96,128; requirement,latency: 32,48,64).")] = None,
    precisions: Annotated[str, typer.Option(help="requirement,latency: fp32 and/or int8 (ONNX Runtime).")] = "fp32,int8",
    confirm: Annotated[bool, typer.Option(help="requirement,latency: train the chosen model as the study "
                                               "`<name>-chosen` and evaluate it on test, once.")] = True,
    lr_min: Annotated[float, typer.Option(help="auc: smallest learning rate (log-uniform).")] = 1e-4,
    lr_max: Annotated[float, typer.Option(help="auc: largest learning rate.")] = 1e-2,
    epochs: Annotated[Optional[int], typer.Option(help="auc: epochs per trial (default: the config's).")] = None,
) -> None:
    """Search hyper-parameters on validation data only.

    --objective auc (default): learning rate, backbone and image size by mean validation AUC
    over the folds; writes the best config. --objective requirement,latency: every backbone
    x size x precision is trained on fold 0, scored through ONNX Runtime on fold 0's
    validation patients against the config's `requirement:` (by the lower bound of its 95%
    CI) and timed at batch 1 on one CPU thread; the fastest that meets it is chosen from
    those validation results alone, then trained on every fold as `<name>-chosen` and scored
    once on the test and external sets, with a report section on the choice.
    """
    from medlens.config import load_config
    from medlens.models import check_pretrained

    def split(text: str | None, default: str, kind=str) -> tuple:
        try:
            return tuple(kind(v.strip()) for v in (text or default).split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    cfg = load_config(config)
    if objective.replace(" ", "") == "requirement,latency":
        from medlens.cli.lightweight import tune_lightweight
        from medlens.lightweight.search import Space

        space = Space(**{k: v for k, v in {"backbones": split(backbones, "", str), "image_sizes": split(sizes, "", int),
                                           "precisions": split(precisions, "", str)}.items() if v})
        tune_lightweight(cfg, space=space, trials=trials, storage=storage, confirm=confirm)
        return
    if objective != "auc":
        raise ConfigError(f"--objective {objective!r}: choose auc or requirement,latency")
    from medlens.train.tune import SearchSpace
    from medlens.train.tune import tune as run_tune

    if not 0 < lr_min <= lr_max:
        raise ConfigError(f"--lr-min/--lr-max: need 0 < min <= max, got {lr_min}, {lr_max}")
    space = SearchSpace(lr=(lr_min, lr_max), backbones=split(backbones, "resnet18,mobilenetv3_small_100,efficientnet_b0"),
                        image_sizes=split(sizes, "64,96,128", int), epochs=epochs)
    check_pretrained(cfg.model.pretrained)
    path = run_tune(cfg, trials=20 if trials is None else trials, storage=storage, space=space, out=out)
    typer.echo(f"best config: {path} (use it with `medlens run {path}`)")
