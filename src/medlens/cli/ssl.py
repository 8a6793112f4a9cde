"""``medlens pretrain`` and ``medlens probe``: thin wrappers over :mod:`medlens.ssl`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medlens.errors import ConfigError

METHODS = ("simclr", "micle", "mae", "rotation")


def pretrain(
    config: Annotated[Path, typer.Argument(help="Study YAML; its ssl: section sets the methods and the unlabeled pool.")],
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", "-m", help="simclr | micle | mae | rotation (repeatable; default: ssl.methods).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Require `run/ssl/<method>/last.pt` and continue it.")] = False,
) -> None:
    """Pretrain encoders without labels (alone, or on every process of `torchrun --nproc_per_node N`).

    The unlabeled pool (ssl.unlabeled) is the study's development images, a second phantom
    draw or another source — never its test or external images. Writes
    `run/ssl/<method>/encoder.safetensors` (load it with model.pretrained), card.json,
    history.csv and last.pt (a killed run continues where it stopped).
    """
    from medlens.config import load_config
    from medlens.progress import progress_bar
    from medlens.stages.runner import build_pool
    from medlens.ssl.pretraining import pretrain as run_pretrain
    from medlens.train.distributed import barrier, init_distributed, shutdown

    cfg = load_config(config)
    methods = method or list(cfg.ssl.methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ConfigError(f"--method {bad[0]}: choose one of {', '.join(METHODS)}")
    rank, world = init_distributed(cfg.engine.device)
    try:
        if rank == 0:
            build_pool(cfg)
        barrier()
        with progress_bar() as progress:
            for m in methods:
                out = run_pretrain(cfg, m, progress=progress if rank == 0 else None, resume=True if resume else "auto")
                if rank == 0:
                    typer.echo(f"{m}: {out / 'encoder.safetensors'} (model.pretrained accepts it; card: {out / 'card.json'})")
    finally:
        shutdown()


def probe(
    config: Annotated[Path, typer.Argument(help="Study YAML (run `medlens pretrain` or `medlens run` on it first).")],
    mode: Annotated[Optional[str], typer.Option(help="linear | finetune | both (default: ssl.probe_mode).")] = None,
    encoder: Annotated[Optional[list[str]], typer.Option(
        help="Extra curve NAME=WEIGHTS (a local .safetensors/.pth of the study's model), repeatable.")] = None,
) -> None:
    """Label-efficiency curves: AUC against the share of labeled patients, per encoder.

    Compares random initialisation, every `run/ssl/<method>/` encoder and ssl.imagenet at
    ssl.fractions of fold 0's training patients (ssl.probe_seeds draws each), scored on the
    held-out test set. Fine-tuning random init is the supervised baseline; with --mode both
    each pretrained encoder is also compared with it trained on all the labels (DeLong).
    Writes run/ssl/probe.csv and probe.json and refreshes report.html.
    """
    from medlens.config import load_config
    from medlens.progress import progress_bar
    from medlens.ssl.pretraining import pretrain_size
    from medlens.ssl.probing import Encoder, find_encoders
    from medlens.ssl.probing import probe as run_probe

    cfg = load_config(config)
    if mode not in (None, "linear", "finetune", "both"):
        raise ConfigError(f"--mode {mode}: choose linear, finetune or both")
    encoders = find_encoders(cfg)
    for spec in encoder or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise ConfigError(f"--encoder {spec}: expected NAME=PATH to an existing local weights file")
        encoders.append(Encoder(name, cfg.model.name, pretrain_size(cfg), Path(path)))
    with progress_bar() as progress:
        summary = run_probe(cfg, encoders, mode=mode, progress=progress)
    for enc, points in summary["curves"].items():
        typer.echo(f"{enc:24s} " + "  ".join(f"{p['fraction']:.0%}: {p['auc']:.3f}" for p in points))
    for enc, saved in summary["labels_saved"].items():
        typer.echo(f"{enc}: labels saved vs random init of its architecture, same mode, all its shares = "
                   + (f"{saved:.0%}" if saved is not None else "none (never reaches it)"))
    if summary["supervised"] is not None:
        sup = summary["supervised"]
        for enc, saved in summary["labels_saved_vs_supervised"].items():
            typer.echo(f"{enc}: labels saved vs the supervised baseline at {sup['fraction']:.0%} (AUC {sup['auc']:.3f}) = "
                       + (f"{saved:.0%}" if saved is not None else "none (never reaches it)"))
        for c in summary["versus_supervised"]:
            typer.echo(f"{c['encoder']} at {c['fraction']:.0%}: AUC {c['auc']:.3f} vs {c['supervised_auc']:.3f} "
                       f"({c['difference']:+.3f}" + (f", DeLong p ≤ {c['p_max']:.3g})" if c["p_max"] is not None else ")"))
    if (cfg.out / "metrics.json").is_file():
        from medlens.report import write_report

        typer.echo(f"report: {write_report(cfg.out, cfg)}")
    typer.echo(f"curves: {cfg.out / 'ssl' / 'probe.csv'}, summary: {cfg.out / 'ssl' / 'probe.json'}")
