"""A tiny trained and exported run, served by a real uvicorn (``medlens serve``) on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers.serve import TOKEN


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory) -> Path:
    """A tiny study trained and exported by `medlens run`, with the field-of-view crop and CLAHE switched on."""
    from helpers.study import PREPROCESSED, trained_run

    return trained_run(tmp_path_factory.mktemp("serve_run"), **PREPROCESSED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(exported_run, tmp_path_factory):
    """``medlens serve`` in a subprocess; yields (base_url, audit_log_path)."""
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "tokens").write_text(f"# test tokens\nclinic-a:{TOKEN}\n")
    audit = tmp / "audit.jsonl"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medlens.cli", "serve", str(exported_run), "--host", "127.0.0.1",
                             "--port", str(port), "--token-file", str(tmp / "tokens"), "--audit-log", str(audit),
                             "--rate", "1000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
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
        proc.kill()
        raise RuntimeError("server did not start in 30 s")
    yield url, audit
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def client(server):
    url, _ = server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c
