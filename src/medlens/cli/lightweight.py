"""``medlens tune --objective requirement,latency``: search, choose, then confirm once on test."""

from __future__ import annotations

import json
import shutil

import typer

from medlens.config import StudyConfig
from medlens.lightweight.decide import confirmation
from medlens.lightweight.search import RequirementNotMet, Space, chosen_config, search


def tune_lightweight(cfg: StudyConfig, *, space: Space, trials: int | None, storage: str | None,
                     confirm: bool) -> None:
    """Prepare the data, search, print the front; with ``confirm`` run the chosen study and its test evaluation.

    Raises
    ------
    RequirementNotMet
        When no candidate's validation lower bound reaches the requirement (``candidates.csv``
        and ``choice.json`` are written first).
    """
    from medlens.progress import progress_bar
    from medlens.stages.runner import prepare_study, run_study

    prepare_study(cfg)  # ingest, QC and split only: no model has seen a test image yet
    with progress_bar() as progress:
        choice = search(cfg, trials=trials, storage=storage, space=space, progress=progress)
    work = cfg.out / "tune" / "lightweight"
    typer.echo(front_text(work))
    c, req = choice["chosen"], choice["requirement"]
    if c is None:
        import pandas as pd

        best = pd.read_csv(work / "candidates.csv")["low"].max()
        raise RequirementNotMet(f"no candidate meets {req['text']} on validation (best 95% CI lower bound {best:.3f}); "
                                f"relax the requirement or widen --backbones/--sizes. Candidates: {work / 'candidates.csv'}")
    typer.echo(f"chosen: {c['backbone']} {c['image_size']} px {c['precision']} — validation {req['metric']} "
               f"{c['value']:.3f} (95% CI {c['low']:.3f}-{c['high']:.3f}), {c['latency_ms']:.2f} ms, "
               f"{c['params'] / 1e6:.2f} M parameters -> {work / 'chosen.yaml'}")
    if not confirm:
        return
    chosen = chosen_config(cfg, c)
    dest = chosen.out / "lightweight"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("candidates.csv", "choice.json"):
        shutil.copy2(work / name, dest / name)
    out = run_study(chosen)
    if json.loads((out / "splits.json").read_text()) != json.loads((cfg.out / "splits.json").read_text()):
        raise RequirementNotMet(f"{out / 'splits.json'} differs from {cfg.out / 'splits.json'}: the confirmatory "
                                "study did not reproduce the split the choice was made on")
    if c["precision"] == "int8":
        from medlens.export.core import export_run

        export_run(out, fold="ensemble", quantize="int8", ship_quantized=True)
    from medlens.lightweight.report import write_lightweight_section
    from medlens.report import write_report

    write_lightweight_section(out)  # the choice and its confirmation on test, for the report
    write_report(out, chosen)
    metrics = json.loads((out / "metrics.json").read_text())
    label = "AUC" if req["metric"] == "auc" else req["metric"]
    for part in ("test", "external"):
        r = confirmation(metrics, req, part)
        if r is not None:
            at = f", specificity {r['specificity']:.3f}" if "specificity" in r else ""
            verdict = "holds" if r["holds"] else f"does NOT hold ({r['why']})"
            typer.echo(f"{part}: {label} {r['value']:.3f} (95% CI {r['low']:.3f}-{r['high']:.3f}){at}: "
                       f"the requirement {verdict}")
    typer.echo(f"report: {out / 'report.html'}")


def front_text(work) -> str:
    """The candidates on the Pareto front as a plain table (fastest first)."""
    import pandas as pd

    t = pd.read_csv(work / "candidates.csv")
    front = t[t["front"]].sort_values("latency_ms")
    lines = [f"{'backbone':24s}{'px':>4s} {'prec':5s}{'value':>7s}{'CI low':>8s}{'meets':>6s}{'ms':>8s}{'params':>9s}"]
    lines += [f"{r.backbone:24s}{r.image_size:4d} {r.precision:5s}{r.value:7.3f}{r.low:8.3f}"
              f"{'yes' if r.met else 'no':>6s}{r.latency_ms:8.2f}{r.params / 1e6:8.2f}M" for r in front.itertuples()]
    return "Pareto front (validation, fold 0):\n" + "\n".join(lines)
