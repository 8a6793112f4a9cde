"""The segmentation study of a run directory (run by :mod:`medlens.stages.seg` for ``task: segmentation``).

:func:`seg_stage` reads ``manifest.parquet`` and ``splits.json`` of a run directory
(leaving out images that ``qc.parquet`` rejected, when there is one), trains the
configured network (``seg.task``) on every fold (or the first ``seg.folds``) and, for
lesion studies with ``seg.compare_classifier``, the same encoder as a classifier only on
the same folds. Images are either resized to ``train.image_size`` (``seg.resample:
square``) or kept at full resolution (``native`` / ``fov``: patch training, sliding-window
inference, :mod:`medlens.seg.fullres`). The threshold comes from the out-of-fold
validation images; metrics are computed on the reference's pixels, inside the field of
view. It writes under ``run/seg/``::

    fold_<k>/model.safetensors, history.csv                 the segmentation / multi-task model
    fold_<k>/last.pt                                        its resumable state, while it trains
    fold_<k>/classifier/model.safetensors, history.csv      the classification-only baseline
    predictions.parquet                                     per-image statistics (test, external)
    overlays.npz                                            best / median / worst test cases
    metrics.json                                            every metric with its 95% CI
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from medlens.config import StudyConfig
from medlens.data.arrays import resize, to_channels
from medlens.data.images import load_image, load_mask
from medlens.data.manifest import load_manifest
from medlens.data.splits import check_leakage, load_splits
from medlens.errors import StageInputMissing
from medlens.seg.data import SegArrays, load_seg_arrays
from medlens.seg.fullres import FullResImage, load_fullres, to_native
from medlens.seg.models import create_segnet
from medlens.seg.pixels import best_threshold, pixel_auc, pixel_counts, pixel_summary, scores_from_counts
from medlens.seg.report import write_seg_section
from medlens.seg.summary import image_stats, seg_summary, severity_summary, size_table
from medlens.seg.train import data_digest, fit_segnet, predict, predict_fullres
from medlens.train.checkpoint import LAST, fingerprint

__all__ = ["build_segnet", "seg_arrays", "seg_stage", "train_segnet"]

log = logging.getLogger(__name__)


def seg_arrays(cfg: StudyConfig, rows: pd.DataFrame) -> SegArrays | list[FullResImage]:
    """The images of ``rows`` as the configured network sees them, with their reference masks."""
    s = cfg.seg
    if s.resample != "square":
        return load_fullres(rows, s)
    return load_seg_arrays(rows, size=cfg.train.image_size, in_chans=cfg.model.in_chans, use_clahe=s.clahe,
                           clip_limit=s.clahe_clip_limit, tiles=s.clahe_tiles)


def _in_chans(cfg: StudyConfig) -> int:
    return 1 if cfg.seg.resample != "square" and cfg.seg.channels != "rgb" else cfg.model.in_chans


def build_segnet(cfg: StudyConfig, kind: str):
    """The ``seg:`` section's network of ``kind`` (segmentation, multitask, classifier), freshly initialised."""
    return create_segnet(kind, in_chans=_in_chans(cfg), features=cfg.seg.features, severity=cfg.seg.severity,
                         norm=cfg.seg.norm, architecture=cfg.seg.architecture, encoder=cfg.seg.encoder)


TRAINED = "trained.json"
"""Written beside a fold's ``model.safetensors`` once its training finished: the settings and data it is valid for."""


