"""The inference engine behind the service: the exported ONNX model, its gates, and request batching.

:class:`Engine` holds state that is real (an ONNX Runtime session, the OOD gate, the
model card); the work per image is plain functions: ``preprocess`` (as in training),
``qc_verdict`` (the single-image checks of :mod:`medlens.qc`), and the OOD score.
:class:`MicroBatcher` groups requests that arrive while the model is busy into one
ONNX Runtime call, so concurrency raises throughput without adding latency when idle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medlens.data.preprocess import Preprocess
from medlens.errors import StageInputMissing
from medlens.inference import onnx as ox
from medlens.inference.ood import load_detectors
from medlens.qc import QCConfig
from medlens.qc.checks import REGISTRY, luminance

log = logging.getLogger(__name__)
SINGLE_IMAGE_CHECKS = ("exposure", "contrast", "blur", "fov")
INTENDED_USE = ("Research and engineering evaluation of a medical-image classifier trained with medlens. "
                "Not a medical device: outputs must not drive clinical decisions without a qualified reader, "
                "and only for images like the training data (same modality, device and population). "
                "Images failing quality control or flagged out-of-distribution receive no label.")


def preprocess(image: np.ndarray, contract: Preprocess) -> np.ndarray:
    """The run's preprocessing contract (as in training and evaluation), as the model's float input in [0, 1]."""
    return contract(np.asarray(image, np.float32)).astype(np.float32) / 255.0


def qc_verdict(image: np.ndarray, config: QCConfig) -> dict:
    """Single-image QC (exposure, contrast, blur, field of view): ``passed``, ``reasons``, ``scores``."""
    lum = luminance(image)
    reasons, scores = [], {}
    for name in config.checks:
        check = REGISTRY[name](config)
        score, reason = check.judge([check.measure(image, lum)], ["upload"])[0]
        scores[name] = round(float(score), 4)
        if reason:
            reasons.append(f"{name}: {reason}")
    return {"passed": not reasons, "reasons": reasons, "scores": scores}


class Engine:
    """The exported model of a run, ready to answer requests.

    Parameters
    ----------
    run : path
        A run directory on which ``medlens export`` has been run.
    threads : int, default=1
        ONNX Runtime intra-op threads.
    """

    def __init__(self, run: Path, *, threads: int = 1) -> None:
        self.run = Path(run)
        export = self.run / "export"
        info_path = export / "export.json"
        if not info_path.is_file():
            raise StageInputMissing(f"{info_path} not found; run `medlens export {self.run}` first")
        self.info = json.loads(info_path.read_text())
        from threadpoolctl import threadpool_limits

        # one BLAS thread for the per-request OOD matrix-vector product: multi-threaded BLAS
        # on a busy 2-core server costs milliseconds per call in thread hand-offs
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        self.session = ox.session(export / self.info.get("shipped", "model.onnx"), threads=threads)
        self.gate = load_detectors(export, written_by=f"medlens export {self.run}")
        self.size, self.in_chans = int(self.info["image_size"]), int(self.info["in_chans"])
        self.preprocess = (Preprocess.from_dict(self.info["preprocess"]) if "preprocess" in self.info
                           else Preprocess(size=self.size, in_chans=self.in_chans))
        self.class_names: list[str] = list(self.info["class_names"])
        self.threshold = self.info.get("operating_threshold")
        self.name = self.info["triton_name"]
        # the run's own QC thresholds, restricted to the checks that judge one image alone
        qc = dict(self.info.get("qc") or {})
        qc["checks"] = [c for c in qc.get("checks", SINGLE_IMAGE_CHECKS) if c in SINGLE_IMAGE_CHECKS]
        self.qc_config = QCConfig(**qc)
        self.card = self._card()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``probabilities``, ``member_probabilities``, ``features`` for a float32 ``N×C×S×S`` batch."""
        p, m, f = self.session.run(list(ox.OUTPUTS), {ox.INPUT: np.ascontiguousarray(batch, np.float32)})
        return p, m, f

    def interpret(self, proba: np.ndarray, members: np.ndarray, feats: np.ndarray) -> dict:
        """One image's outputs -> label at the operating point, uncertainty and the OOD verdict."""
        k = len(proba)
        entropy = float(-(proba * np.log(np.clip(proba, 1e-12, 1))).sum() / math.log(k))
        score = float(self.gate.score(feats[None])[0])
        ood = {"flagged": bool(score > self.gate.threshold), "score": round(score, 3),
               "threshold": round(float(self.gate.threshold), 3)}
        if k == 2 and self.threshold is not None:
            idx = int(proba[1] >= self.threshold)
        else:
            idx = int(np.argmax(proba))
        return {
            "probabilities": {name: round(float(v), 6) for name, v in zip(self.class_names, proba)},
            "label": self.class_names[idx],
            "uncertainty": {"normalised_entropy": round(entropy, 4),
                            "member_std": round(float(members.std(axis=0).max()), 4) if len(members) > 1 else None,
                            "n_members": int(len(members))},
            "ood": ood,
        }

    def _card(self) -> dict:
        """The model card served at ``/v1/model``."""
        info, card = self.info, {}
        metrics_path = self.run / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        for part in ("test", "external"):
            if part in metrics:
                card[part] = {k: v for k, v in metrics[part].items()
                              if isinstance(v, dict) and {"value", "low", "high"} <= set(v)}
                card[part]["n_images"] = metrics[part].get("n_images")
                card[part]["n_patients"] = metrics[part].get("n_patients")
        data = {}
        try:
            import pandas as pd

            from medlens.data.splits import load_splits

            manifest = pd.read_parquet(self.run / "manifest.parquet", columns=["sample_id", "patient_id", "site", "label"])
            splits = load_splits(self.run / "splits.json")
            dev = manifest[manifest["sample_id"].isin({s for f in splits["folds"] for s in f["train"] + f["val"]})]
            data = {"development_images": int(len(dev)), "development_patients": int(dev["patient_id"].nunique()),
                    "sites": sorted(map(str, dev["site"].unique())),
                    "class_counts": {str(k): int(v) for k, v in dev["label"].value_counts().sort_index().items()},
                    "test_images": len(splits["test"]), "external_images": len(splits["external"])}
        except Exception as err:  # the card is informative; a missing table must not stop the service
            log.warning("model card: training data summary unavailable (%s)", type(err).__name__)
        return {
            "name": self.name, "version": f"{info['medlens_version']}+{info['onnx_sha256'][:12]}",
            "architecture": info["model_name"], "folds": info["folds"], "created": info["created"],
            "input": {"image_size": self.size, "in_chans": self.in_chans, "formats": ["PNG", "JPEG", "DICOM"]},
            "class_names": self.class_names,
            "operating_point": metrics.get("operating_point") or {"threshold": self.threshold},
            "training_data": data, "metrics_95ci": card, "parity": info["parity"],
            "ood_gate": info["ood"],
            "intended_use": INTENDED_USE,
        }


