"""``export_detector``: a detection run -> ``run/det/export/`` (ONNX with decoding, parity, OOD gate, Triton).

The exported graph is :class:`medlens.detection.model.Detector` itself: fold ensemble,
heat-map peak finding (3×3 max-pool), top-k and box decoding are all inside it, so a
client gets boxes and scores, not maps. Outputs::

    det/export/model.onnx           image [N, C, S, S] in [0, 1] -> boxes [N, k, 4], scores [N, k], features [N, F]
    det/export/ood.safetensors, ood.json  the OOD gate on ``features`` (medlens.inference.ood)
    det/export/export.json          what the service needs (preprocessing, operating point, QC limits, the model
                                    card's aggregate facts), parity against the evaluated boxes, gate calibration
    det/export/model_repository/    Triton (GPU + CPU variants) with README

``medlens serve`` runs from this folder alone; nothing in it names a patient, a sample or a path.

Parity is checked from the raw test files, through the preprocessing contract and ONNX
Runtime, against ``det/predictions.parquet`` (what was evaluated): the same boxes per image
(IoU ≥ 0.99 each) and scores within 1e-4.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

import medlens
from medlens.config import StudyConfig
from medlens.data.preprocess import Preprocess
from medlens.evaluate.boxes import box_iou
from medlens.detection.report import write_det_export_section
from medlens.detection.stage import load_detector, study_rows
from medlens.export import onnx_export as ox
from medlens.export.card import detector_card
from medlens.export.triton import write_repository
from medlens.qc.learn import applied_config

__all__ = ["OUTPUTS", "compare_boxes", "export_detector", "onnx_boxes"]

log = logging.getLogger(__name__)
OUTPUTS = ("boxes", "scores", "features")
IOU_MIN, SCORE_TOL = 0.99, 1e-4

README = """# Triton model repository for `{name}` (lesion detector, exported by medlens {version})

Two models hold the same ONNX file: `{name}` on GPU (`KIND_GPU`) and `{name}_cpu` on CPU (`KIND_CPU`):

```
tritonserver --model-repository=$PWD/model_repository --model-control-mode=explicit --load-model={name}_cpu
```

Input `image`: FP32 `[batch, {in_chans}, {size}, {size}]` in [0, 1], prepared as in training
(`preprocess` in `../export.json`: {steps}). Normalisation and **box decoding are inside the graph**:
the fold models' heat maps are averaged, peaks are the 3x3 local maxima, and the top {k} peaks are returned.

Outputs: `boxes` `[batch, {k}, 4]` (`x0, y0, x1, y1` in input pixels, exclusive ends), `scores`
`[batch, {k}]` (highest first; 0 marks an empty slot), `features` `[batch, {feats}]` (for the OOD gate in
`../ood.safetensors`, `../ood.json`). Show the boxes with score >= {threshold} (the operating point chosen on validation data);
drop scores below {min_score} (never candidates). `medlens serve` on the export folder (`..`, on its own)
offers `POST /v1/detect` with the QC and OOD gates, auth and an audit log, and maps the boxes back to the
uploaded image's pixels.
"""


def onnx_boxes(sess, images: np.ndarray, *, min_score: float, batch_size: int = 64) -> tuple[list, np.ndarray]:
    """ONNX Runtime candidates of a uint8 ``N×C×S×S`` array: per image ``(boxes, scores)`` scoring ≥ ``min_score``, and the features."""
    out, feats = [], []
    for i in range(0, len(images), batch_size):
        b, s, f = sess.run(list(OUTPUTS), {ox.INPUT: images[i:i + batch_size].astype(np.float32) / 255.0})
        for bi, si in zip(b.astype(np.float64), s.astype(np.float64)):
            keep = si >= max(min_score, 1e-12)
            out.append((bi[keep], si[keep]))
        feats.append(f)
    return out, np.concatenate(feats).astype(np.float64)


def compare_boxes(a: list[tuple[np.ndarray, np.ndarray]], b: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Box-by-box agreement of two detectors' outputs on the same images.

    Each box of either side is paired with the box of the other side it overlaps most
    (order-free: equal scores may come out of top-k in any order). Returns ``n_images``,
    ``n_boxes``, ``count_mismatches`` (images with a different number of boxes),
    ``min_iou`` over the pairs and ``max_score_diff`` between paired boxes.
    """
    mismatches, ious, diffs, n = 0, [1.0], [0.0], 0
    for (ba, sa), (bb, sb) in zip(a, b):
        if len(sa) != len(sb):
            mismatches += 1
            continue
        if len(sa):
            iou = box_iou(ba, bb)
            for m, sx, sy in ((iou, sa, sb), (iou.T, sb, sa)):
                j = m.argmax(1)
                ious.append(float(m[np.arange(len(j)), j].min()))
                diffs.append(float(np.abs(sx - sy[j]).max()))
        n += len(sa)
    return {"n_images": len(a), "n_boxes": n, "count_mismatches": mismatches, "min_iou": min(ious),
            "max_score_diff": max(diffs)}


