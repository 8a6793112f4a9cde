"""The runner: a task is a list of stages; ``medlens run`` runs those that are not up to date.

To add a stage: write one module in this package declaring ``STAGE`` (see
:mod:`medlens.stages.protocol`), add its config section to :mod:`medlens.config`, and add
one line to the task's list in :data:`TASKS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import medlens
from medlens.config import StudyConfig, dump_config
from medlens.data.manifest import load_manifest
from medlens.data.splits import load_splits
from medlens.errors import StageInputMissing
from medlens.stages import (det_evaluate, det_export, det_train, deid, evaluate, explain, export, ingest, medmnist,
                            prepare, qc, repeats, report, seg, split, ssl_pool, synth, train, trust)
from medlens.stages.protocol import Stage, run_unit, stage_key

log = logging.getLogger(__name__)

DATA = (synth.STAGE, deid.STAGE, ingest.STAGE, qc.STAGE, split.STAGE)
"""The stages every task starts with (``synth`` for the phantom only, ``deid`` for DICOM only)."""

TASKS: dict[str, tuple[Stage, ...]] = {
    "classification": (*DATA, prepare.STAGE, train.STAGE, repeats.STAGE, evaluate.STAGE, medmnist.STAGE, explain.STAGE, trust.STAGE, export.STAGE,
                       report.STAGE),
    "segmentation": (*DATA, seg.STAGE, report.STAGE),
    "detection": (*DATA, det_train.STAGE, det_evaluate.STAGE, det_export.STAGE, report.STAGE),
}
"""Each task's stages, in the order they run."""


def stages_of(cfg: StudyConfig) -> list[Stage]:
    """The stages of ``cfg.task`` that belong to this study."""
    return [s for s in TASKS[cfg.task] if s.when(cfg)]


def _record_config(cfg: StudyConfig) -> None:
    import torch

    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "config.yaml").write_text(
        dump_config(cfg, redact=True) + f"# versions: medlens {medlens.__version__}, torch {torch.__version__}\n"
        + ("# data paths are not recorded: their names may identify a patient\n" if cfg.data.path is not None else ""))


def run_stages(cfg: StudyConfig, stages: Sequence[Stage]) -> Path:
    """Run ``stages`` in order, each unless it is up to date; return the run directory.

    Every stage's ``check`` runs first, before anything is written.

    Raises
    ------
    StageInputMissing
        When a stage needs a file that no earlier stage wrote: the message names the file
        and the stage that writes it.
    """
    run = cfg.out
    for stage in stages:
        stage.check(cfg)
    for i, stage in enumerate(stages):
        for path, required in stage.inputs(run, cfg):
            if required and not (run / path).exists():
                raise StageInputMissing(missing_message(cfg, stage, path))
        if i == 0:
            _record_config(cfg)
        run_unit(run, stage.name, stage_key(stage, run, cfg), [run / p for p in stage.outputs(run, cfg)],
                 lambda stage=stage: stage.run(run, cfg))
    if cfg.engine.task != "classification" and cfg.task == "classification":
        log.warning("engine.task %s: folds trained, fold_k/predictions.parquet written; the evaluate, explain, trust, "
                    "export and report stages score classification studies only and are skipped", cfg.engine.task)
    return run


def missing_message(cfg: StudyConfig, stage: Stage, path: str) -> str:
    """What to do when ``stage`` lacks ``path``: the stage that writes it, and the command that runs it."""
    writers = [s.name for s in TASKS[cfg.task] if path in s.outputs(cfg.out, cfg)]
    by = f", which the {writers[0]} stage writes" if writers else ""
    return (f"stage {stage.name} needs {cfg.out / path}{by}; run `medlens run CONFIG` for this study "
            f"(name: {cfg.name}, task: {cfg.task}) first")


def run_study(cfg: StudyConfig) -> Path:
    """Run every stage of the study's task that is not up to date; return the run directory."""
    import torch

    torch.set_num_threads(thread_budget())
    return run_stages(cfg, stages_of(cfg))


def thread_budget() -> int:
    """Threads torch may use: ``OMP_NUM_THREADS`` when set (a shared server, a batch slot), else every core."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


def prepare_study(cfg: StudyConfig) -> tuple[pd.DataFrame, dict]:
    """Run the data stages (synth, deid, ingest, qc, split); return the manifest and the splits."""
    run_stages(cfg, [s for s in DATA if s.when(cfg)])
    return load_manifest(cfg.out / "manifest.parquet"), load_splits(cfg.out / "splits.json")


def build_pool(cfg: StudyConfig) -> Path:
    """Run the data stages and ``ssl_pool``; return ``run/ssl/pool.parquet`` (``medlens pretrain``)."""
    run_stages(cfg, [*(s for s in DATA if s.when(cfg)), ssl_pool.STAGE])
    return cfg.out / ssl_pool.STAGE.outputs(cfg.out, cfg)[0]


def run_named(cfg: StudyConfig, name: str) -> Path:
    """Run one stage of the study's task (``medlens explain``, ``medlens audit``…) after checking its inputs."""
    stage = next((s for s in TASKS[cfg.task] if s.name == name), None)
    if stage is None:
        raise StageInputMissing(f"the {cfg.task} task has no stage {name!r}; its stages are "
                                f"{', '.join(s.name for s in TASKS[cfg.task])}")
    return run_stages(cfg, [stage])
