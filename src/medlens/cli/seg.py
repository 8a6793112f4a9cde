"""Console summary of a segmentation study (``medlens run`` with ``task: segmentation``)."""

from __future__ import annotations

from pathlib import Path

import typer


def print_summary(run: Path) -> None:
    """Print the headline segmentation metrics of a finished ``task: segmentation`` run."""
    import json

    m = json.loads((run / "seg" / "metrics.json").read_text())
    for part in ("test", "external"):
        if part not in m:
            continue
        for key, label in (("dice", "Dice"), ("lesion_sensitivity", "lesion sensitivity"), ("auc_cls", "AUC multi-task"),
                           ("auc_mask", "AUC from mask"), ("auc_classifier", "AUC classifier-only")):
            if key in m[part]:
                e = m[part][key]
                typer.echo(f"{part:9s} {label:20s} {e['value']:.3f} (95% CI {e['low']:.3f}-{e['high']:.3f})")
