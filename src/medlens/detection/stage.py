"""The detection study of a run directory (run by the ``det_*`` stages of :mod:`medlens.stages` for ``task: detection``).

:func:`det_stage` reads ``manifest.parquet`` and ``splits.json`` (leaving out images that
``qc.parquet`` rejected), trains the detector on every fold (or the first
``detection.folds``), picks the operating point on the out-of-fold validation images, and
scores the fold ensemble on the test and external images. With
``detection.compare_segmentation`` it trains the segmentation U-Net on the same folds and
scores its connected components with the same code (detection by segmentation). Writes
under ``run/det/``::

    fold_<k>/model.safetensors, history.csv, last.pt     the fold detector (and its resumable state)
    fold_<k>/seg/model.safetensors, history.csv          the segmentation comparison (train_seg_fold)
    predictions.parquet                                  every candidate box (test, external) with its score
    overlays.npz                                         best / median / worst test images with their boxes
    metrics.json                                         every figure with its 95% CI, both methods

then ``det_export`` writes ``run/det/export/`` (:mod:`medlens.detection.export`) and
``report`` the report.
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
from medlens.data.preprocess import Preprocess
from medlens.data.splits import check_leakage, load_splits
from medlens.data.pseudonyms import STAGED_BOXES
from medlens.detection.data import DetArrays, load_box_table, load_det_arrays
from medlens.evaluate.froc import froc, match
from medlens.detection.model import DetNet, Detector
from medlens.detection.report import write_det_section
from medlens.evaluate.lesions import best_f1_threshold, detection_summary
from medlens.detection.train import fit_detector, predict_boxes
from medlens.errors import StageInputMissing

__all__ = ["det_stage", "detection_folds", "load_detector", "study_rows", "train_fold", "train_seg_fold"]

log = logging.getLogger(__name__)


def study_rows(run: Path) -> tuple[pd.DataFrame, dict]:
    """The run's manifest indexed by ``sample_id`` (without OOD and QC-rejected images) and its checked splits."""
    for name in ("manifest.parquet", "splits.json"):
        if not (run / name).is_file():
            raise StageInputMissing(f"{run / name} not found; run `medlens run <config>` first")
    manifest, splits = load_manifest(run / "manifest.parquet"), load_splits(run / "splits.json")
    check_leakage(manifest, splits)
    if "is_ood" in manifest.columns:
        manifest = manifest[~manifest["is_ood"].astype(bool)]
    if (run / "qc.parquet").is_file():  # images rejected by the quality gate are left out
        qc = pd.read_parquet(run / "qc.parquet")
        manifest = manifest[manifest["sample_id"].isin(set(qc.loc[qc["passed"], "sample_id"]))]
    return manifest.set_index("sample_id"), splits


