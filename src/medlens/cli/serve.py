"""``medlens serve EXPORT``: the inference service on uvicorn (registered in :mod:`medlens.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def serve(
    export: Annotated[Path, typer.Argument(help="The export folder (RUN/export, RUN/det/export for a detection run, "
                                                "or a copy of it on the service machine), or a run directory holding "
                                                "it.")],
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 behind a TLS reverse proxy.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token_file: Annotated[Optional[Path], typer.Option(help="Bearer tokens, one `id:token` per line.")] = None,
    token_env: Annotated[Optional[str], typer.Option(help="Environment variable with comma-separated tokens.")] = None,
    audit_log: Annotated[Optional[Path], typer.Option(help="JSONL audit log (default EXPORT/audit.jsonl).")] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MB (larger: 413).")] = 10.0,
    max_pixels: Annotated[int, typer.Option(help="Largest image by its header, in pixels (larger: 413).")] = 25_000_000,
    rate: Annotated[float, typer.Option(help="Requests per second per token (bursts up to 2x).")] = 50.0,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads.")] = 1,
    max_batch: Annotated[int, typer.Option(help="Largest batch formed from concurrent requests.")] = 16,
) -> None:
    """Serve the exported model: /v1/predict (PNG/JPEG/DICOM), /v2/models/NAME/infer, /v1/model, /health.

    The service runs from the export folder alone: `medlens export RUN` (and `medlens run`)
    write into RUN/export everything it needs (ONNX graph, preprocessing, thresholds, QC
    limits, OOD gate, the heat-map model, an aggregate model card) and nothing about patients.
    Copy that folder to the service machine; the run directory stays behind. Given a run
    directory, its export/ (det/export/) is served.

    An exported detector (task: detection) serves /v1/detect instead of /v1/predict and /v2:
    boxes with scores, under the same QC and OOD gates, token auth, limits and audit log.
    """
    import uvicorn

    from medlens.serve.app import ServeSettings, create_app
    from medlens.serve.security import load_tokens

    tokens = load_tokens(token_file, env=token_env)
    settings = ServeSettings(max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=max_pixels, rate_per_s=rate,
                             burst=max(1, int(2 * rate)), threads=threads, max_batch=max_batch)
    app = create_app(export, tokens=tokens, audit_path=audit_log, settings=settings)
    typer.echo(f"serving {export} on http://{host}:{port} ({len(tokens)} token(s))", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
