"""Tokens, rate limit and upload decoding as functions, plus the guard in process (no network)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from medlens.errors import ConfigError
from medlens.serve import RateLimiter, ServeSettings, TokenAuth, UploadError, create_app, decode_upload, load_tokens
from helpers.serve import TOKEN, phantom_png


def test_load_tokens(tmp_path, monkeypatch):
    f = tmp_path / "tokens"
    f.write_text("# comment\nward-3:abcdefghijklmnopqrstuvwxyz\n\nqrstuvwxyz0123456789\n")
    tokens = load_tokens(f)
    assert tokens["ward-3"] == "abcdefghijklmnopqrstuvwxyz" and len(tokens) == 2
    monkeypatch.setenv("ML_TOKENS", "a:0123456789abcdef0123,b:fedcba9876543210fedc")
    assert set(load_tokens(env="ML_TOKENS")) == {"a", "b"}
    f.write_text("x:short\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_tokens(f)
    with pytest.raises(ConfigError, match="no API token"):
        load_tokens(env="ML_UNSET_VARIABLE")


def test_token_auth():
    auth = TokenAuth({"a": "0123456789abcdef0123", "b": "fedcba9876543210fedc"})
    assert auth.identify("Bearer fedcba9876543210fedc") == "b"
    assert auth.identify("bearer 0123456789abcdef0123") == "a"
    for bad in (None, "", "Bearer", "Bearer 0123456789abcdef012", "Basic 0123456789abcdef0123"):
        assert auth.identify(bad) is None


def test_rate_limiter():
    lim = RateLimiter(rate=0.5, burst=2)
    assert lim.allow("a")[0] and lim.allow("a")[0]
    ok, wait = lim.allow("a")
    assert not ok and 0 < wait <= 2
    assert lim.allow("b")[0]  # per caller


def test_decode_guards():
    assert decode_upload(phantom_png(), "image/png").image.shape == (3, 64, 64)
    with pytest.raises(UploadError) as err:
        decode_upload(phantom_png(size=96), "image/png", max_pixels=64 * 64)
    assert err.value.status == 413
    with pytest.raises(UploadError) as err:
        decode_upload(b"GIF89a....", "image/gif")
    assert err.value.status == 415


def test_rate_limit_and_errors_in_process(exported_run, tmp_path):
    app = create_app(exported_run, tokens={"t": TOKEN}, audit_path=tmp_path / "audit.jsonl",
                     settings=ServeSettings(rate_per_s=0.1, burst=2))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            return [await c.get("/v1/model") for _ in range(3)] + [await c.post("/v1/predict", content=b"x")]

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200, 200, 429, 429]
    assert "retry" in responses[2].json()["error"]["message"] and responses[2].headers["retry-after"]
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 4
