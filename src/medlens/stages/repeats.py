"""``repeats``: the further repeats of a repeated cross-validation (``evaluate.repeats`` > 1).

Repeat ``r`` (1 ≤ r < R) assigns the development patients to new folds
(:func:`medlens.data.splits.repeat_splits`: same test and external sets) and trains each
fold from other initial weights, into ``repeat_r/splits.json`` and ``repeat_r/fold_k/``.
Repeat 0 is the study's own ``splits.json`` and ``fold_k/``, whose models the later stages
explain, audit and ship; the evaluate stage reads every repeat to measure training
variance (Bouthillier et al. 2021). Each fold of each repeat is a resumable unit, as in
the ``train`` stage.
"""

from __future__ import annotations

from pathlib import Path

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.data.splits import check_leakage, load_splits, repeat_splits, save_splits
from medlens.progress import progress_bar
from medlens.stages.protocol import Stage, run_unit, stage_key
from medlens.train.checkpoint import LAST
from medlens.train.fold import fold_dir, train_fold


def repeat_outputs(cfg: StudyConfig) -> list[str]:
    """``repeat_r/splits.json`` and each fold's model and predictions, for r = 1 .. R-1."""
    return [p for r in range(1, cfg.evaluate.repeats)
            for p in (f"repeat_{r}/splits.json", f"repeat_{r}/fold_{{fold}}/model.safetensors",
                      f"repeat_{r}/fold_{{fold}}/predictions.parquet")]


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Split and train every further repeat whose outputs are missing or out of date."""
    manifest, splits = load_manifest(run_dir / "manifest.parquet"), load_splits(run_dir / "splits.json")
    # a fold's key leaves out R itself: raising R from 3 to 5 trains repeats 3 and 4 only
    key = {k: v for k, v in stage_key(STAGE, run_dir, cfg).items() if k != "config:evaluate.repeats"}
    with progress_bar() as progress:
        for r in range(1, cfg.evaluate.repeats):
            rsplits = repeat_splits(manifest, splits, r)
            check_leakage(manifest, rsplits)
            (run_dir / f"repeat_{r}").mkdir(exist_ok=True)
            save_splits(rsplits, run_dir / f"repeat_{r}" / "splits.json")
            for k in range(len(rsplits["folds"])):
                out = fold_dir(run_dir, k, r)
                run_unit(run_dir, f"repeat_{r}_fold_{k}", {**key, "repeat": str(r), "fold": str(k)},
                         [out / "model.safetensors", out / "predictions.parquet"],
                         lambda k=k, r=r, s=rsplits: train_fold(cfg, manifest, s, k, progress, resume="auto", repeat=r),
                         label=f"stage repeats: repeat {r} fold {k}")
                (out / LAST).unlink(missing_ok=True)


def repeated(cfg: StudyConfig) -> bool:
    """Classification studies with ``evaluate.repeats`` > 1."""
    return cfg.engine.task == "classification" and cfg.evaluate.repeats > 1


STAGE = Stage("repeats", run, sections=("model", "train", "engine", "seed", "evaluate.repeats"), when=repeated,
              reads=("manifest.parquet", "splits.json"), writes=repeat_outputs)
