"""``medlens seg-run``: a lesion segmentation / multi-task study from a YAML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def seg_run(config: Annotated[Path, typer.Argument(help="Study YAML with a seg: section (see configs/segmentation.yaml).")]) -> None:
    """Segment lesions (U-Net, optionally multi-task): train, evaluate with CIs, write seg/report.html."""
    import json

    from medlens.config import load_config
    from medlens.seg.stage import seg_run as run_seg

    cfg = load_config(config)
    run = run_seg(cfg)
    m = json.loads((run / "seg" / "metrics.json").read_text())
    for part in ("test", "external"):
        if part not in m:
            continue
        for key, label in (("dice", "Dice"), ("lesion_sensitivity", "lesion sensitivity"), ("auc_cls", "AUC multi-task"),
                           ("auc_mask", "AUC from mask"), ("auc_classifier", "AUC classifier-only")):
            if key in m[part]:
                e = m[part][key]
                typer.echo(f"{part:9s} {label:20s} {e['value']:.3f} (95% CI {e['low']:.3f}-{e['high']:.3f})")
    typer.echo(f"report: {run / 'seg' / 'report.html'}")
