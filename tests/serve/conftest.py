"""The shared tiny trained and exported run (tests/conftest.py), served by a real uvicorn (``medlens serve``) on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest

from helpers.serve import TOKEN, running_server


@pytest.fixture(scope="session")
def server(exported_run, tmp_path_factory):
    """``medlens serve`` in a subprocess; yields (base_url, audit_log_path)."""
    with running_server(exported_run, tmp_path_factory.mktemp("serve")) as served:
        yield served


@pytest.fixture(scope="session")
def client(server):
    url, _ = server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        yield c
