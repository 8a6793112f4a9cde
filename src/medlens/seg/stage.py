"""The segmentation stage of a study, and ``seg_stages`` (``medlens run`` with ``task: segmentation``).

:func:`seg_stage` reads ``manifest.parquet`` and ``splits.json`` of a run directory
(leaving out images that ``qc.parquet`` rejected, when there is one),
trains the configured network (``seg.task``) on the first ``seg.folds`` folds, and, when
``seg.compare_classifier`` is set, the same encoder as a classifier only on the same
folds. It writes under ``run/seg/``::

    fold_<k>/model.safetensors, history.csv                 the segmentation / multi-task model
    fold_<k>/classifier/model.safetensors, history.csv      the classification-only baseline
    predictions.parquet                                     per-image statistics (test, external)
    overlays.npz                                            best / median / worst test cases
    metrics.json                                            every metric with its 95% CI
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from medlens.config import StudyConfig
from medlens.data.manifest import load_manifest
from medlens.data.splits import check_leakage, load_splits
from medlens.errors import StageInputMissing
from medlens.seg.data import SegArrays, load_seg_arrays
from medlens.seg.models import create_segnet
from medlens.seg.summary import image_stats, seg_summary, severity_summary, size_table
from medlens.seg.train import fit_segnet, predict

__all__ = ["seg_stage", "seg_stages"]

log = logging.getLogger(__name__)


def _arrays(cfg: StudyConfig, rows: pd.DataFrame) -> SegArrays:
    s = cfg.seg
    return load_seg_arrays(rows, size=cfg.train.image_size, in_chans=cfg.model.in_chans, use_clahe=s.clahe,
                           clip_limit=s.clahe_clip_limit, tiles=s.clahe_tiles)


def _train(cfg: StudyConfig, kind: str, train: SegArrays, val: SegArrays, out_dir: Path, seed: int, progress):
    torch.manual_seed(seed)  # the initial weights too, or a rerun is not reproducible
    net = create_segnet(kind, in_chans=cfg.model.in_chans, features=cfg.seg.features, severity=cfg.seg.severity)
    fit_segnet(net, train, val, cfg.train, cfg.seg, seed=seed, out_dir=out_dir, progress=progress)
    net.load_state_dict(load_file(str(out_dir / "model.safetensors")))
    return net


def _mean(preds: list[dict]) -> dict:
    return {k: np.mean([p[k] for p in preds], axis=0) for k in preds[0]}


def seg_stage(run: Path, cfg: StudyConfig, *, progress=None) -> dict:
    """Train and evaluate the segmentation (or multi-task) study of a run directory.

    Parameters
    ----------
    run : path
        Run directory holding ``manifest.parquet`` and ``splits.json``.
    cfg : StudyConfig
        ``seg`` chooses the task; ``train`` the optimisation; ``evaluate.n_bootstrap`` the CIs.

    Returns
    -------
    dict
        The content of ``run/seg/metrics.json``.
    """
    run = Path(run)
    for name in ("manifest.parquet", "splits.json"):
        if not (run / name).is_file():
            raise StageInputMissing(f"{run / name} not found; run `medlens run <config>` first")
    t0 = time.perf_counter()
    manifest, splits = load_manifest(run / "manifest.parquet"), load_splits(run / "splits.json")
    check_leakage(manifest, splits)
    if "is_ood" in manifest.columns:
        manifest = manifest[~manifest["is_ood"].astype(bool)]
    manifest = manifest[manifest["label"].notna()]
    if (run / "qc.parquet").is_file():  # images rejected by the quality gate are left out
        qc = pd.read_parquet(run / "qc.parquet")
        manifest = manifest[manifest["sample_id"].isin(set(qc.loc[qc["passed"], "sample_id"]))]
    by_id = manifest.set_index("sample_id")
    s, out = cfg.seg, run / "seg"
    out.mkdir(parents=True, exist_ok=True)

    def rows(ids: list[str]) -> pd.DataFrame:
        return by_id.loc[[i for i in ids if i in by_id.index]].reset_index()

    parts = {name: rows(splits[name]) for name in ("test", "external") if splits.get(name)}
    data = {name: _arrays(cfg, r) for name, r in parts.items()}
    main_preds: dict[str, list] = {p: [] for p in parts}
    clf_preds: dict[str, list] = {p: [] for p in parts}
    n_folds = min(s.folds, len(splits["folds"]))
    for k in range(n_folds):
        train, val = _arrays(cfg, rows(splits["folds"][k]["train"])), _arrays(cfg, rows(splits["folds"][k]["val"]))
        seed = cfg.seed * 1000 + k
        net = _train(cfg, s.task, train, val, out / f"fold_{k}", seed, progress)
        clf = _train(cfg, "classifier", train, val, out / f"fold_{k}" / "classifier", seed, progress) \
            if s.compare_classifier else None
        for p, arr in data.items():
            main_preds[p].append(predict(net, arr.images, patch_size=s.patch_size))
            if clf is not None:
                clf_preds[p].append(predict(clf, arr.images))

    metrics: dict = {"task": s.task, "folds_trained": n_folds, "threshold": s.threshold,
                     "n_bootstrap": cfg.evaluate.n_bootstrap, "clahe": s.clahe, "image_size": cfg.train.image_size}
    frames = []
    for p, arr in data.items():
        pred = _mean(main_preds[p])
        truth = arr.masks[:, 0].numpy()
        if arr.fov is not None:  # pixels outside the field of view count for nothing
            inside = arr.fov[:, 0].numpy().astype(bool)
            truth, pred["seg_prob"] = truth * inside, pred["seg_prob"] * inside
            metrics["inside_fov"] = True
        stats = image_stats(truth, pred["seg_prob"], threshold=s.threshold, size_bins=s.size_bins)
        groups = parts[p]["patient_id"].to_numpy()
        clf_score = _mean(clf_preds[p])["cls_prob"] if clf_preds[p] else None
        summ = seg_summary(stats, arr.labels, groups=groups, cls_score=pred.get("cls_prob"),
                           baseline_score=clf_score, n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.seed)
        summ["lesion_size"] = size_table(stats, summ, s.size_bins)
        if "severity" in pred and np.isfinite(arr.severity).any():  # a user's data may have no severity grades
            summ["severity"] = severity_summary(arr.severity, pred["severity"], arr.labels, groups=groups,
                                                n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.seed)
        metrics[p] = summ
        frame = pd.concat([parts[p][["sample_id", "patient_id", "label"]].reset_index(drop=True), stats], axis=1)
        frame.insert(1, "part", p)
        for key, col in (("cls_prob", "p_multitask"), ("severity", "severity_pred")):
            if key in pred:
                frame[col] = pred[key]
        if clf_score is not None:
            frame["p_classifier"] = clf_score
        frame["severity"] = arr.severity
        frames.append(frame)
        if p == "test":
            _save_overlays(out / "overlays.npz", parts[p], stats, truth, pred["seg_prob"])
    pd.concat(frames, ignore_index=True).to_parquet(out / "predictions.parquet", index=False)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, default=float))
    return metrics


def _save_overlays(path: Path, rows: pd.DataFrame, stats: pd.DataFrame, truth: np.ndarray, prob: np.ndarray) -> None:
    """Best, median and worst test images by Dice (among images with a true lesion), unprocessed."""
    from medlens.data.arrays import load_tensor

    with_lesion = np.flatnonzero(stats["n_true"].to_numpy() > 0)
    if with_lesion.size == 0:
        return
    order = with_lesion[np.argsort(-stats["dice"].to_numpy()[with_lesion], kind="stable")]
    pick = [order[0], order[len(order) // 2], order[-1]]
    images = load_tensor(rows.iloc[pick], size=truth.shape[-1], in_chans=3).numpy()
    np.savez_compressed(path, image=images, truth=truth[pick].astype(np.uint8), prob=prob[pick].astype(np.float16),
                        dice=stats["dice"].to_numpy()[pick], case=np.array(["best", "median", "worst"]))


def seg_stages(cfg: StudyConfig) -> Path:
    """The segmentation part of ``medlens run`` (``task: segmentation``), after the data stages.

    Trains the ``seg`` stage and writes ``report.html``; both are skipped when up to date.
    """
    from medlens.pipeline import file_digest, progress_bar, run_stage
    from medlens.seg.report import write_seg_report

    run = cfg.out
    key = cfg.model_dump(mode="json")
    seg_key = {k: key[k] for k in ("seg", "train", "model", "evaluate", "seed")}
    seg_key["inputs"] = [file_digest(run / "manifest.parquet"), file_digest(run / "splits.json"),
                         file_digest(run / "qc.parquet")]
    # These networks are small (64 px, 8-128 channels): one thread is as fast as two on an
    # idle 2-core machine, and 20x faster than two when other jobs share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with progress_bar() as progress:
            run_stage(run, "seg", seg_key, [run / "seg" / "metrics.json"],
                      lambda: seg_stage(run, cfg, progress=progress))
    finally:
        torch.set_num_threads(threads)
    run_stage(run, "seg_report", {"metrics": file_digest(run / "seg" / "metrics.json")},
              [run / "report.html"], lambda: write_seg_report(run))
    return run
