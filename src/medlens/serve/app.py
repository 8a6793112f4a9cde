"""The FastAPI inference service over an export folder alone (``medlens serve EXPORT``).

Endpoints: ``POST /v1/predict`` (PNG/JPEG/DICOM upload, multipart field ``file`` or a raw
body), ``POST /v2/models/{name}/infer`` (KServe v2 tensors), ``GET /v2/models/{name}``,
``GET /v2/health/ready``, ``GET /health``, ``GET /v1/model`` (model card). A detection run
serves ``POST /v1/detect`` instead of ``/v1/predict`` and ``/v2`` (:mod:`medlens.serve.detect`).

One ASGI guard in front of the app does what must hold for every request: the body size
limit (413), bearer-token auth (401), the per-token rate limit (429), a JSON error instead
of a traceback (500), and exactly one audit-log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from medlens.serve.base import base_app, checked_upload
from medlens.serve.detect import detection_app
from medlens.serve.engine import Engine, MicroBatcher, locate_export, preprocess
from medlens.serve.gradcam import GradCamOverlay
from medlens.serve.security import AuditLog, RateLimiter, TokenAuth

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/health", "/v2/health/live", "/v2/health/ready"})


@dataclass(frozen=True)
class ServeSettings:
    """Limits of the service; defaults suit one hospital department on one server."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    rate_per_s: float = 50.0
    burst: int = 100
    threads: int = 1
    max_batch: int = 16
    inline_inference: bool = True


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": raw})


