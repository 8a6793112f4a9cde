"""Bearer tokens, a per-token rate limit and the JSONL audit log of the inference service."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from medlens.errors import ConfigError


def load_tokens(path: Path | None = None, *, env: str | None = None) -> dict[str, str]:
    """Read tokens: one per line as ``id:token`` or a bare ``token`` (its id is a hash prefix).

    Parameters
    ----------
    path : path, optional
        Token file (``#`` comments and blank lines ignored). Keep it readable by the service only.
    env : str, optional
        Name of an environment variable holding tokens separated by commas or newlines.

    Returns
    -------
    dict
        token id -> token. Raises :class:`ConfigError` when no token is found or one is shorter than 16 characters.
    """
    lines: list[str] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"token file {path} not found")
        lines += path.read_text().splitlines()
    if env:
        lines += os.environ.get(env, "").replace(",", "\n").splitlines()
    tokens: dict[str, str] = {}
    for line in (s.strip() for s in lines):
        if not line or line.startswith("#"):
            continue
        tid, _, tok = line.rpartition(":")
        tok = tok.strip()
        tid = tid.strip() or "t" + hashlib.sha256(tok.encode()).hexdigest()[:8]
        if len(tok) < 16:
            raise ConfigError(f"token {tid!r} is shorter than 16 characters; generate one with "
                              "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
        tokens[tid] = tok
    if not tokens:
        raise ConfigError("no API token configured; pass --token-file with one `id:token` per line")
    return tokens


class TokenAuth:
    """Checks an ``Authorization: Bearer <token>`` header in constant time against every token."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._tokens = [(tid, hashlib.sha256(t.encode()).digest()) for tid, t in tokens.items()]

    def identify(self, header: str | None) -> str | None:
        """The token id, or None when the header is missing or no token matches."""
        if not header or not header[:7].lower() == "bearer ":
            return None
        given = hashlib.sha256(header[7:].strip().encode()).digest()
        found = None
        for tid, digest in self._tokens:  # no early exit: time does not depend on which token matched
            if hmac.compare_digest(given, digest):
                found = tid
        return found


class RateLimiter:
    """Token bucket per caller: ``rate`` requests per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), int(burst)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, float]:
        """``(allowed, seconds to wait before retrying)``."""
        now = time.monotonic()
        with self._lock:
            level, last = self._state.get(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - last) * self.rate)
            if level >= 1.0:
                self._state[key] = (level - 1.0, now)
                return True, 0.0
            self._state[key] = (level, now)
            return False, (1.0 - level) / self.rate


class AuditLog:
    """Append-only JSONL, one line per request: time, token id, input hash, output, verdicts.

    Callers pass only derived values (hashes, probabilities, verdicts): no pixels and no
    DICOM attributes ever reach this file.
    """

    FIELDS = ("time", "request_id", "token_id", "method", "path", "status", "input_sha256", "input_kind",
              "output", "qc", "ood", "error", "latency_ms")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    def write(self, **entry) -> None:
        row = {k: entry.get(k) for k in self.FIELDS}
        row["time"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        line = json.dumps(row, separators=(",", ":"), default=str)
        with self._lock:
            self._fh.write(line + "\n")

    def close(self) -> None:
        self._fh.close()