def train_segnet(cfg: StudyConfig, kind: str, train, val, out_dir: Path, seed: int, progress, *,
                 on_epoch_end: Callable[[int], None] | None = None):
    """Train ``build_segnet(cfg, kind)`` into ``out_dir`` (seeded) and return it with its best epoch's weights.

    A network whose training finished with the same settings and data (``out_dir/trained.json``)
    is loaded, not trained again: a study killed in its second fold keeps its first. A fold
    killed during training continues from its ``last.pt`` (deleted once ``trained.json`` is
    written). Every fold is seeded on its own, so the result is the one an uninterrupted run
    gives. ``on_epoch_end`` is handed to :func:`~medlens.seg.train.fit_segnet`.
    """
    torch.manual_seed(seed)  # the initial weights too, or a rerun is not reproducible
    net = build_segnet(cfg, kind)
    card, weights = out_dir / TRAINED, out_dir / "model.safetensors"
    fp = fingerprint({"kind": kind, "seed": seed, "seg": cfg.seg.model_dump(mode="json"),
                      "train": cfg.train.model_dump(mode="json"), "in_chans": _in_chans(cfg),
                      "data": [data_digest(train), data_digest(val)]})
    if card.is_file() and weights.is_file() and json.loads(card.read_text()).get("fingerprint") == fp:
        log.info("%s: trained with these settings and data, not trained again", out_dir)
    else:
        card.unlink(missing_ok=True)
        fit_segnet(net, train, val, cfg.train, cfg.seg, seed=seed, out_dir=out_dir, progress=progress, resume="auto",
                   on_epoch_end=on_epoch_end)
        card.write_text(json.dumps({"fingerprint": fp}))
        (out_dir / LAST).unlink(missing_ok=True)  # three times the model's size, and of no use once finished
    net.load_state_dict(load_file(str(weights)))
    return net


def _predict(cfg: StudyConfig, net, data) -> dict:
    """``seg_prob``: a list of working-scale maps (full resolution) or an ``N×S×S`` array, plus any heads."""
    if isinstance(data, list):
        return {"seg_prob": predict_fullres(net, data, patch_size=cfg.seg.patch_size, flips=cfg.seg.tta_flips,
                                            overlap=cfg.seg.sw_overlap)}
    return predict(net, data.images, patch_size=cfg.seg.patch_size)


