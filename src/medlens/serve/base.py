"""What every service app shares: JSON errors, the checked upload, ``/health`` and ``/v1/model``.

The classifier service (:func:`medlens.serve.app.create_app`) and the detection service
(:func:`medlens.serve.detect.detection_app`) are both built on :func:`base_app` and read
their uploads with :func:`checked_upload`, so an image is decoded, validated and judged by
quality control the same way whichever model answers.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from medlens.serve.decode import UploadError, decode_upload
from medlens.serve.engine import qc_verdict

__all__ = ["INLINE_BYTES", "base_app", "checked_upload", "read_upload"]

INLINE_BYTES = 256 * 1024
"""Uploads up to this size are decoded on the event loop; larger ones in a worker thread."""


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}, **extra}, status_code=status)


async def read_upload(request: Request) -> tuple[bytes, str | None]:
    """The uploaded image bytes and content type (multipart field ``file``, or the raw body)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            async with request.form(max_files=1, max_fields=4) as form:
                part = form.get("file")
                if part is None or isinstance(part, str):
                    raise UploadError(422, "multipart upload needs a file field named 'file'")
                return await part.read(), part.content_type
        except UploadError:
            raise
        except Exception as err:  # malformed multipart bodies
            raise UploadError(400, f"malformed multipart body ({type(err).__name__})") from None
    if not ctype:
        raise UploadError(415, "missing content type; send multipart/form-data with a 'file' field, or the "
                               "image as image/png, image/jpeg or application/dicom")
    return await request.body(), ctype


async def checked_upload(request: Request, *, max_pixels: int, qc_config) -> tuple:
    """Read, decode and QC-judge an upload, recording it in the request's audit entry.

    Small uploads are decoded on the event loop (cheaper than a thread hand-off), larger
    ones in a worker thread. Returns ``(decoded, qc, refusal)``: ``refusal`` is the 422
    response to send when the image fails quality control, else None.
    """
    audit = request.scope["state"]["audit"]
    data, ctype = await read_upload(request)

    def decode_and_check():
        decoded = decode_upload(data, ctype, max_pixels=max_pixels)
        return decoded, qc_verdict(decoded.image, qc_config)

    decoded, qc = decode_and_check() if len(data) <= INLINE_BYTES else await asyncio.to_thread(decode_and_check)
    audit["input_sha256"], audit["input_kind"] = decoded.input_sha256, decoded.kind
    audit["qc"] = {"passed": qc["passed"], "reasons": qc["reasons"]}
    if qc["passed"]:
        return decoded, qc, None
    audit["error"] = "QC rejected"
    return decoded, qc, _error(422, "image failed quality control: " + "; ".join(qc["reasons"]), qc=qc,
                               request_id=audit["request_id"])


def base_app(engine, lifespan) -> FastAPI:
    """The FastAPI app every service shares: JSON errors, ``/health``, ``/v2/health/*`` and ``/v1/model``.

    ``engine`` offers ``name`` and ``card`` (the model card).
    """
    app = FastAPI(title="medlens inference", version=engine.card["version"], lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, err: UploadError):
        request.scope["state"]["audit"]["error"] = str(err)
        return _error(err.status, str(err))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException):
        request.scope["state"]["audit"]["error"] = str(err.detail)
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        msg = f"invalid request: {'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', '')}"
        request.scope["state"]["audit"]["error"] = msg
        return _error(422, msg)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": engine.name, "version": engine.card["version"]}

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    async def v2_health() -> dict:
        return {"ready": True}

    @app.get("/v1/model")
    async def model_card() -> dict:
        return engine.card

    return app
