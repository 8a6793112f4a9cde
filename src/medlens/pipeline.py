"""The main job, staged through files in the run directory (nnU-Net style).

Each stage reads named inputs and writes named outputs. A stage is skipped when the
hash of its config section, its input files and the medlens version matches what it
recorded last time and its outputs still exist, so ``medlens run`` after a crash or an
edit continues where it has to and never recomputes what did not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import medlens
from medlens.config import StudyConfig, dump_config
from medlens.data import sources
from medlens.data.manifest import load_image, load_manifest, save_manifest
from medlens.data.pseudonyms import (PRIVATE_DIR, STAGED_BOXES, check_outside, project_secret, pseudonymise,
                                     save_key, stage_box_table)
from medlens.data.splits import check_leakage, load_splits, make_splits, save_splits
from medlens.data.synthetic import generate
from medlens.dicom.deid import DeidContext
from medlens.errors import DataError

log = logging.getLogger(__name__)
stage_log = logging.getLogger("medlens.stages")
"""One line at each stage's start and end (the CLI prints them in a pipe, where no progress bar shows)."""


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's listing (relative path, size, mtime)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def run_stage(run: Path, name: str, key: dict, outputs: list[Path], fn: Callable[[], None]) -> bool:
    """Run ``fn`` unless its recorded key matches and all ``outputs`` exist.

    Returns True if the stage ran. The key is recorded only after ``fn`` returns, so an
    interrupted stage reruns next time.
    """
    state = run / ".stages" / f"{name}.json"
    digest = hashlib.sha256(json.dumps({"v": medlens.__version__, **key}, sort_keys=True, default=str).encode()).hexdigest()
    if state.is_file() and json.loads(state.read_text()).get("key") == digest and all(p.exists() for p in outputs):
        stage_log.info("stage %s: up to date, skipped", name)
        return False
    state.parent.mkdir(parents=True, exist_ok=True)
    state.unlink(missing_ok=True)
    stage_log.info("stage %s: started", name)
    t0 = time.perf_counter()
    fn()
    state.write_text(json.dumps({"key": digest, "seconds": round(time.perf_counter() - t0, 3)}))
    stage_log.info("stage %s: done in %.1f s", name, time.perf_counter() - t0)
    return True