def _references(data) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reference masks and fields of view at the original scale (full resolution) or at train size."""
    if isinstance(data, list):
        return [it.truth for it in data], [it.fov_native for it in data]
    truth = list(data.masks[:, 0].numpy().astype(bool))
    fov = list(data.fov[:, 0].numpy().astype(bool)) if data.fov is not None else [np.ones_like(t) for t in truth]
    return truth, fov


def _native(data, prob) -> list[np.ndarray]:
    """Probability maps on the pixels the references have (resampled back from working scale)."""
    if isinstance(data, list):
        return [to_native(p, it.truth.shape) for p, it in zip(prob, data)]
    return list(prob)


def _mean(preds: list[dict]) -> dict:
    out = {}
    for k in preds[0]:
        if isinstance(preds[0][k], list):  # full-resolution maps differ in size: average image by image
            out[k] = [np.mean([p[k][i] for p in preds], axis=0) for i in range(len(preds[0][k]))]
        else:
            out[k] = np.mean([p[k] for p in preds], axis=0)
    return out


def seg_stage(run: Path, cfg: StudyConfig, *, progress=None) -> dict:
    """Train and evaluate the segmentation (or multi-task) study of a run directory.

    Every fold of ``splits.json`` is trained (or the first ``seg.folds``); test and
    external predictions average the fold models. With ``seg.threshold: validation`` the
    threshold maximises pooled Dice on the out-of-fold validation images.

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
    data = {name: seg_arrays(cfg, r) for name, r in parts.items()}
    main_preds: dict[str, list] = {p: [] for p in parts}
    clf_preds: dict[str, list] = {p: [] for p in parts}
    val_truth: list[np.ndarray] = []
    val_prob: list[np.ndarray] = []
    val_fov: list[np.ndarray] = []
    n_folds = min(s.folds or len(splits["folds"]), len(splits["folds"]))
    for k in range(n_folds):
        log.info("seg: fold %d of %d", k + 1, n_folds)
        fold = splits["folds"][k]
        train, val = seg_arrays(cfg, rows(fold["train"])), seg_arrays(cfg, rows(fold["val"]))
        seed = cfg.seed * 1000 + k
        net = train_segnet(cfg, s.task, train, val, out / f"fold_{k}", seed, progress)
        clf = train_segnet(cfg, "classifier", train, val, out / f"fold_{k}" / "classifier", seed, progress) \
            if s.compare_classifier and s.structure == "lesions" and not isinstance(train, list) else None
        truth, fov = _references(val)
        val_truth += truth
        val_fov += fov
        val_prob += _native(val, _predict(cfg, net, val)["seg_prob"])
        for p, arr in data.items():
            main_preds[p].append(_predict(cfg, net, arr))
            if clf is not None:
                clf_preds[p].append(predict(clf, arr.images))
    threshold = best_threshold(val_truth, val_prob, val_fov) if s.threshold == "validation" else float(s.threshold)
    val_counts = pixel_counts(val_truth, val_prob, val_fov, threshold=threshold).sum(0)
    metrics: dict = {"task": s.task, "structure": s.structure, "folds_trained": n_folds, "threshold": threshold,
                     "threshold_rule": "validation" if s.threshold == "validation" else "fixed",
                     "validation": {"f1": scores_from_counts(*val_counts)["f1"], "n_images": len(val_truth),
                                    "auc": pixel_auc(val_truth, val_prob, val_fov)},
                     "n_bootstrap": cfg.evaluate.n_bootstrap, "clahe": s.clahe, "resample": s.resample,
                     "image_size": cfg.train.image_size, "patch_size": s.patch_size, "channels": s.channels,
                     "published": [b.model_dump() for b in s.published], "architecture": s.architecture,
                     "parameters": int(sum(t.numel() for t in net.parameters()))}
    frames = []
    for p, arr in data.items():
        pred = _mean(main_preds[p])
        truth, fov = _references(arr)
        prob = [np.where(f, q, 0.0).astype(np.float32) for q, f in zip(_native(arr, pred["seg_prob"]), fov)]
        truth = [t & f for t, f in zip(truth, fov)]  # pixels outside the field of view count for nothing
        metrics["inside_fov"] = "fov_mask" in parts[p].columns
        groups = parts[p]["patient_id"].to_numpy()
        counts = pixel_counts(truth, prob, fov, threshold=threshold)
        frame = parts[p][["sample_id", "patient_id", "label"]].reset_index(drop=True)
        frame.insert(1, "part", p)
        frame[["tp", "fp", "fn", "tn"]] = counts
        frame["f1"] = [scores_from_counts(*c)["f1"] for c in counts]
        if s.structure == "vessels":
            summ = {"pixels": pixel_summary(truth, prob, fov, threshold=threshold, groups=groups,
                                            n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.seed)}
            observer = _second_observer(parts[p], arr, fov, groups, cfg)
            if observer is not None:
                summ["second_observer"] = observer
        else:
            stats = image_stats(np.stack(truth), np.stack(prob), threshold=threshold, size_bins=s.size_bins)
            clf_score = _mean(clf_preds[p])["cls_prob"] if clf_preds[p] else None
            summ = seg_summary(stats, arr.labels, groups=groups, cls_score=pred.get("cls_prob"),
                               baseline_score=clf_score, n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.seed)
            summ["lesion_size"] = size_table(stats, summ, s.size_bins)
            summ["detection"] = detection_summary(truth, prob, groups, threshold, cfg)
            if "severity" in pred and np.isfinite(arr.severity).any():  # a user's data may have no severity grades
                summ["severity"] = severity_summary(arr.severity, pred["severity"], arr.labels, groups=groups,
                                                    n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.seed)
            frame = pd.concat([frame, stats.drop(columns=["tp", "fp", "fn"])], axis=1)
            for key, col in (("cls_prob", "p_multitask"), ("severity", "severity_pred")):
                if key in pred:
                    frame[col] = pred[key]
            if clf_score is not None:
                frame["p_classifier"] = clf_score
            frame["severity"] = arr.severity
        if isinstance(arr, list):  # working scale / original scale of each image (1.0: not resampled)
            summ["scale"] = {"min": min(it.scale for it in arr), "max": max(it.scale for it in arr)}
        metrics[p] = summ
        frames.append(frame)
        if p == "test":
            _save_overlays(out / "overlays.npz", parts[p], frame["f1"].to_numpy(), truth, prob, fov, threshold)
    pd.concat(frames, ignore_index=True).to_parquet(out / "predictions.parquet", index=False)
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, default=float))
    write_seg_section(run)  # the report's section: run/sections/seg/
    return metrics


