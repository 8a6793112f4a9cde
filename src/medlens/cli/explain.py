"""``medlens explain RUN``: heat maps, agreement with the expert, faithfulness and sanity (registered in :mod:`medlens.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def explain(
    run: Annotated[Path, typer.Argument(help="A finished run directory (`runs/<study>`) with config.yaml, manifest.parquet, "
                                              "predictions.parquet and `fold_<k>/model.safetensors`.")],
    method: Annotated[Optional[str], typer.Option(help="gradcam | gradcam++ | scorecam | eigencam | layercam | hirescam | xgradcam")] = None,
    layer: Annotated[Optional[str], typer.Option(help="Target layer (dotted module name); default: chosen automatically.")] = None,
    fold: Annotated[Optional[int], typer.Option(help="Which fold's model to explain.")] = None,
    max_images: Annotated[Optional[int], typer.Option(help="Explain at most this many images.")] = None,
) -> None:
    """Explain a run's test images and check the explanations.

    Writes run/explain/: maps.npz (float16), overlays/*.png, agreement.parquet (per image),
    sanity.csv and summary.json. Options override the run's `explain:` config section.
    Exit status: 0 done (flags are results, printed); 2 bad input.
    """
    from medlens.config import load_config
    from medlens.errors import StageInputMissing
    from medlens.explain.stage import explain_stage

    if not (run / "config.yaml").is_file():
        raise StageInputMissing(f"{run / 'config.yaml'} not found; is {run} a run directory? (`medlens run` makes one)")
    cfg = load_config(run / "config.yaml")
    over = {k: v for k, v in {"method": method, "target_layer": layer, "fold": fold, "max_images": max_images}.items()
            if v is not None}
    if over:
        from medlens.config import parse_config

        data = cfg.model_dump(mode="json")
        data["explain"] = {**data["explain"], **over}
        cfg = parse_config(data, source="command line")
    s = explain_stage(run, cfg)
    e, er = s["agreement"]["energy"]["model"], s["agreement"]["energy"]["random"]
    typer.echo(f"{s['method']} on {s['layer']} ({s['grid'][0]}x{s['grid'][1]}): {s['n_images']} images, "
               f"{s['n_positive_with_roi']} positive with an expert region")
    typer.echo(f"energy pointing {e['value']:.3f} (95% CI {e['low']:.3f}-{e['high']:.3f}) vs random maps {er['value']:.3f}")
    if s.get("sanity"):
        typer.echo(f"sanity check: {s['sanity']['message']}")
    for flag in s["flags"]:
        typer.echo(f"FLAG: {flag}")
    typer.echo(f"wrote {run / 'explain'}")
