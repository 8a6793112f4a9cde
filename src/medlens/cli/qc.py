"""``medlens qc``: run the image quality gate over a manifest or a folder (registered in :mod:`medlens.cli`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from medlens.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"}


def _table(source: Path) -> tuple[pd.DataFrame, Path]:
    """Rows with ``sample_id``, ``image`` (and ``frame`` for DICOM) plus the base folder."""
    import pandas as pd

    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{source} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        rel = [p.relative_to(source).as_posix() for p in files]
        return pd.DataFrame({"sample_id": rel, "image": rel}), source
    if not source.is_file():
        raise DataError(f"{source} not found; pass a manifest (.parquet/.csv) or a folder of images")
    if source.suffix == ".parquet":
        table = pd.read_parquet(source)
    elif source.suffix == ".csv":
        table = pd.read_csv(source, keep_default_na=False)
    else:
        raise DataError(f"{source}: expected a .parquet or .csv manifest, got {source.suffix or 'no suffix'}")
    missing = {"sample_id", "image"} - set(table.columns)
    if missing:
        raise DataError(f"{source}: manifest lacks column(s) {sorted(missing)}")
    return table, source.parent


def _images(table: pd.DataFrame, base: Path) -> Iterator[np.ndarray]:
    import pandas as pd

    from medlens.data.images import load_image
    from medlens.dicom.ingest import load_dicom_image

    frames = table["frame"] if "frame" in table.columns else pd.Series(0, index=table.index)
    for ref, frame in zip(table["image"].astype(str), frames):
        path = Path(ref) if Path(ref).is_absolute() else base / ref
        if path.suffix.lower() == ".dcm" or "frame" in table.columns:
            yield load_dicom_image(path, int(frame))
        else:
            yield load_image(ref, base)


def qc(
    manifest_or_dir: Annotated[Path, typer.Argument(help="manifest.parquet/.csv (columns sample_id, image[, frame]) or a folder of images.")],
    out: Annotated[Path, typer.Option(help="Per-image result: sample_id, passed, reason, `is_<check>`, `<check>_score`.")] = Path("qc.parquet"),
    thresholds: Annotated[Optional[Path], typer.Option(help="qc_thresholds.json of a run: apply its thresholds instead of learning them from these images.")] = None,
    fixed: Annotated[bool, typer.Option("--fixed", help="Use the built-in constants (calibrated on the phantom) instead of learning.")] = False,
) -> None:
    """Run the image quality gate (exposure, contrast, blur, field of view, near-duplicates).

    By default the thresholds are learned from the images given (robust outlier limits:
    what is unusual for this data set) and written beside OUT as qc_thresholds.json.
    Writes one row per image. Exit status: 0 the table was written (failing images are a
    result, listed in it); 2 bad input (missing or malformed manifest, unreadable image).
    """
    from medlens.config.qc import QCConfig
    from medlens.qc.core import run_qc
    from medlens.qc.learn import learn_thresholds, load_thresholds, save_thresholds

    table, base = _table(manifest_or_dir)
    if thresholds is not None:
        if not thresholds.is_file():
            raise DataError(f"--thresholds {thresholds} not found; give a run's qc_thresholds.json")
        config = load_thresholds(thresholds)
    elif fixed:
        config = QCConfig(learn=False)
    else:
        config, report = learn_thresholds(_images(table, base), QCConfig())
        out.parent.mkdir(parents=True, exist_ok=True)
        save_thresholds(out.with_name("qc_thresholds.json"), config, report, len(table))
    result = run_qc(_images(table, base), table["sample_id"].astype(str).tolist(), config)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out, index=False)
    n_fail = int((~result["passed"]).sum())
    typer.echo(f"wrote {out}: {len(result) - n_fail} of {len(result)} images passed, {n_fail} failed")
