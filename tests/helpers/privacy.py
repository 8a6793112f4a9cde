"""Searching a run directory for planted identifiers (issue 32's privacy acceptance)."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pandas as pd
from PIL import Image

HANGUL = ["김민준", "이서연", "박지호", "최수아", "정예준", "강하은"]


def contents(path: Path) -> list[bytes]:
    """The bytes of a file, and what compression or encoding could hide inside it."""
    raw = path.read_bytes()
    out = [raw]
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
        out.append(df.to_csv(index=False).encode())
        out.append(" ".join(map(str, df.columns)).encode())
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            out += [z.read(name) for name in z.namelist()] + [" ".join(z.namelist()).encode()]
    if path.suffix.lower() == ".png":
        with Image.open(path) as im:
            out.append(repr(im.info).encode())
    return out


def leaks(run: Path, planted: list[str], *streams: str) -> list[str]:
    """Every (planted string, where) found in the run directory's files, names or the given output.

    Needles are grouped by their first four bytes, so a blob (model weights are tens of MB)
    is scanned once per distinct prefix and per needle only where its prefix occurs.
    """
    groups: dict[bytes, list[str]] = {}
    for s in set(planted):
        groups.setdefault(s.encode()[:4], []).append(s)

    def found_in(blob: bytes) -> list[str]:
        return [s for prefix, group in groups.items() if prefix in blob for s in group if s.encode() in blob]

    found = []
    for f in sorted(run.rglob("*")):
        name = str(f.relative_to(run))
        found += [f"{s} in the name {name}" for s in found_in(name.encode())]
        if f.is_file():
            found += [f"{s} in {name}" for blob in contents(f) for s in found_in(blob)]
    found += [f"{s} in the output" for text in streams for s in found_in(text.encode())]
    return found


def private_map(run: Path) -> pd.DataFrame:
    path = run.parent / ".medlens" / f"{run.name}-pseudonyms.csv"
    assert path.is_file(), list(run.parent.rglob("*pseudonyms*"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((run.parent / ".medlens" / "secret").stat().st_mode) == 0o600
    return pd.read_csv(path, dtype=str)