def detection_summary(truth: list[np.ndarray], prob: list[np.ndarray], groups: np.ndarray, threshold: float,
                      cfg: StudyConfig) -> dict:
    """The segmentation scored as a detector: components of ``prob >= threshold`` (score: their maximum)
    against one box per reference lesion, by :func:`medlens.evaluate.lesions.detection_summary` (the code
    the detector of ``task: detection`` is scored with); every component is shown, so the operating point
    is the segmentation threshold."""
    from medlens.evaluate.boxes import boxes_from_mask, boxes_from_probability
    from medlens.evaluate.lesions import detection_summary as summarise

    gt = [boxes_from_mask(t) for t in truth]
    pred = [boxes_from_probability(p, threshold) for p in prob]
    out = summarise(gt, pred, groups, threshold=threshold, n_boot=cfg.evaluate.n_bootstrap, seed=cfg.seed)
    return {**out, "candidates": "components of the thresholded map, scored by their maximum probability"}


def _second_observer(rows: pd.DataFrame, data, fov: list[np.ndarray], groups, cfg: StudyConfig) -> dict | None:
    """The second observer's mask scored against the reference like the model (None without one for every image)."""
    if "mask_2" not in rows.columns or not rows["mask_2"].map(lambda v: isinstance(v, str) and bool(v)).all():
        return None
    truth, _ = _references(data)
    other = [load_mask(ref).astype(bool) for ref in rows["mask_2"]]
    if isinstance(data, SegArrays):  # the reference is at train size there: compare at that size
        other = [resize(o.astype(np.float32)[None], t.shape[0])[0] > 0.5 for o, t in zip(other, truth)]
    truth = [t & f for t, f in zip(truth, fov)]
    out = pixel_summary(truth, [o.astype(np.float32) for o in other], fov, threshold=0.5, groups=groups,
                        n_bootstrap=cfg.evaluate.n_bootstrap, seed=cfg.seed)
    out.pop("auc")  # a binary mask has no ranking: its "AUC" is only (sensitivity + specificity) / 2
    return out


def _save_overlays(path: Path, rows: pd.DataFrame, f1: np.ndarray, truth: list[np.ndarray], prob: list[np.ndarray],
                   fov: list[np.ndarray], threshold: float) -> None:
    """Best, median and worst test images by F1 (among images with a true foreground), unprocessed, at the
    resolution of the references."""
    with_fg = np.flatnonzero([t.any() for t in truth])
    if with_fg.size == 0:
        return
    order = with_fg[np.argsort(-np.nan_to_num(f1[with_fg], nan=-1.0), kind="stable")]
    pick = [order[0], order[len(order) // 2], order[-1]]
    images = []
    for i in pick:
        img = load_image(rows["image"].iloc[i])
        if img.shape[1:] != truth[i].shape:
            img = resize(img, truth[i].shape[0])
        images.append(np.clip(to_channels(img, 3) * 255 + 0.5, 0, 255).astype(np.uint8))
    np.savez_compressed(path, image=np.stack(images), truth=np.stack([truth[i] for i in pick]).astype(np.uint8),
                        pred=np.stack([prob[i] > threshold for i in pick]).astype(np.uint8),
                        fov=np.stack([fov[i] for i in pick]).astype(np.uint8), dice=f1[pick],
                        case=np.array(["best", "median", "worst"]),
                        sample_id=np.array([rows["sample_id"].iloc[i] for i in pick]))

