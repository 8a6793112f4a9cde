"""``medlens audit RUN --budget N``: the trust audit of a finished run (registered in :mod:`medlens.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from medlens.errors import StageInputMissing


def audit(
    run: Annotated[Path, typer.Argument(help="A finished run directory (`runs/<study>`) with config.yaml and fold models.")],
    budget: Annotated[Optional[int], typer.Option(min=1, help="Rows of the relabel queue (default: trust.relabel_budget).")] = None,
) -> None:
    """Audit data and model: uncertainty, OOD gate, label issues, annotator reliability, relabel queue.

    Writes run/trust/ (uncertainty.parquet, ood.safetensors + ood.json, label_issues.csv,
    class_quality.csv, annotators.csv, relabel_queue.csv, risk_coverage.csv, summary.json).
    """
    from medlens.config import load_config
    from medlens.trust.stage import TRUST_DIR, trust_stage

    if not (run / "config.yaml").is_file():
        raise StageInputMissing(f"{run / 'config.yaml'} not found; pass a run directory made by `medlens run CONFIG`")
    s = trust_stage(run, load_config(run / "config.yaml"), budget=budget)
    li = s["label_issues"]
    typer.echo(f"label issues: {li['n_issues']} of {li['n_checked']} development labels; "
               f"worst-labelled class: {li['worst_class']}")
    if "annotators" in s:
        typer.echo(f"least reliable annotator: {s['annotators']['least_reliable']} "
                   f"(ranking {', '.join(s['annotators']['ranking'])})")
    pr = s["ood"]["pass_rate"]
    typer.echo("OOD gate pass rate: " + ", ".join(f"{p} {r:.0%}" for p, r in sorted(pr.items())))
    typer.echo(f"relabel queue: {run / TRUST_DIR / 'relabel_queue.csv'} ({li['relabel_budget']} images)")