def _evaluated(run: Path, ids: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The evaluated candidates of ``ids`` from ``det/predictions.parquet``."""
    pred = pd.read_parquet(run / "det" / "predictions.parquet")
    groups = {sid: g for sid, g in pred.groupby("sample_id")}
    empty = (np.zeros((0, 4)), np.zeros(0))
    return [(groups[i][["x0", "y0", "x1", "y1"]].to_numpy(float), groups[i]["score"].to_numpy(float))
            if i in groups else empty for i in ids]


def export_detector(run: Path, cfg: StudyConfig, *, n_parity: int = 256, max_batch_size: int = 32) -> dict:
    """Export the run's fold detectors and write ``det/export/export.json``.

    Raises
    ------
    medlens.export.onnx_export.ParityError
        When ONNX Runtime's boxes differ from the evaluated ones (count, IoU < 0.99 or
        score difference > 1e-4): the export must not be deployed.
    """
    run, d = Path(run), cfg.detection
    by_id, splits = study_rows(run)
    detector = load_detector(run, cfg)
    prep = Preprocess.from_config(cfg)
    metrics = json.loads((run / "det" / "metrics.json").read_text())
    out = run / "det" / "export"
    out.mkdir(parents=True, exist_ok=True)
    size, chans, folds = prep.size, prep.in_chans, list(range(len(detector.members)))
    meta = ox.metadata_for(image_size=size, in_chans=chans, class_names=["lesion"], folds=folds,
                           model_name="medlens DetNet (CenterNet head on a U-Net)", threshold=metrics["threshold"],
                           version=medlens.__version__, preprocess=prep.to_dict())
    meta.update(outputs=json.dumps(list(OUTPUTS)), max_detections=str(detector.k), box_format="x0,y0,x1,y1 input px")
    onnx_path = ox.export_onnx(detector, out / "model.onnx", image_size=size, in_chans=chans, metadata=meta,
                               outputs=OUTPUTS)
    sess = ox.session(onnx_path, threads=2)

    held = [i for i in list(splits["test"]) + list(splits["external"]) if i in by_id.index][:n_parity]
    served, _ = onnx_boxes(sess, prep.load(by_id.loc[held, "image"].tolist()).numpy(), min_score=d.min_score)
    parity = {**compare_boxes(served, _evaluated(run, held)), "iou_min_required": IOU_MIN, "score_tolerance": SCORE_TOL}
    parity["passed"] = bool(parity["count_mismatches"] == 0 and parity["min_iou"] >= IOU_MIN
                            and parity["max_score_diff"] <= SCORE_TOL)
    if not parity["passed"]:
        raise ox.ParityError(f"ONNX boxes differ from the evaluated ones on {parity['n_images']} held-out images: "
                             f"{parity['count_mismatches']} count mismatch(es), min IoU {parity['min_iou']:.4f}, max "
                             f"score difference {parity['max_score_diff']:.1e}; do not deploy this export")

    kept = {"folds": [{part: [s for s in f[part] if s in by_id.index] for part in ("train", "val")}  # QC-passed
                      for f in splits["folds"]]}

    def load(ids: list[str]):
        return prep.load(by_id.loc[ids, "image"].tolist())

    held_out = {part: load(ids) for part in ("test", "external")
                if (ids := [s for s in splits[part] if s in by_id.index])}
    ood_info = ox.fit_served_gate(sess, load, None, kept, folds, n=cfg.trust.ood_fit_images,
                                  pass_rate=cfg.trust.ood_pass_rate, seed=cfg.seed, out=out, held_out=held_out)
    name = f"{cfg.name}_detector".replace("-", "_").replace(".", "_")
    info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "medlens_version": medlens.__version__,
            "task": "detection", "folds": folds, "opset": ox.OPSET, "image_size": size, "in_chans": chans,
            "max_detections": detector.k, "min_score": d.min_score, "operating_threshold": metrics["threshold"],
            "outputs": list(OUTPUTS), "n_features": ood_info["n_features"], "parity": parity, "ood": ood_info,
            "preprocess": prep.to_dict(), "qc": applied_config(run, cfg.qc).model_dump(mode="json"),
            "triton_name": name, "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "onnx_size_bytes": onnx_path.stat().st_size, "card": detector_card(metrics)}
    readme = README.format(name=name, version=medlens.__version__, in_chans=chans, size=size, k=detector.k,
                           feats=info["n_features"], threshold=f"{metrics['threshold']:.4f}", min_score=d.min_score,
                           steps=prep.to_dict()["steps"])
    write_repository(out / "model_repository", onnx_path, name, in_chans=chans, image_size=size,
                     outputs=[("boxes", [detector.k, 4]), ("scores", [detector.k]), ("features", [info["n_features"]])],
                     readme=readme, max_batch_size=max_batch_size)
    (out / "export.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    log.info("det export: parity over %d images, min IoU %.4f, max score diff %.1e", parity["n_images"],
             parity["min_iou"], parity["max_score_diff"])
    write_det_export_section(run)  # the report's deployment section: run/sections/det_export/
    return info
