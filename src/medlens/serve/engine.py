"""The inference engine behind the service: the exported ONNX model, its gates, and request batching.

The service runs from an export folder alone (:func:`locate_export`): ``export.json``
records everything it needs (preprocessing contract, classes, operating point, QC limits,
the CAM's member and layer, the model card's aggregate facts) beside the ONNX graph, the
OOD gate and the CAM weights; it reads no run directory, config or manifest.

:class:`Engine` holds state that is real (an ONNX Runtime session, the OOD gate, the
model card); the work per image is plain functions: ``preprocess`` (as in training),
``qc_verdict`` (the single-image checks of :mod:`medlens.qc`), and the OOD score.
:class:`MicroBatcher` groups requests that arrive while the model is busy into one
ONNX Runtime call, so concurrency raises throughput without adding latency when idle.
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from medlens.data.preprocess import Preprocess
from medlens.errors import StageInputMissing
from medlens.inference import onnx as ox
from medlens.inference.ood import load_detectors
from medlens.config import QCConfig
from medlens.qc.checks import REGISTRY, luminance

SINGLE_IMAGE_CHECKS = ("exposure", "contrast", "blur", "fov")
INTENDED_USE = ("Research and engineering evaluation of a medical-image classifier trained with medlens. "
                "Not a medical device: outputs must not drive clinical decisions without a qualified reader, "
                "and only for images like the training data (same modality, device and population). "
                "Images failing quality control or flagged out-of-distribution receive no label.")
NEEDS = {"classification": ("card", "cam"), "detection": ("card",)}
"""What an ``export.json`` must hold, per task, for the service to run from the export folder alone."""


def locate_export(path: Path) -> tuple[Path, dict]:
    """The export folder ``medlens serve PATH`` serves, and its ``export.json``.

    Parameters
    ----------
    path : path
        An export folder (``RUN/export`` or a copy of it: it holds ``export.json``), or a run
        directory, whose ``det/export`` (a detection run) or ``export`` is taken.

    Raises
    ------
    StageInputMissing
        No ``export.json`` there, or one written by an older medlens that lacks what the
        service needs (:data:`NEEDS`).
    """
    path = Path(path)
    folder = next((f for f in (path, path / "det" / "export", path / "export") if (f / "export.json").is_file()), None)
    if folder is None:
        raise StageInputMissing(f"no export.json in {path} (nor in its export/ or det/export/); serve the folder "
                                "`medlens export RUN` writes (RUN/export; RUN/det/export for a detection run)")
    info = json.loads((folder / "export.json").read_text())
    missing = [k for k in NEEDS[info.get("task", "classification")] if k not in info]
    if missing:
        raise StageInputMissing(f"{folder / 'export.json'} has no {' or '.join(missing)} (written by an older medlens); "
                                "run `medlens export RUN` again so that the export folder serves on its own")
    return folder, info


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
    """The exported classifier, ready to answer requests.

    Parameters
    ----------
    export : path
        The export folder, or a run directory holding it (:func:`locate_export`).
    threads : int, default=1
        ONNX Runtime intra-op threads.
    """

    def __init__(self, export: Path, *, threads: int = 1) -> None:
        self.folder, self.info = locate_export(export)
        from threadpoolctl import threadpool_limits

        # one BLAS thread for the per-request OOD matrix-vector product: multi-threaded BLAS
        # on a busy 2-core server costs milliseconds per call in thread hand-offs
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        self.session = ox.session(self.folder / self.info["shipped"], threads=threads)
        self.gate = load_detectors(self.folder, written_by="medlens export RUN")
        self.size, self.in_chans = int(self.info["image_size"]), int(self.info["in_chans"])
        self.preprocess = Preprocess.from_dict(self.info["preprocess"])
        self.class_names: list[str] = list(self.info["class_names"])
        self.threshold = self.info.get("operating_threshold")
        self.name = self.info["triton_name"]
        # the run's own QC thresholds, restricted to the checks that judge one image alone
        qc = dict(self.info["qc"])
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
        """The model card served at ``/v1/model``: ``export.json``'s facts (aggregates only) and the intended use."""
        info = self.info
        return {
            "name": self.name, "version": f"{info['medlens_version']}+{info['onnx_sha256'][:12]}",
            "architecture": info["model_name"], "folds": info["folds"], "created": info["created"],
            "input": {"image_size": self.size, "in_chans": self.in_chans, "formats": ["PNG", "JPEG", "DICOM"]},
            "class_names": self.class_names, **info["card"], "parity": info["parity"], "ood_gate": info["ood"],
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
