"""Label-efficiency curves (``medlens probe``): how many labels does a pretrained encoder save?

For each encoder — random initialisation, every pretrained ``run/ssl/<method>/``, and a
local ImageNet checkpoint if ``ssl.imagenet`` names one — and each share of the labeled
training patients (``ssl.fractions``, drawn ``ssl.probe_seeds`` times, the same draws for
every encoder so the comparison is paired), a classifier is fitted and scored on the
study's held-out test set:

- ``linear``: frozen features → standardisation → logistic regression (scikit-learn);
- ``finetune``: the whole network trained with the study's ``train``/``engine`` settings,
  its best epoch chosen on fold 0's validation patients.

Patients are drawn stratified by their label (a patient is positive if any image is), with
at least one patient of every class. The labeled pool is fold 0's training patients; test
and external images never take part. Outputs: ``run/ssl/probe.csv`` (one row per encoder,
fraction and draw) and ``run/ssl/probe.json`` (curves and the labels-saved figure).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from rich.progress import Progress

from medlens.data.arrays import normalise
from medlens.data.cache import ImageCache, build_cache
from medlens.data.preprocess import Preprocess
from medlens.errors import ConfigError
from medlens.models import create_model
from medlens.ssl.pretraining import encoder_name, pretrain_size
from medlens.ssl.report import write_ssl_section
from medlens.train.loop import seed_everything

if TYPE_CHECKING:
    from medlens.config import StudyConfig

log = logging.getLogger(__name__)

RANDOM = "random init"
FINETUNED = ", fine-tuned"
SUPERVISED = RANDOM + FINETUNED  # the supervised baseline: the same architecture trained end to end on the labels


@dataclass(frozen=True)
class Encoder:
    """One curve of the probe: a label, a timm name, an image size and a weights file (or none)."""

    label: str
    model: str
    image_size: int
    weights: Path | None = None


def find_encoders(cfg: StudyConfig) -> list[Encoder]:
    """Random init of every architecture in play, each ``run/ssl/<method>/encoder.safetensors``, and ``ssl.imagenet``.

    Every curve uses the pretraining image size, so the encoders see the same pixels.
    """
    size = pretrain_size(cfg)
    found = []
    for card_path in sorted((cfg.out / "ssl").glob("*/card.json")):
        card = json.loads(card_path.read_text())
        found.append(Encoder(card["method"], card["model"], int(card["image_size"]), card_path.parent / "encoder.safetensors"))
    if cfg.ssl.imagenet is not None:
        found.append(Encoder("imagenet", cfg.model.name, size, Path(cfg.ssl.imagenet)))
    first = encoder_name(cfg, "simclr")
    archs = [first] + sorted({e.model for e in found} - {first})
    return [Encoder(RANDOM if i == 0 else f"{RANDOM} ({a})", a, size) for i, a in enumerate(archs)] + found


def sample_patients(rows: pd.DataFrame, fraction: float, seed: int, *, label: str = "label") -> list[str]:
    """Sample ids of ``fraction`` of the patients in ``rows``, stratified by patient label, ≥ 1 patient per class.

    A patient's label is the largest label among its images (binary: positive if any image is).
    """
    rng = np.random.default_rng(seed)
    by_patient = rows.groupby("patient_id")[label].max()
    n_take = max(by_patient.nunique(), int(round(fraction * len(by_patient))))
    chosen: list = []
    for _, group in by_patient.groupby(by_patient):  # one per class first, then the class's share
        members = group.index.to_numpy()
        share = max(1, int(round(n_take * len(members) / len(by_patient))))
        chosen.extend(rng.choice(members, size=min(share, len(members)), replace=False))
    keep = set(chosen)
    return rows.loc[rows["patient_id"].isin(keep), "sample_id"].tolist()


@torch.no_grad()
def features(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Pooled features ``N×D`` of a headless timm network (eval mode) for uint8 images."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(normalise(images[i:i + batch_size].to(device))).float().cpu()
                      for i in range(0, len(images), batch_size)]).numpy()


def auc_with_ci(y: np.ndarray, proba: np.ndarray, *, seed: int) -> tuple[float, float, float]:
    """Test AUC and its 95% CI: DeLong (binary) or a 500-resample stratified bootstrap (macro one-vs-rest)."""
    from medlens.evaluate import bootstrap_ci
    from medlens.evaluate.delong import delong_ci
    from medlens.train.loop import validation_auc

    if proba.shape[1] == 2:
        e = delong_ci(y, proba[:, 1])
    else:
        e = bootstrap_ci(validation_auc, y, proba, n_resamples=500, seed=seed)
    return e.value, e.low, e.high


def _linear(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, classes: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    clf.fit(train_x, train_y)
    proba = np.zeros((len(test_x), classes))
    proba[:, clf.classes_] = clf.predict_proba(test_x)
    return proba


def _finetune(cfg: StudyConfig, enc: Encoder, train: tuple[torch.Tensor, np.ndarray],
              val: tuple[torch.Tensor, np.ndarray], test_x: torch.Tensor, classes: int, seed: int,
              out_dir: Path) -> np.ndarray:
    from safetensors.torch import load_file

    from medlens.train.loop import fit, predict_proba

    seed_everything(seed)
    model = create_model(enc.model, num_classes=classes, in_chans=cfg.model.in_chans, pretrained=enc.weights,
                         image_size=enc.image_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    update: dict = {"image_size": enc.image_size}
    if cfg.ssl.finetune_steps is not None:
        update["steps"] = cfg.ssl.finetune_steps
    fit(model, train, val, cfg.train.model_copy(update=update), num_classes=classes, seed=seed, out_dir=out_dir,
        engine=cfg.engine.model_copy(update={"checkpoint": False}))
    model.load_state_dict(load_file(str(out_dir / "model.safetensors")))
    return predict_proba(model, test_x)


def curve_name(enc: Encoder, mode: str) -> str:
    """The curve of an encoder in a mode: its label, plus ``", fine-tuned"`` when fine-tuned."""
    return enc.label if mode == "linear" else f"{enc.label}{FINETUNED}"


def probe(cfg: StudyConfig, encoders: list[Encoder] | None = None, *, mode: str | None = None,
          progress: Progress | None = None) -> dict:
    """Fit and score every encoder at every label fraction; write ``run/ssl/probe.{csv,json}``.

    Parameters
    ----------
    cfg : StudyConfig
        A study whose ingest and split stages have run (``medlens run`` or ``medlens pretrain``).
    encoders : list of Encoder, optional
        Default: :func:`find_encoders`.
    mode : {'linear', 'finetune', 'both'}, optional
        Default ``ssl.probe_mode``. Fine-tuning uses ``ssl.finetune_fractions``,
        ``ssl.finetune_seeds`` (the first draws) and ``ssl.finetune_steps``.

    Returns
    -------
    dict
        The ``probe.json`` summary (:func:`summarise`).
    """
    from medlens.train.fold import target_columns, targets, task_classes
    from medlens.train.tune import load_inputs

    if cfg.engine.task != "classification":
        raise ConfigError(f"ssl probe: engine.task {cfg.engine.task} is not supported (classification only)")
    mode = mode or cfg.ssl.probe_mode
    modes = ["linear", "finetune"] if mode == "both" else [mode]
    manifest, splits = load_inputs(cfg)
    by_id = manifest.set_index("sample_id")
    pool = by_id.loc[splits["folds"][0]["train"]].reset_index()
    val_ids, test_ids = splits["folds"][0]["val"], splits["test"]
    classes = task_classes(cfg, manifest)
    y_test = targets(cfg, by_id.loc[test_ids].reset_index())
    encoders = encoders or find_encoders(cfg)
    label = target_columns(cfg)[0]
    draws = {(f, s): sample_patients(pool, f, seed=cfg.seed * 1000 + s, label=label)
             for f in cfg.ssl.fractions for s in range(cfg.ssl.probe_seeds)}
    tuned = set(cfg.ssl.finetune_fractions or cfg.ssl.fractions)
    n_tuned = min(cfg.ssl.finetune_seeds or cfg.ssl.probe_seeds, cfg.ssl.probe_seeds)
    plan = {m: [k for k in draws if m == "linear" or (k[0] in tuned and k[1] < n_tuned)] for m in modes}
    rows, scores = [], {}
    task = (progress.add_task(f"probe ({mode})", total=len(encoders) * sum(map(len, plan.values())))
            if progress is not None else None)
    pos = {sid: i for i, sid in enumerate(pool["sample_id"])}
    pool_y = targets(cfg, pool)
    patient_of = pool.set_index("sample_id")["patient_id"]

    def load(ids: list[str], size: int) -> ImageCache:
        return build_cache(cfg.out, by_id.loc[ids, "image"].tolist(), Preprocess.from_config(cfg, size=size))

    images: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for m in modes:
        for enc in encoders:
            if enc.image_size not in images:
                images[enc.image_size] = (load(pool["sample_id"].tolist(), enc.image_size),
                                          load(test_ids, enc.image_size))
            pool_x, test_x = images[enc.image_size]
            if m == "linear":
                seed_everything(cfg.seed)  # random init is a fixed draw
                net = create_model(enc.model, num_classes=0, in_chans=cfg.model.in_chans, pretrained=enc.weights,
                                   image_size=enc.image_size)
                pool_f, test_f = features(net, pool_x), features(net, test_x)
            else:
                val = (load(val_ids, enc.image_size), targets(cfg, by_id.loc[val_ids].reset_index()))
            name = curve_name(enc, m)
            for f, s in plan[m]:
                idx = np.array([pos[i] for i in draws[f, s]])
                if m == "linear":
                    proba = _linear(pool_f[idx], pool_y[idx], test_f, classes)
                else:
                    proba = _finetune(cfg, enc, (pool_x[idx], pool_y[idx]), val, test_x, classes,
                                      seed=cfg.seed * 1000 + s,
                                      out_dir=cfg.out / "ssl" / "finetune" / enc.label.replace(" ", "_") / f"{f:g}_{s}")
                auc, low, high = auc_with_ci(y_test, proba, seed=cfg.seed)
                scores[name, f, s] = proba
                rows.append({"encoder": name, "model": enc.model, "mode": m, "fraction": f, "draw": s,
                             "patients": int(patient_of.loc[draws[f, s]].nunique()),
                             "images": len(draws[f, s]), "auc": auc, "low": low, "high": high})
                if task is not None:
                    progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    table = pd.DataFrame(rows)
    summary = summarise(table, mode=mode, n_test=len(test_ids), pool_patients=int(pool["patient_id"].nunique()))
    summary["versus_supervised"] = versus_supervised(table, scores, y_test)
    out = cfg.out / "ssl"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "probe.csv", index=False)
    (out / "probe.json").write_text(json.dumps(summary, indent=1))
    write_ssl_section(cfg.out)  # the report's section: run/sections/ssl/
    return summary


def versus_supervised(table: pd.DataFrame, scores: dict[tuple[str, float, int], np.ndarray],
                      y_test: np.ndarray) -> list[dict]:
    """Each fine-tuned pretrained curve, at each share, against the supervised baseline with all labels.

    The baseline is :data:`SUPERVISED` at the largest fine-tuned share. For binary tasks
    each draw is compared with the baseline's draw of the same index (modulo its draws) by
    DeLong's paired test on the same test images; ``p_max`` is the largest p over draws.

    Returns
    -------
    list of dict
        ``encoder``, ``fraction``, ``auc`` (mean over draws), ``supervised_auc``, ``difference``,
        ``p`` (per draw; empty for multi-class) and ``p_max``. Empty without a baseline.
    """
    from medlens.evaluate.delong import delong_test

    tuned = table[table["mode"] == "finetune"]
    base = tuned[tuned["encoder"] == SUPERVISED]
    if base.empty:
        return []
    top = float(base["fraction"].max())
    base = base[base["fraction"] == top].sort_values("draw")
    ref_auc, ref_draws = float(base["auc"].mean()), base["draw"].tolist()
    out = []
    for (enc, f), g in tuned[tuned["encoder"] != SUPERVISED].groupby(["encoder", "fraction"], sort=False):
        p = [] if scores[enc, f, int(g["draw"].iloc[0])].shape[1] != 2 else [
            delong_test(y_test, scores[enc, f, d][:, 1],
                        scores[SUPERVISED, top, ref_draws[d % len(ref_draws)]][:, 1]).p_value
            for d in g["draw"]]
        out.append({"encoder": enc, "fraction": float(f), "auc": float(g["auc"].mean()), "supervised_fraction": top,
                    "supervised_auc": ref_auc, "difference": float(g["auc"].mean()) - ref_auc,
                    "p": p, "p_max": max(p) if p else None})
    return out


def labels_saved(curve: dict[float, float], reference: float) -> float | None:
    """``1 − f``, where ``f`` is the smallest label fraction whose AUC reaches ``reference``; None if none does."""
    reached = [f for f, auc in sorted(curve.items()) if auc >= reference]
    return 1.0 - reached[0] if reached else None


def summarise(table: pd.DataFrame, *, mode: str, n_test: int, pool_patients: int) -> dict:
    """Per-curve means over draws, and labels saved.

    ``labels_saved``: each pretrained curve against random initialisation of the same
    architecture, in the same mode (linear or fine-tuned), with that mode's largest share.
    ``labels_saved_vs_supervised``: each pretrained curve, linear or fine-tuned, against the
    supervised baseline (:data:`SUPERVISED`) with its largest share; empty without one.
    """
    if "mode" not in table:
        table = table.assign(mode=mode)
    curves, models, modes = {}, {}, {}
    for enc, g in table.groupby("encoder", sort=False):
        agg = g.groupby("fraction").agg(auc=("auc", "mean"), sd=("auc", "std"), low=("low", "mean"),
                                        high=("high", "mean"), patients=("patients", "mean"))
        curves[enc] = [{"fraction": float(f), **{k: (None if isinstance(v, float) and math.isnan(v) else float(v))
                                                 for k, v in r.items()}} for f, r in agg.iterrows()]
        models[enc], modes[enc] = g["model"].iloc[0], g["mode"].iloc[0]

    def top_auc(enc: str) -> tuple[float, float]:
        last = curves[enc][-1]
        return last["fraction"], last["auc"]

    randoms = {(models[e], modes[e]): e for e in curves if e.startswith(RANDOM)}
    saved = {e: labels_saved({p["fraction"]: p["auc"] for p in pts}, top_auc(randoms[models[e], modes[e]])[1])
             for e, pts in curves.items() if not e.startswith(RANDOM) and (models[e], modes[e]) in randoms}
    supervised = None
    if SUPERVISED in curves:
        f, auc = top_auc(SUPERVISED)
        supervised = {"encoder": SUPERVISED, "fraction": f, "auc": auc}
    vs_supervised = {e: labels_saved({p["fraction"]: p["auc"] for p in pts}, supervised["auc"])
                     for e, pts in curves.items()
                     if supervised is not None and not e.startswith(RANDOM) and models[e] == models[SUPERVISED]}
    first = next((e for e in curves if e.startswith(RANDOM)), None)
    reference = {"encoder": first, "fraction": None, "auc": None}
    if first is not None:
        reference["fraction"], reference["auc"] = top_auc(first)
    return {"mode": mode, "test_images": n_test, "pool_patients": pool_patients, "draws": int(table["draw"].nunique()),
            "reference": reference, "supervised": supervised, "curves": curves, "labels_saved": saved,
            "labels_saved_vs_supervised": vs_supervised}
