"""A tiny trained and exported run, served by a real uvicorn (``medlens serve``) on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from helpers.serve import TOKEN, running_server


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory) -> Path:
    """A tiny study trained and exported by `medlens run`, with the field-of-view crop and CLAHE switched on."""
    from helpers.study import PREPROCESSED, trained_run

    return trained_run(tmp_path_factory.mktemp("serve_run"), **PREPROCESSED)


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
