"""Helpers shared by the service tests (kept out of conftest.py so they import under a unique name)."""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

TOKEN = "test-token-0123456789abcdef"


def phantom_png(size: int = 64, seed: int = 0, **spec) -> bytes:
    """One phantom image (see medlens.data.synthetic.ImageSpec) as PNG bytes."""
    from medlens.data.synthetic import ImageSpec, render_image

    img, _, _ = render_image(ImageSpec(size, spec.pop("site", "A"), spec.pop("n_lesions", 0), **spec),
                             np.random.default_rng(seed))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(run: Path, tmp: Path, *extra: str):
    """``medlens serve RUN`` on a real uvicorn at 127.0.0.1 in a subprocess; yields ``(base_url, audit_log_path)``."""
    import httpx

    (tmp / "tokens").write_text(f"# test tokens\nclinic-a:{TOKEN}\n")
    audit = tmp / "audit.jsonl"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medlens.cli", "serve", str(run), "--host", "127.0.0.1",
                             "--port", str(port), "--token-file", str(tmp / "tokens"), "--audit-log", str(audit),
                             "--rate", "1000", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # up to 30 s
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode()[-2000:])
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not start in 30 s")
        yield url, audit
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width×height`` but carries a tiny IDAT (a decompression-bomb probe)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _jpeg_1x1() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="JPEG")
    return buf.getvalue()


BAD_INPUTS = {
    "truncated_png": (lambda: phantom_png()[:300], "image/png"),
    "text_file": (lambda: b"patient notes, not an image\n" * 10, "text/plain"),
    "text_as_png": (lambda: b"patient notes, not an image\n" * 10, "image/png"),
    "zero_bytes": (lambda: b"", "image/png"),
    "one_pixel": (_jpeg_1x1, "image/jpeg"),
    "20000x20000_header": (lambda: _png_header_only(20000, 20000), "image/png"),
    "png_declared_jpeg": (lambda: phantom_png(), "image/jpeg"),
}
"""Uploads every endpoint must refuse with a 4xx and a message: (make bytes, content type)."""


def _occurring(data: bytes, needles: list[bytes]) -> set[bytes]:
    """The needles found in ``data``: one scan per distinct 3-byte prefix, each hit checked against its needles."""
    by_prefix: dict[bytes, list[bytes]] = {}
    for n in needles:
        by_prefix.setdefault(n[:3], []).append(n)
    found = set()
    for prefix, group in by_prefix.items():
        pos = data.find(prefix)
        while pos != -1:
            found.update(n for n in group if data.startswith(n, pos))
            pos = data.find(prefix, pos + 1)
    return found


def identifiers_in(folder: Path, run: Path, *others: Path) -> list[tuple[str, str]]:
    """``(file, needle)`` for every sample id, patient id, image path or data folder of ``run``'s manifest, or the
    path of ``run`` or of ``others``, found as bytes in any file under ``folder`` (each distinct file read once)."""
    import hashlib

    import pandas as pd

    manifest = pd.read_parquet(run / "manifest.parquet")
    images = [Path(p) for p in manifest["image"].astype(str)]
    needles = sorted({*manifest["sample_id"].astype(str), *manifest["patient_id"].astype(str), *map(str, images),
                      *(str(p.parent) for p in images), str(run), str(run.resolve()), *map(str, others)})
    found, seen = [], set()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest = hashlib.sha256(data).digest()
        if digest not in seen:
            seen.add(digest)
            hits = _occurring(data, [n.encode() for n in needles])
            found += [(str(path.relative_to(folder)), n.decode()) for n in sorted(hits)]
    return found


def ship_alone(run_dir: Path, root: Path, export, folder: str) -> tuple[Path, Path]:
    """Export a copy of ``run_dir`` again, copy its ``folder`` away and delete the copy.

    ``export(run)`` writes the export (``export_run`` or ``export_detector``); returns
    ``(the export folder alone, the path the deleted copy had)``.
    """
    import shutil

    run = root / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export"))
    export(run)
    shutil.copytree(run / folder, root / "shipped")
    shutil.rmtree(run)
    return root / "shipped", run


def held_out_rows(run: Path):
    """The run's test predictions with each image's path from the manifest."""
    import pandas as pd

    pred = pd.read_parquet(run / "predictions.parquet")
    manifest = pd.read_parquet(run / "manifest.parquet").set_index("sample_id")
    test = pred[pred["part"] == "test"].copy()
    test["image"] = manifest.loc[test["sample_id"], "image"].to_numpy()
    return test

