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
    from medlens.pipeline import progress_bar
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
        has = {k: (cfg.out / f"fold_{k}" / LAST).is_file() for k in folds}
        if resume and not any(has.values()):
            raise StageInputMissing(f"--resume: no {LAST} in {cfg.out}/fold_{{{','.join(map(str, folds))}}}; "
                                    "train without --resume")
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
    trials: Annotated[int, typer.Option(help="Trials to run now.")] = 20,
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage, e.g. sqlite:///runs/demo/tune.db.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Best config YAML (default: <run>/tune/best.yaml).")] = None,
    backbones: Annotated[str, typer.Option(help="Comma-separated timm names to try.")] =
        "resnet18,mobilenetv3_small_100,efficientnet_b0",
    sizes: Annotated[str, typer.Option(help="Comma-separated image sizes to try.")] = "64,96,128",
    lr_min: Annotated[float, typer.Option(help="Smallest learning rate (log-uniform).")] = 1e-4,
    lr_max: Annotated[float, typer.Option(help="Largest learning rate.")] = 1e-2,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per trial (default: the config's).")] = None,
) -> None:
    """Search learning rate, backbone and image size; objective: mean validation AUC over folds."""
    from medlens.config import load_config
    from medlens.train.tune import SearchSpace
    from medlens.train.tune import tune as run_tune

    try:
        size_list = tuple(int(s) for s in sizes.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--sizes: expected comma-separated integers, got {sizes!r}") from None
    if not 0 < lr_min <= lr_max:
        raise ConfigError(f"--lr-min/--lr-max: need 0 < min <= max, got {lr_min}, {lr_max}")
    space = SearchSpace(lr=(lr_min, lr_max), backbones=tuple(b.strip() for b in backbones.split(",") if b.strip()),
                        image_sizes=size_list, epochs=epochs)
    from medlens.models import check_pretrained

    cfg = load_config(config)
    check_pretrained(cfg.model.pretrained)
    path = run_tune(cfg, trials=trials, storage=storage, space=space, out=out)
    typer.echo(f"best config: {path} (use it with `medlens run {path}`)")