def _select(by_id: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """The rows of ``ids`` that the study kept (QC-passed, in distribution), in the order of ``ids``."""
    return by_id.loc[[i for i in ids if i in by_id.index]].reset_index()


def _net(cfg: StudyConfig) -> DetNet:
    return DetNet(cfg.model.in_chans, cfg.detection.features, norm=cfg.detection.norm)


def load_detector(run: Path, cfg: StudyConfig) -> Detector:
    """The study's trained fold detectors (``det/fold_k``, k < the folds ``cfg`` trains) as one :class:`Detector`.

    Folds left in the run directory by a config with more folds are not loaded.
    """
    members = []
    for k in range(detection_folds(cfg, len(load_splits(run / "splits.json")["folds"]))):
        path = run / "det" / f"fold_{k}" / "model.safetensors"
        if not path.is_file():
            raise StageInputMissing(f"{path} not found; run `medlens run CONFIG`")
        net = _net(cfg)
        net.load_state_dict(load_file(str(path)))
        members.append(net.eval())
    return Detector(members, cfg.detection.max_detections).eval()


def box_table(cfg: StudyConfig, run: Path) -> Path:
    """The lesion-box table: the pseudonymised copy ingest wrote, else ``detection.boxes`` (a phantom's or DICOM study's)."""
    staged = Path(run) / STAGED_BOXES
    return staged if staged.is_file() else Path(cfg.detection.boxes)


def train_fold(cfg: StudyConfig, run: Path, k: int, *, progress=None, resume: bool | str = "auto",
               on_epoch_end=None) -> None:
    """Train fold ``k``'s detector into ``run/det/fold_k`` (resumes from a matching ``last.pt``).

    Runs alone or as one rank under ``torchrun`` (rank 0 writes).
    """
    by_id, splits = study_rows(run)
    table = load_box_table(box_table(cfg, run), by_id.reset_index()) if cfg.detection.boxes else None
    prep = Preprocess.from_config(cfg)

    def part(ids: list[str]) -> DetArrays:
        return load_det_arrays(_select(by_id, ids), prep, table)

    fold = splits["folds"][k]
    seed = cfg.seed * 1000 + k
    torch.manual_seed(seed)  # the initial weights depend on the fold's seed only
    net = _net(cfg)
    fit_detector(net, part(fold["train"]), part(fold["val"]), cfg.train, cfg.detection, seed=seed,
                 out_dir=run / "det" / f"fold_{k}", progress=progress, resume=resume, on_epoch_end=on_epoch_end)


def detection_folds(cfg: StudyConfig, n_folds: int) -> int:
    """Folds the detector is trained on: ``detection.folds`` (null: all) of the split's ``n_folds``."""
    return min(cfg.detection.folds or n_folds, n_folds)


def det_stage(run: Path, cfg: StudyConfig) -> dict:
    """Evaluate the trained fold detectors (and the segmentation comparison) of a run directory.

    The operating point (score threshold) maximises lesion-level F1 on the out-of-fold
    validation images; test and external images are read with the fold ensemble at it.

    Returns
    -------
    dict
        The content of ``run/det/metrics.json``.
    """
    t0 = time.perf_counter()
    run, d = Path(run), cfg.detection
    by_id, splits = study_rows(run)
    table = load_box_table(box_table(cfg, run), by_id.reset_index()) if d.boxes else None
    prep = Preprocess.from_config(cfg)
    out = run / "det"

    parts = {name: _select(by_id, splits[name]) for name in ("test", "external") if splits.get(name)}
    data = {name: load_det_arrays(r, prep, table) for name, r in parts.items()}
    n_folds = detection_folds(cfg, len(splits["folds"]))
    detector = load_detector(run, cfg)
    val_gt, val_pred = [], []
    for k in range(n_folds):
        val = load_det_arrays(_select(by_id, splits["folds"][k]["val"]), prep, table)
        pred, _ = predict_boxes(Detector([detector.members[k]], d.max_detections), val.images, min_score=d.min_score)
        val_gt += val.boxes
        val_pred += pred
    threshold = best_f1_threshold(val_gt, val_pred, criterion=d.hit, iou=d.hit_iou)
    val_lesions, val_fps = match(val_gt, val_pred, criterion=d.hit, iou=d.hit_iou)
    les = np.concatenate(val_lesions)
    metrics: dict = {"folds_trained": n_folds, "threshold": threshold, "threshold_rule": "max lesion F1 on the "
                     "out-of-fold validation images", "hit_rule": d.hit, "image_size": prep.size,
                     "validation": {"n_images": len(val_gt), "n_lesions": int(les.size),
                                    "sensitivity": float((les >= threshold).mean()) if les.size else None,
                                    "fp_per_image": float(sum((f >= threshold).sum() for f in val_fps) / len(val_gt))},
                     "parameters": int(sum(t.numel() for t in detector.members[0].parameters())),
                     "max_detections": d.max_detections, "n_bootstrap": cfg.evaluate.n_bootstrap,
                     "preprocess": prep.to_dict()}
    frames, curves = [], {}
    for p, arr in data.items():
        pred, _ = predict_boxes(detector, arr.images, min_score=d.min_score)
        summ = detection_summary(arr.boxes, pred, arr.patients, threshold=threshold, size_bins=d.size_bins,
                                 criterion=d.hit, iou=d.hit_iou, n_boot=cfg.evaluate.n_bootstrap, seed=cfg.seed)
        metrics[p] = {"detector": summ}
        curves[p] = {"detector": _curve_points(arr.boxes, pred, d)}
        frames.append(_box_frame(parts[p], p, pred))
        if p == "test":
            _save_overlays(out / "overlays.npz", parts[p], arr, pred, threshold, d)
    if compares_segmentation(cfg, by_id):
        seg = _segmentation_comparison(run, cfg, by_id, splits, list(data), n_folds)
        for p, (pred, seg_threshold) in seg.items():
            arr = data[p]
            metrics[p]["segmentation"] = detection_summary(
                arr.boxes, pred, arr.patients, threshold=seg_threshold, size_bins=d.size_bins, criterion=d.hit,
                iou=d.hit_iou, n_boot=cfg.evaluate.n_bootstrap, seed=cfg.seed)
            curves[p]["segmentation"] = _curve_points(arr.boxes, pred, d)
        metrics["segmentation_threshold"] = next(iter(seg.values()))[1] if seg else None
    metrics["curves"] = curves
    pd.concat(frames, ignore_index=True).to_parquet(out / "predictions.parquet", index=False)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, default=float))
    write_det_section(run)  # the report's section: run/sections/det/
    return metrics


def _curve_points(gt: list[np.ndarray], pred: list, d) -> dict:
    """The FROC curve up to 10 FP/image, for the report's plot."""
    c = froc(gt, pred, criterion=d.hit, iou=d.hit_iou)
    keep = c.fp_per_image <= 10
    return {"fp_per_image": c.fp_per_image[keep].round(4).tolist(), "sensitivity": c.sensitivity[keep].round(4).tolist()}