class Guard:
    """ASGI middleware: size limit, auth, rate limit, error containment and one audit line per request."""

    def __init__(self, app, *, auth: TokenAuth, limiter: RateLimiter, audit: AuditLog, max_body: int) -> None:
        self.app, self.auth, self.limiter, self.audit, self.max_body = app, auth, limiter, audit, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        entry = {"request_id": uuid.uuid4().hex[:16], "method": scope["method"], "path": scope["path"]}
        scope.setdefault("state", {})["audit"] = entry
        started = {"status": None}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_wrapper, entry)
        except Exception as err:  # never a traceback to the client
            log.error("request %s failed: %s", entry["request_id"], type(err).__name__, exc_info=True)
            entry["error"] = f"internal error ({type(err).__name__})"
            if started["status"] is None:
                await _send_json(send_wrapper, 500, {"error": {"status": 500, "message": "internal error; the "
                                 f"request id {entry['request_id']} is in the server log"}})
        finally:
            entry["status"] = started["status"]
            entry["latency_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
            self.audit.write(**entry)

    async def _handle(self, scope, receive, send, entry: dict) -> None:
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._drain(receive)
            entry["error"] = "body too large"
            return await _send_json(send, 413, {"error": {"status": 413, "message": f"request body of {length.decode()} "
                                    f"bytes exceeds the limit of {self.max_body} bytes"}}, [(b"connection", b"close")])
        if scope["path"] not in PUBLIC_PATHS:
            auth_header = headers.get(b"authorization", b"").decode("latin-1")
            token_id = self.auth.identify(auth_header)
            if token_id is None:
                await self._drain(receive)
                entry["error"] = "unauthenticated"
                msg = "missing bearer token" if not auth_header else "invalid bearer token"
                return await _send_json(send, 401, {"error": {"status": 401, "message": msg}},
                                        [(b"www-authenticate", b"Bearer")])
            entry["token_id"] = token_id
            allowed, wait = self.limiter.allow(token_id)
            if not allowed:
                await self._drain(receive)
                entry["error"] = "rate limited"
                return await _send_json(send, 429, {"error": {"status": 429, "message": f"rate limit exceeded; retry "
                                        f"in {wait:.2f} s"}}, [(b"retry-after", str(max(1, round(wait))).encode())])
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await self._drain(receive)
                entry["error"] = "body too large"
                return await _send_json(send, 413, {"error": {"status": 413, "message": f"request body exceeds the "
                                        f"limit of {self.max_body} bytes"}}, [(b"connection", b"close")])
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive, cap: int = 64 * 1024 * 1024) -> None:
        """Read and discard the body (bounded), so the client gets the answer instead of a reset."""
        seen = 0
        while seen <= cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def create_app(export: Path, *, tokens: dict[str, str], audit_path: Path | None = None,
               settings: ServeSettings = ServeSettings()) -> "Guard":
    """Build the service for an exported model: the FastAPI app wrapped in its :class:`Guard` (an ASGI app).

    Parameters
    ----------
    export : path
        The export folder (``RUN/export``, ``RUN/det/export``, or a copy of either on the
        service machine), or a run directory holding it (:func:`medlens.serve.engine.locate_export`).
        Nothing outside the export folder is read.
    tokens : dict
        token id -> bearer token (see :func:`medlens.serve.security.load_tokens`).
    audit_path : path, optional
        JSONL audit log; default ``audit.jsonl`` in the export folder.
    settings : ServeSettings

    An exported detector (``export.json``: ``task: detection``) gets the detection service
    instead (:func:`medlens.serve.detect.detection_app`: ``POST /v1/detect``).
    """
    folder, info = locate_export(export)
    if info.get("task") == "detection":
        audit = AuditLog(audit_path or folder / "audit.jsonl")
        return Guard(detection_app(folder, audit, settings), auth=TokenAuth(tokens),
                     limiter=RateLimiter(settings.rate_per_s, settings.burst), audit=audit, max_body=settings.max_body_bytes)
    engine = Engine(folder, threads=settings.threads)
    batcher = MicroBatcher(engine, max_batch=settings.max_batch, inline=settings.inline_inference)
    overlay = GradCamOverlay(folder, info["cam"], engine.class_names)
    audit = AuditLog(audit_path or folder / "audit.jsonl")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()
        audit.close()

    app = base_app(engine, lifespan)

    @app.post("/v1/predict")
    async def predict(request: Request, cam: bool = False):
        audit = request.scope["state"]["audit"]
        decoded, qc, refusal = await checked_upload(request, max_pixels=settings.max_pixels, qc_config=engine.qc_config)
        if refusal is not None:
            return refusal
        x = preprocess(decoded.image, engine.preprocess)
        proba, members, feats = await batcher(x)
        out = engine.interpret(proba, members, feats)
        audit["ood"] = {"flagged": out["ood"]["flagged"], "score": out["ood"]["score"]}
        body = {"request_id": audit["request_id"], "model": {"name": engine.name, "version": engine.card["version"]},
                "qc": qc, **out,
                "operating_point": {"threshold": engine.threshold, "positive_class": engine.class_names[-1]}}
        if out["ood"]["flagged"]:
            body.update(decision="refused: the image is unlike the training data (out of distribution); no label "
                                 "is given", label=None, probabilities=None)
        else:
            body["decision"] = "accepted"
            if cam:
                body["gradcam_png_base64"], body["gradcam"] = await asyncio.to_thread(overlay, x, proba)
        audit["output"] = {"label": body["label"], "probabilities": body["probabilities"]}
        return JSONResponse(body)  # plain Python values already: skips FastAPI's recursive encoder

    @app.get("/v2/models/{name}")
    async def v2_metadata(name: str) -> dict:
        _check_name(name)
        s, c = engine.size, engine.in_chans
        return {"name": engine.name, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, c, s, s]}],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(engine.class_names)]},
                            {"name": "ood_flagged", "datatype": "BOOL", "shape": [-1]}]}

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(name: str, request: Request):
        _check_name(name)
        audit = request.scope["state"]["audit"]
        try:
            payload = json.loads(await request.body())
            tensor = payload["inputs"][0]
            shape, dtype = [int(v) for v in tensor["shape"]], tensor["datatype"]
            data = np.asarray(tensor["data"], dtype=np.float32)
        except (ValueError, KeyError, IndexError, TypeError):
            raise HTTPException(400, "expected KServe v2 JSON: {\"inputs\": [{\"name\": \"image\", \"shape\": "
                                     "[N, C, S, S], \"datatype\": \"FP32\", \"data\": [...]}]}") from None
        want = [engine.in_chans, engine.size, engine.size]
        if dtype != "FP32" or len(shape) != 4 or shape[1:] != want or not 1 <= shape[0] <= settings.max_batch:
            raise HTTPException(400, f"input must be FP32 [N, {want[0]}, {want[1]}, {want[2]}] with 1 <= N <= "
                                     f"{settings.max_batch}; got {dtype} {shape}")
        if data.size != int(np.prod(shape)) or not np.isfinite(data).all():
            raise HTTPException(400, f"data must hold {int(np.prod(shape))} finite numbers for shape {shape}; "
                                     f"got {data.size} values{'' if np.isfinite(data).all() else ' with NaN/inf'}")
        audit["input_sha256"], audit["input_kind"] = hashlib.sha256(data.tobytes()).hexdigest(), "tensor"
        batch = data.reshape(shape)
        if shape[0] == 1:
            p, m, f = await batcher(batch[0])
            p, f = p[None], f[None]
        else:
            p, m, f = await asyncio.get_running_loop().run_in_executor(None, engine.infer, batch)
        flagged = engine.gate.is_ood(f)
        audit["output"] = {"probabilities": np.round(p, 6).tolist()}
        audit["ood"] = {"flagged": flagged.tolist()}
        return {"model_name": engine.name, "model_version": "1", "id": audit["request_id"],
                "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": list(p.shape),
                             "data": p.ravel().tolist()},
                            {"name": "ood_flagged", "datatype": "BOOL", "shape": [len(flagged)],
                             "data": flagged.tolist()}]}

    def _check_name(name: str) -> None:
        if name != engine.name:
            raise HTTPException(404, f"unknown model {name!r}; this server has {engine.name!r}")

    return Guard(app, auth=TokenAuth(tokens), limiter=RateLimiter(settings.rate_per_s, settings.burst), audit=audit,
                 max_body=settings.max_body_bytes)