def progress_bar() -> Progress:
    """The progress display used by every long stage."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                    disable=not in_terminal())


def in_terminal() -> bool:
    """True when progress bars can be drawn; in a pipe or a log file they would only leave blank lines."""
    from rich.console import Console

    return Console().is_terminal


def track(it, *, total: int | None = None, description: str):
    """A transient progress bar over ``it`` in a terminal; nothing in a pipe."""
    from rich.progress import track as rich_track

    return rich_track(it, total=total, description=description, transient=True, disable=not in_terminal())


def source_path(cfg: StudyConfig) -> Path:
    """The folder or file the ingest stage reads (for DICOM: the de-identified copy in the run)."""
    if cfg.data.source == "synthetic":
        return cfg.out / "data"
    if cfg.data.source == "dicom":
        return cfg.out / "dicom" / "out"
    return Path(cfg.data.path)


def quality_gate(manifest: pd.DataFrame, cfg: StudyConfig, run: Path) -> None:
    """Learn the QC thresholds, run the checks on every image; write ``qc.parquet`` and ``qc_thresholds.json``.

    Thresholds not pinned in ``cfg.qc`` are learned from the internal images (every image
    not of ``split.external_site``; labels are not used). The service applies the same
    thresholds (export ships ``qc_thresholds.json``).

    Raises
    ------
    DataError
        When no image passes: the message gives the commonest reasons and what to change.
    """
    from medlens.qc import run_qc
    from medlens.qc.learn import learn_thresholds, save_thresholds

    ext = cfg.split.external_site
    internal = manifest if ext is None else manifest[manifest["site"] != ext]
    learned, report = learn_thresholds((load_image(ref) for ref in internal["image"]), cfg.qc,
                                       progress=lambda it: track(it, total=len(internal), description="QC: learning limits"))
    images = (load_image(ref) for ref in track(manifest["image"], description="quality gate"))
    qc = run_qc(images, manifest["sample_id"].tolist(), learned)
    qc.to_parquet(run / "qc.parquet", index=False)
    save_thresholds(run / "qc_thresholds.json", learned, report, len(internal))
    if not qc["passed"].any():
        top = qc["reason"].str.split(";").explode().str.split(":").str[0].str.strip().value_counts().head(3)
        raise DataError(f"the quality gate rejected all {len(qc)} images ({', '.join(f'{k}: {v}' for k, v in top.items())}); "
                        f"see {run / 'qc.parquet'} and {run / 'qc_thresholds.json'}. Pin looser thresholds under qc: "
                        "(e.g. qc: {max_blur: 0.98}) or drop a check (qc: {checks: [exposure, contrast]})")


def passed_qc(manifest: pd.DataFrame, qc_path: Path) -> pd.DataFrame:
    """Rows whose image passed the quality gate (rejected ones are listed with reasons in qc.parquet)."""
    qc = pd.read_parquet(qc_path)
    ok = set(qc.loc[qc["passed"], "sample_id"])
    return manifest[manifest["sample_id"].isin(ok)]


def num_classes(manifest: pd.DataFrame) -> int:
    """Number of classes: the largest label index + 1 (at least 2)."""
    return max(2, int(manifest["label"].max()) + 1)


def train_fold(cfg: StudyConfig, manifest: pd.DataFrame, splits: dict, k: int, progress: Progress) -> None:
    """Train fold ``k`` and write its model, history, last.pt and predictions (val, test, external).

    Continues from ``fold_k/last.pt`` when one with the same settings exists (a killed run).
    """
    from medlens.train.fold import train_fold as train_one_fold

    train_one_fold(cfg, manifest, splits, k, progress, resume="auto")


def pseudonym_map_path(cfg: StudyConfig) -> Path:
    """Where the map from pseudonyms back to the originals goes: ``data.pseudonym_map``, else beside the secret."""
    return Path(cfg.data.pseudonym_map or cfg.out.parent / PRIVATE_DIR / f"{cfg.out.name}-pseudonyms.csv")


def ingest_pseudonymised(cfg: StudyConfig, secret: bytes) -> None:
    """Read an image folder, table or MedMNIST file; write the pseudonymised manifest and the staged pixels.

    The originals are read here only: every later stage reads ``run/data/`` under
    pseudonyms. The map back is written outside the run directory (mode 0600).
    """
    run = cfg.out
    original = sources.read_source(cfg.data, source_path(cfg))
    key_path = pseudonym_map_path(cfg)
    manifest, key = pseudonymise(original, secret, run.resolve() / "data", age_bins=cfg.data.age_bins,
                                 progress=lambda it: track(it, total=len(original), description="ingest: pseudonymising"))
    save_key(key, key_path, run)
    if cfg.task == "detection" and cfg.detection.boxes:  # its image column names the originals
        from medlens.detection.data import load_box_table

        load_box_table(Path(cfg.detection.boxes), original)  # every check, naming the user's table and row
        stage_box_table(Path(cfg.detection.boxes), manifest, key, run / STAGED_BOXES)
    save_manifest(manifest, run / "manifest.parquet")
    log.info("ingest: %d images of %d patients under pseudonyms; the map back is %s", len(manifest),
             manifest["patient_id"].nunique(), key_path)


def prepare_study(cfg: StudyConfig) -> tuple[pd.DataFrame, dict]:
    """The data stages every task shares; returns the manifest and the checked splits.

    synth (synthetic source only) → ingest → qc → split of the images that passed QC, then
    the leakage check, which runs on every call even when the stages are up to date.
    """
    run = cfg.out
    secret = None
    if cfg.data.source == "dicom":
        from medlens.dicom.study import study_secret

        secret = study_secret(cfg.data)  # before anything is written: no secret, no run
    elif cfg.data.source != "synthetic":
        check_outside(pseudonym_map_path(cfg), run)
        secret, _ = project_secret(cfg.data.secret_file, cfg.out.parent / PRIVATE_DIR)
    run.mkdir(parents=True, exist_ok=True)
    cfg_key = cfg.model_dump(mode="json")
    (run / "config.yaml").write_text(dump_config(cfg, redact=True)
                                     + f"# versions: medlens {medlens.__version__}, torch {torch.__version__}\n"
                                     + ("# data paths are not recorded: their names may identify a patient\n"
                                        if cfg.data.path is not None else ""))
    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        run_stage(run, "synth", {"synthetic": cfg_key["data"]["synthetic"], "seed": cfg.seed},
                  [run / "data" / "manifest.csv"],
                  lambda: generate(run / "data", seed=cfg.seed, **s.model_dump()))
    manifest_path = run / "manifest.parquet"
    if cfg.data.source == "dicom":
        from medlens.dicom.study import deid_stage, read_labelled

        audit = run / "dicom" / "deid_audit.jsonl"
        run_stage(run, "deid", {"data": cfg_key["data"], "input": file_digest(Path(cfg.data.path))}, [audit],
                  lambda: deid_stage(cfg.data, run / "dicom", secret))
        run_stage(run, "ingest", {"data": cfg_key["data"], "audit": file_digest(audit),
                                  "labels": file_digest(Path(cfg.data.labels))}, [manifest_path],
                  lambda: save_manifest(read_labelled(cfg.data, run / "dicom", secret), manifest_path))
    elif cfg.data.source == "synthetic":
        run_stage(run, "ingest", {"data": cfg_key["data"], "source": file_digest(source_path(cfg))}, [manifest_path],
                  lambda: save_manifest(sources.read_source(cfg.data, source_path(cfg)), manifest_path))
    else:
        boxes = cfg.detection.boxes if cfg.task == "detection" else None
        run_stage(run, "ingest", {"data": cfg_key["data"], "source": file_digest(source_path(cfg)),
                                  "secret": DeidContext(secret).join_key("secret-check", ""),
                                  "boxes": file_digest(Path(boxes)) if boxes else None},
                  [manifest_path, run / "data" / "images"], lambda: ingest_pseudonymised(cfg, secret))
    qc_path = run / "qc.parquet"
    run_stage(run, "qc", {"qc": cfg_key["qc"], "manifest": file_digest(manifest_path),
                          "external_site": cfg.split.external_site}, [qc_path, run / "qc_thresholds.json"],
              lambda: quality_gate(load_manifest(manifest_path), cfg, run))
    splits_path = run / "splits.json"
    run_stage(run, "split", {"split": cfg_key["split"], "seed": cfg.seed, "manifest": file_digest(manifest_path),
                             "qc": file_digest(qc_path)},
              [splits_path], lambda: save_splits(make_splits(passed_qc(load_manifest(manifest_path), qc_path),
                                                             seed=cfg.seed, classify=cfg.task == "classification",
                                                             **cfg.split.model_dump()), splits_path))
    manifest, splits = load_manifest(manifest_path), load_splits(splits_path)
    check_leakage(manifest, splits)
    return manifest, splits


def run_study(cfg: StudyConfig) -> Path:
    """Run every stage of the study and return the run directory.

    After :func:`prepare_study`: for ``task: classification``, train each fold → evaluate
    (per-fold calibration, ``predictions.parquet``, ``metrics.json``) → explain (heat maps
    scored against the expert ROI) → trust (uncertainty, OOD gate, label and annotator
    audit) → export (ONNX, parity from the raw files, Triton repository) → report; for ``task: segmentation``, the seg stage and its report;
    for ``task: detection``, the fold detectors, their evaluation, export and report (:mod:`medlens.detection.stage`).
    With ``engine.task`` regression or multilabel only the folds are trained (their
    predictions are written); the later stages score classification and are skipped.
    """
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    manifest, splits = prepare_study(cfg)
    if cfg.task == "segmentation":
        from medlens.seg.stage import seg_stages

        return seg_stages(cfg)
    if cfg.task == "detection":
        from medlens.detection.stage import det_stages

        return det_stages(cfg)
    run, cfg_key = cfg.out, cfg.model_dump(mode="json")
    manifest_path, splits_path = run / "manifest.parquet", run / "splits.json"

    train_key = {"model": cfg_key["model"], "train": cfg_key["train"], "engine": cfg_key["engine"], "seed": cfg.seed,
                 "manifest": file_digest(manifest_path), "splits": file_digest(splits_path)}
    with progress_bar() as progress:
        for k in range(len(splits["folds"])):
            out = run / f"fold_{k}"
            run_stage(run, f"train_fold_{k}", {**train_key, "fold": k},
                      [out / "model.safetensors", out / "predictions.parquet"],
                      lambda k=k: train_fold(cfg, manifest, splits, k, progress))
    if cfg.engine.task != "classification":
        log.warning("engine.task %s: folds trained, fold_k/predictions.parquet written; the evaluate, explain, trust "
                    "and report stages score classification studies only and are skipped", cfg.engine.task)
        return run
    from medlens.evaluate.study import evaluate_run
    from medlens.explain import explain_stage
    from medlens.export.stage import export_stage
    from medlens.inference import operating_threshold
    from medlens.report import write_report
    from medlens.trust import trust_stage

    folds = range(len(splits["folds"]))
    preds = [run / f"fold_{k}" / "predictions.parquet" for k in folds]
    models = [run / f"fold_{k}" / "model.safetensors" for k in folds]
    pred_key = {"predictions": [file_digest(p) for p in preds], "manifest": file_digest(manifest_path)}
    # each stage: name, the config it depends on, the files it reads, the files it writes, the function
    run_stage(run, "evaluate", {**pred_key, "evaluate": cfg_key["evaluate"], "seed": cfg.seed},
              [run / "predictions.parquet", run / "metrics.json", *(run / f"fold_{k}" / "calibration.json" for k in folds)],
              lambda: evaluate_run(run, cfg))
    evaluated = {"evaluated": file_digest(run / "predictions.parquet"), "threshold": operating_threshold(run),
                 "models": [file_digest(p) for p in models], "preprocess": cfg_key["engine"]["preprocess"]}
    run_stage(run, "explain", {**evaluated, "explain": cfg_key["explain"], "n_bootstrap": cfg.evaluate.n_bootstrap,
                               "seed": cfg.seed},
              [run / "explain" / "summary.json"], lambda: explain_stage(run, cfg))
    run_stage(run, "trust", {**evaluated, "trust": cfg_key["trust"], "seed": cfg.seed},
              [run / "trust" / "summary.json", run / "trust" / "ood.safetensors"], lambda: trust_stage(run, cfg))
    gate = {"fit_images": cfg.trust.ood_fit_images, "pass_rate": cfg.trust.ood_pass_rate, "seed": cfg.seed}
    run_stage(run, "export", {**evaluated, "ood_gate": gate, "explain": cfg_key["explain"],
                              "qc": file_digest(run / "qc_thresholds.json")},
              [run / "export" / "model.onnx", run / "export" / "export.json", run / "export" / "model_repository",
               run / "export" / "cam.safetensors"],
              lambda: export_stage(run, cfg))
    report_inputs = [run / "metrics.json", run / "explain" / "summary.json", run / "trust" / "summary.json",
                     run / "export" / "export.json", run / "ssl" / "probe.json"]
    run_stage(run, "report", {**pred_key, "inputs": [file_digest(p) for p in report_inputs if p.exists()],
                              "config": cfg_key},
              [run / "report.html"], lambda: write_report(run, cfg))
    return run