class MicroBatcher:
    """Greedy request batching: whatever queued while the model ran goes into the next call.

    Parameters
    ----------
    engine : Engine
    max_batch : int, default=16
    inline : bool, default=True
        Run ONNX Runtime on the event-loop thread. On a small CPU server this avoids a
        thread wake-up per batch (milliseconds on a busy machine); requests arriving
        meanwhile wait in the socket buffers and form the next batch. Set False for slow
        models, so that health checks stay responsive during inference.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 16, inline: bool = True) -> None:
        self.engine, self.max_batch, self.inline = engine, max_batch, inline
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._running = False
        self._pool = None if inline else ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx")

    async def start(self) -> None:
        """Nothing to start (kept for symmetry with :meth:`stop`)."""

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    async def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outputs for one preprocessed ``C×S×S`` image."""
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((x, fut))
        if not self._running:
            self._running = True
            try:
                await asyncio.sleep(0)  # let requests that are already parsed join this batch
                while self._pending:
                    items, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                    await self._run(items)
            finally:
                self._running = False
        return await fut

    async def _run(self, items: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        batch = np.stack([x for x, _ in items])
        try:
            if self._pool is None:
                p, m, f = self.engine.infer(batch)
            else:
                p, m, f = await asyncio.get_running_loop().run_in_executor(self._pool, self.engine.infer, batch)
        except Exception as err:  # deliver the failure to every waiting request
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(err)
            return
        for i, (_, fut) in enumerate(items):
            if not fut.done():
                fut.set_result((p[i], m[i], f[i]))
