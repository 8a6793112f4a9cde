"""The detection service: ``POST /v1/detect`` over an exported detector (``export.json``: ``task: detection``).

The same gates as ``/v1/predict``: the upload is decoded and validated
(:func:`medlens.serve.decode.decode_upload`), judged by the run's single-image QC, prepared
by the run's preprocessing contract, run through the exported ONNX graph (decoding
included), and refused when the OOD gate flags it. Auth, body limits, rate limits and the
audit line come from :class:`medlens.serve.app.Guard`, which wraps this app.

Each returned box is given twice: ``box`` in the uploaded image's pixels (the contract's
crop and scale undone) and ``box_model`` in the model input's pixels (what the study
evaluated).
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from medlens.data.preprocess import Preprocess
from medlens.inference import onnx as ox
from medlens.inference.ood import load_detectors
from medlens.config import QCConfig
from medlens.serve.base import base_app, checked_upload
from medlens.serve.engine import SINGLE_IMAGE_CHECKS, locate_export

__all__ = ["DetectionEngine", "detection_app"]

INTENDED_USE = ("Research and engineering evaluation of a lesion detector trained with medlens. Not a medical "
                "device: boxes are candidates for a qualified reader to review, for images like the training data "
                "only. Images failing quality control or flagged out-of-distribution receive no boxes.")


class DetectionEngine:
    """The exported detector: ONNX session, OOD gate, preprocessing, QC and operating point.

    Parameters
    ----------
    export : path
        The detector's export folder (``RUN/det/export``, written by ``medlens run``, or a
        copy of it), or the detection run holding it (:func:`medlens.serve.engine.locate_export`).
    threads : int
        ONNX Runtime intra-op threads.
    """

    def __init__(self, export: Path, *, threads: int = 1) -> None:
        self.folder, self.info = locate_export(export)
        self.session = ox.session(self.folder / "model.onnx", threads=threads)
        self.gate = load_detectors(self.folder, written_by="medlens export RUN")
        self.preprocess = Preprocess.from_dict(self.info["preprocess"])
        self.threshold, self.min_score = float(self.info["operating_threshold"]), float(self.info["min_score"])
        self.name = self.info["triton_name"]
        qc = dict(self.info["qc"])
        qc["checks"] = [c for c in qc.get("checks", SINGLE_IMAGE_CHECKS) if c in SINGLE_IMAGE_CHECKS]
        self.qc_config = QCConfig(**qc)
        self.card = {"name": self.name, "task": "detection",
                     "version": f"{self.info['medlens_version']}+{self.info['onnx_sha256'][:12]}",
                     "folds": self.info["folds"], "created": self.info["created"],
                     "input": {"image_size": self.preprocess.size, "in_chans": self.preprocess.in_chans,
                               "formats": ["PNG", "JPEG", "DICOM"]},
                     **self.info["card"], "parity": self.info["parity"], "ood_gate": self.info["ood"],
                     "intended_use": INTENDED_USE}

    def detect(self, image: np.ndarray, *, all_candidates: bool = False) -> dict:
        """Boxes of one decoded image (float ``C×H×W`` in [0, 1]) and the OOD verdict.

        Boxes scoring below the operating threshold are left out unless ``all_candidates``
        (then every candidate scoring ≥ ``min_score``, as the FROC evaluation sees them).
        """
        crop = self.preprocess.crop(np.asarray(image, np.float32))
        x = self.preprocess(image).astype(np.float32)[None] / 255.0
        boxes, scores, feats = self.session.run(["boxes", "scores", "features"], {ox.INPUT: x})
        score = float(self.gate.score(feats.astype(np.float64))[0])
        cut = self.min_score if all_candidates else self.threshold
        keep = scores[0] >= max(cut, 1e-12)
        found = [{"box": [round(v, 3) for v in self.preprocess.box_to_input(tuple(map(float, b)), crop)],
                  "box_model": [round(float(v), 4) for v in b], "score": round(float(s), 6)}
                 for b, s in zip(boxes[0][keep], scores[0][keep])]
        return {"boxes": found, "n_boxes": len(found),
                "ood": {"flagged": bool(score > self.gate.threshold), "score": round(score, 3),
                        "threshold": round(float(self.gate.threshold), 3)}}


def detection_app(export: Path, audit, settings) -> FastAPI:
    """The FastAPI app of an exported detector: the shared routes of :func:`medlens.serve.base.base_app` and ``/v1/detect``.

    Parameters
    ----------
    export : path
        The export folder (see :class:`DetectionEngine`).
    audit : medlens.serve.security.AuditLog
        Closed when the app stops.
    settings : medlens.serve.app.ServeSettings
    """
    engine = DetectionEngine(export, threads=settings.threads)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        audit.close()

    app = base_app(engine, lifespan)

    @app.post("/v1/detect")
    async def detect(request: Request, all: bool = False):
        entry = request.scope["state"]["audit"]
        decoded, qc, refusal = await checked_upload(request, max_pixels=settings.max_pixels, qc_config=engine.qc_config)
        if refusal is not None:
            return refusal
        out = await asyncio.to_thread(engine.detect, decoded.image, all_candidates=all)
        entry["ood"] = {"flagged": out["ood"]["flagged"], "score": out["ood"]["score"]}
        body = {"request_id": entry["request_id"], "model": {"name": engine.name, "version": engine.card["version"]},
                "qc": qc, "operating_point": {"threshold": engine.threshold}, **out}
        if out["ood"]["flagged"]:
            body.update(decision="refused: the image is unlike the training data (out of distribution); no boxes "
                                 "are given", boxes=None, n_boxes=None)
        else:
            body["decision"] = "accepted"
        entry["output"] = {"n_boxes": body["n_boxes"], "scores": [b["score"] for b in body["boxes"] or []]}
        return JSONResponse(body)

    return app
