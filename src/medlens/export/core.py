"""``export_run``: a finished run directory -> ``run/export/`` (ONNX, parity, OOD gate, Triton repository).

Outputs::

    export/model.onnx            fp32, opset 17, dynamic batch, metadata (preprocessing, classes, threshold)
    export/model.<fp16|int8>.onnx  optional quantised copy
    export/ood.safetensors, ood.json  the OOD gate on the ``features`` output (medlens.inference.ood)
    export/cam.safetensors       the explained fold model, for the service's heat map (medlens.inference.cam)
    export/export.json           what the service needs (preprocessing, classes, threshold, QC limits, the CAM's
                                 layer and method, the model card's aggregate facts), and parity, latency vs
                                 PyTorch, quantisation AUC change, OOD calibration
    export/model_repository/     Triton (GPU + CPU variants) with README

``medlens serve`` runs from this folder alone; nothing in it names a patient, a sample or a path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

import medlens
from medlens.config import StudyConfig, parse_config
from medlens.data.manifest import load_manifest
from medlens.data.preprocess import Preprocess
from medlens.data.splits import load_splits
from medlens.errors import ConfigError, MedlensError, StageInputMissing
from medlens.export import onnx_export as ox
from medlens.export.card import classifier_card
from medlens.export.report import write_export_section
from medlens.export.triton import README, classifier_outputs, write_repository
from medlens.inference import load_ensemble
from medlens.inference.cam import save_explained_member
from medlens.qc.learn import applied_config

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("none", "fp16", "int8")


def run_config(run: Path) -> StudyConfig:
    """The resolved config a run recorded in ``config.yaml``."""
    path = run / "config.yaml"
    if not path.is_file():
        raise StageInputMissing(f"{path} not found; is {run} a medlens run directory? (`medlens run` writes it)")
    return parse_config(yaml.safe_load(path.read_text()), source=str(path))


def fold_ids(run: Path) -> list[int]:
    """Indices of the folds with a trained model."""
    folds = sorted(int(p.parent.name.split("_")[1]) for p in run.glob("fold_*/model.safetensors"))
    if not folds:
        raise StageInputMissing(f"no fold_*/model.safetensors in {run}; run `medlens run CONFIG` first")
    return folds


def class_names(manifest: pd.DataFrame, num_classes: int) -> list[str]:
    """``label_name`` per class index when the manifest has it, else the index as text."""
    names = [str(k) for k in range(num_classes)]
    if "label_name" in manifest.columns:
        for k, name in manifest.dropna(subset=["label"]).groupby("label")["label_name"].first().items():
            names[int(k)] = str(name)
    return names


def triton_name(study: str) -> str:
    """A Triton model name from the study name."""
    return "medlens_" + re.sub(r"[^A-Za-z0-9_]", "_", study)


def _select(fold: str | int | None, available: list[int]) -> list[int]:
    if fold in (None, "ensemble"):
        return available
    try:
        k = int(fold)
    except ValueError:
        raise ConfigError(f"--fold must be 'ensemble' or a fold number in {available}, got {fold!r}") from None
    if k not in available:
        raise ConfigError(f"--fold {k}: no trained model; trained folds are {available}")
    return [k]


def export_run(run: Path, *, fold: str | int | None = "ensemble", quantize: str = "none", max_batch_size: int = 32,
               n_parity: int = 256, tolerance: float = ox.PARITY_TOLERANCE, benchmark: bool = True,
               ship_quantized: bool = False) -> dict:
    """Export a finished run for deployment and write ``export/export.json``.

    Parameters
    ----------
    run : path
        A run directory with ``config.yaml``, ``manifest.parquet``, ``splits.json``,
        ``fold_k/model.safetensors`` and (for the operating point) ``metrics.json``.
    fold : {'ensemble'} or int, default='ensemble'
        All fold models averaged (as the study's test metrics are), or one fold.
    quantize : {'none', 'fp16', 'int8'}, default='none'
        Also write a quantised copy and report its test AUC change.
    max_batch_size : int, default=32
        Triton ``max_batch_size``.
    n_parity : int, default=256
        Held-out images (test, then external) for the parity check.
    tolerance : float, default=1e-4
        Parity failure threshold on probabilities.
    benchmark : bool, default=True
        Time batch-1 ONNX Runtime vs PyTorch eager.
    ship_quantized : bool, default=False
        Ship the quantised copy instead of the fp32 graph: it goes into the Triton repository,
        ``medlens serve`` loads it and the OOD gate is fitted on its features
        (``export.json``: ``shipped``). Needs ``quantize`` other than 'none'.

    Returns
    -------
    dict
        The content of ``export.json``.
    """
    run = Path(run)
    if quantize not in QUANTIZE_MODES:
        raise ConfigError(f"--quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if ship_quantized and quantize == "none":
        raise ConfigError("--ship-quantized needs --quantize fp16 or int8 (there is no quantised copy to ship)")
    cfg = run_config(run)
    manifest, splits = load_manifest(run / "manifest.parquet"), load_splits(run / "splits.json")
    k_classes = max(2, int(manifest["label"].max()) + 1)
    folds = _select(fold, fold_ids(run))
    ensemble = load_ensemble(run, cfg, folds=folds)
    pre = Preprocess.from_config(cfg)
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    threshold = (metrics.get("operating_point") or {}).get("threshold")
    names = class_names(manifest, k_classes)
    size, chans = cfg.train.image_size, cfg.model.in_chans
    out = run / "export"
    out.mkdir(parents=True, exist_ok=True)
    meta = ox.metadata_for(image_size=size, in_chans=chans, class_names=names, folds=folds, model_name=cfg.model.name,
                           threshold=threshold, version=medlens.__version__, preprocess=pre.to_dict(),
                           calibration=ensemble.calibrations)
    onnx_path = ox.export_onnx(ensemble, out / "model.onnx", image_size=size, in_chans=chans, metadata=meta)

    by_id = manifest.set_index("sample_id")

    def tensor(ids: list[str]) -> torch.Tensor:
        return pre.load(by_id.loc[ids, "image"].tolist())

    held_ids = (list(splits["test"]) + list(splits["external"]))[:n_parity]
    if not held_ids:
        raise StageInputMissing(f"{run / 'splits.json'} has no test or external images for the parity check")
    # from the raw image files, through the preprocessing contract, to the evaluated predictions.parquet
    reference = None
    if fold == "ensemble" and (run / "predictions.parquet").is_file():
        pred = pd.read_parquet(run / "predictions.parquet")
        pred = pred[pred["part"].isin(["test", "external"])].drop_duplicates("sample_id").set_index("sample_id")
        reference = pred.loc[held_ids, [f"p{c}" for c in range(k_classes)]].to_numpy(float)
    # each held-out image is decoded once: for parity (the first n_parity), quantisation and the gate's refusals
    test_ids, ext_ids = list(splits["test"]), list(splits["external"])
    test_x = tensor(test_ids) if test_ids else None
    ext_x = tensor(ext_ids) if ext_ids else None
    fp32 = ox.session(onnx_path, threads=2)
    held_x = torch.cat([x for x in (test_x, ext_x) if x is not None])[:n_parity]
    parity = ox.parity_check(ensemble, fp32, held_x, tolerance=tolerance, reference=reference)
    log.info("parity: max |p_onnx - p_torch| = %.2e over %d images", parity["max_abs_diff"], parity["n_images"])

    quantization, sess = None, fp32
    if quantize != "none":
        quantization, q_sess = _quantized(fp32, onnx_path, out, quantize, test_x, by_id.loc[test_ids, "label"])
        if ship_quantized:
            if q_sess is None:
                raise MedlensError(f"the {quantize} copy does not run here ({quantization['error']}); export "
                                   "without --ship-quantized")
            sess = q_sess
    shipped = out / quantization["path"] if ship_quantized else onnx_path
    ood_info = ox.fit_served_gate(sess, tensor, by_id["label"], splits, folds, n=cfg.trust.ood_fit_images,
                                  pass_rate=cfg.trust.ood_pass_rate, seed=cfg.seed, out=out,
                                  held_out={"test": test_x, "external": ext_x})
    cam = save_explained_member(run, cfg, out)  # the heat map's model, so that serve needs no run directory
    info = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "medlens_version": medlens.__version__,
        "task": "classification", "model_name": cfg.model.name, "folds": folds, "opset": ox.OPSET, "image_size": size,
        "in_chans": chans, "class_names": names, "operating_threshold": threshold, "num_classes": k_classes,
        "n_features": ood_info["n_features"], "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "parity": parity, "ood": ood_info, "triton_name": triton_name(cfg.name), "preprocess": pre.to_dict(),
        "calibration": ensemble.calibrations, "qc": applied_config(run, cfg.qc).model_dump(mode="json"),
        "onnx_size_bytes": onnx_path.stat().st_size, "shipped": shipped.name,
        "cam": cam, "card": classifier_card(manifest, splits, metrics, threshold),
    }
    if benchmark:
        info["latency_batch1"] = ox.latency_benchmark(ensemble, onnx_path, held_x[:1])
    if quantization is not None:
        info["quantization"] = quantization
    readme = README.format(name=info["triton_name"], in_chans=chans, size=size, k=k_classes, members=len(folds),
                           feats=info["n_features"], version=medlens.__version__, mean=0.5, std=0.25, classes=names,
                           threshold="n/a" if threshold is None else f"{threshold:.4f}")
    write_repository(out / "model_repository", shipped, info["triton_name"], in_chans=chans, image_size=size,
                     outputs=classifier_outputs(k_classes, len(folds), info["n_features"]), readme=readme,
                     max_batch_size=max_batch_size)
    (out / "export.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    write_export_section(run)  # the report's deployment section: run/sections/export/
    return info


def _quantized(fp32, onnx_path: Path, out: Path, mode: str, x: torch.Tensor | None,
               y: pd.Series) -> tuple[dict, object | None]:
    """Write the quantised model and compare its test AUC with the fp32 export (session ``fp32``).

    Returns the ``quantization`` entry of ``export.json`` and a session of the quantised
    graph (None where ONNX Runtime cannot run it on this CPU).
    """
    from medlens.evaluate import auc_score

    q_path = ox.quantize(onnx_path, out / f"model.{mode}.onnx", mode)
    result = {"mode": mode, "path": q_path.name, "size_bytes": q_path.stat().st_size,
              "fp32_size_bytes": onnx_path.stat().st_size}
    try:
        q_sess = ox.session(q_path, threads=2)
        pq = ox.onnx_proba(q_sess, x) if x is not None else None
    except Exception as err:  # e.g. an fp16 kernel missing on this CPU build of ONNX Runtime
        result["error"] = f"{type(err).__name__}: {str(err)[:200]}"
        return result, None
    if x is None:
        return result, q_sess
    p32 = ox.onnx_proba(fp32, x)
    result["max_abs_diff_vs_fp32"] = float(np.abs(pq - p32).max())
    y = y.to_numpy(int)
    if p32.shape[1] == 2 and len(np.unique(y)) == 2:
        a32, aq = auc_score(y, p32[:, 1]), auc_score(y, pq[:, 1])
        result.update({"test_auc_fp32": float(a32), f"test_auc_{mode}": float(aq), "test_auc_change": float(aq - a32)})
    return result, q_sess