def _box_frame(rows: pd.DataFrame, part: str, pred: list) -> pd.DataFrame:
    """One row per candidate box: ``sample_id, patient_id, part, x0, y0, x1, y1, score`` (input pixels)."""
    recs = [(sid, pid, part, *b, s) for sid, pid, (bs, ss) in zip(rows["sample_id"], rows["patient_id"], pred)
            for b, s in zip(bs.tolist(), ss.tolist())]
    return pd.DataFrame(recs, columns=["sample_id", "patient_id", "part", "x0", "y0", "x1", "y1", "score"])


def _save_overlays(path: Path, rows: pd.DataFrame, arr: DetArrays, pred: list, threshold: float, d) -> None:
    """Best, median and worst test images (by lesion F1 at the operating point, among images with lesions)."""
    lesions, fps = match(arr.boxes, pred, criterion=d.hit, iou=d.hit_iou)
    with_les = [i for i, g in enumerate(arr.boxes) if len(g)]
    if not with_les:
        return
    f1 = []
    for i in with_les:
        tp, fp = int((lesions[i] >= threshold).sum()), int((fps[i] >= threshold).sum())
        f1.append(2 * tp / (2 * tp + fp + (len(lesions[i]) - tp)))
    order = [with_les[j] for j in np.argsort(-np.asarray(f1), kind="stable")]
    pick = [order[0], order[len(order) // 2], order[-1]]
    shown = [pred[i][1] >= threshold for i in pick]
    np.savez_compressed(path, image=arr.images[pick].numpy(), case=np.array(["best", "median", "worst"]),
                        sample_id=np.array([rows["sample_id"].iloc[i] for i in pick]),
                        f1=np.asarray([f1[with_les.index(i)] for i in pick]),
                        truth=np.array([arr.boxes[i] for i in pick], dtype=object),
                        boxes=np.array([pred[i][0][s] for i, s in zip(pick, shown)], dtype=object),
                        scores=np.array([pred[i][1][s] for i, s in zip(pick, shown)], dtype=object))


def compares_segmentation(cfg: StudyConfig, by_id: pd.DataFrame) -> bool:
    """Whether detection by segmentation runs: asked for, lesion masks present, square images, no ROI crop
    (otherwise the seg U-Net's images are not in the detector's coordinates)."""
    return (cfg.detection.compare_segmentation and not cfg.engine.preprocess.roi_crop
            and cfg.seg.resample == "square" and "mask" in by_id.columns)


def train_seg_fold(cfg: StudyConfig, run: Path, k: int, *, progress=None) -> None:
    """Train fold ``k``'s segmentation U-Net (the ``seg:`` settings, segmentation only) into ``run/det/fold_k/seg``."""
    from medlens.seg.stage import seg_arrays, train_segnet

    by_id, splits = study_rows(run)
    fold = splits["folds"][k]
    train_segnet(cfg, "segmentation", seg_arrays(cfg, _select(by_id, fold["train"])),
                 seg_arrays(cfg, _select(by_id, fold["val"])), run / "det" / f"fold_{k}" / "seg", cfg.seed * 1000 + k,
                 progress)


def _segmentation_comparison(run: Path, cfg: StudyConfig, by_id: pd.DataFrame, splits: dict, parts: list[str],
                             n_folds: int) -> dict:
    """Detection by segmentation with the fold U-Nets of :func:`train_seg_fold`.

    Components of ``prob >= threshold`` (threshold: best pooled Dice on the out-of-fold
    validation images, as in the seg stage) become boxes scored by their highest
    probability; test maps average the fold models. Returns ``{part: (predictions, threshold)}``.
    """
    from medlens.evaluate.boxes import boxes_from_probability
    from medlens.seg.pixels import best_threshold
    from medlens.seg.stage import build_segnet, seg_arrays
    from medlens.seg.train import predict

    tests = {p: seg_arrays(cfg, _select(by_id, splits[p])) for p in parts}
    probs: dict[str, list] = {p: [] for p in parts}
    val_truth, val_prob = [], []
    for k in range(n_folds):
        net = build_segnet(cfg, "segmentation")
        net.load_state_dict(load_file(str(run / "det" / f"fold_{k}" / "seg" / "model.safetensors")))
        val = seg_arrays(cfg, _select(by_id, splits["folds"][k]["val"]))
        val_truth += list(val.masks[:, 0].numpy().astype(bool))
        val_prob += list(predict(net, val.images)["seg_prob"])
        for p, arr in tests.items():
            probs[p].append(predict(net, arr.images)["seg_prob"])
    threshold = best_threshold(val_truth, val_prob, [np.ones_like(t) for t in val_truth])
    return {p: ([boxes_from_probability(m, threshold) for m in np.mean(probs[p], axis=0)], threshold) for p in parts}

