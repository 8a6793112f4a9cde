"""The report-section format: what a stage leaves in the run directory for ``report.html``.

Every stage that has something to say in the report writes, at its end, one section with
:func:`write_section`::

    run/sections/<name>/section.json     title, summary, flags, tables, figure file names, methods
    run/sections/<name>/<figure>.png     its figures, saved with :func:`save_figure`

and :mod:`medlens.report` renders ``report.html`` from those files (and ``metrics.json``,
``manifest.parquet``, ``splits.json``, ``qc.parquet``) alone: it imports no stage and
computes nothing. ``section.json`` (``format`` 1)::

    {"format": 1, "name": "explain", "title": "…", "summary": "one paragraph",
     "flags": ["a warning shown prominently", …],
     "figures": {"gallery": {"file": "gallery.png", "sha256": "…", "alt": "…", "title": null, "caption": null}, …},
     "tables": {"agreement": {"rows": [{"column": value, …}, …], "title": null, "note": null}, …},
     "methods": ["how a number was computed", …]}

Figures and tables keep their order. A table or figure with a ``title`` gets its own heading; a
table without one is captioned with its name. Each figure's ``sha256`` (of its PNG bytes) makes
``section.json`` change whenever anything of the section does, so a stage runner that compares
input files by content needs only the ``section.json`` files as the report's inputs. This module is the bottom of the package: it
imports only the standard library, numpy, matplotlib and :mod:`medlens.errors`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from numbers import Real
from pathlib import Path
from typing import Any

from medlens.errors import DataError

__all__ = ["FORMAT", "SECTIONS_DIR", "format_ci", "read_sections", "save_figure", "section_dir", "write_section"]

FORMAT = 1
"""Version of the ``section.json`` layout."""

SECTIONS_DIR = "sections"
"""Folder of the run directory that holds one sub-folder per section."""

DPI = 110
"""Resolution of every report figure."""


def format_ci(value: Any, low: Any = None, high: Any = None, *, digits: int = 3, undefined: str = "n/a",
              label: str = "") -> str:
    """An estimate with its 95% CI as text: ``"0.912 (0.870–0.950)"``.

    The one CI formatter of the stages and the report.

    Parameters
    ----------
    value : float, or a mapping / object with ``value``, ``low``, ``high``
        The point estimate, or the whole estimate (a ``metrics.json`` entry, an
        :class:`medlens.evaluate.Estimate`); then ``low`` and ``high`` are taken from it.
    low, high : float, optional
        The interval. When either is missing or not finite, the value is shown alone.
    digits : int, default 3
    undefined : str, default "n/a"
        What an undefined (missing, None or NaN) value reads as.
    label : str, default ""
        Written before the bounds, e.g. ``"95% CI "`` gives ``"0.912 (95% CI 0.870–0.950)"``.
    """
    if value is None:
        return undefined
    if isinstance(value, Mapping):
        value, low, high = value.get("value"), value.get("low"), value.get("high")
    elif hasattr(value, "value") and not isinstance(value, Real):
        value, low, high = value.value, getattr(value, "low", None), getattr(value, "high", None)
    v, lo, hi = _finite(value), _finite(low), _finite(high)
    if v is None:
        return undefined
    if lo is None or hi is None:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} ({label}{lo:.{digits}f}–{hi:.{digits}f})"


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, Real):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as the report's PNG (110 dpi, tight bounding box); the one figure helper.

    Written through a temporary file, so a reader never sees half a PNG. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def section_dir(run: str | Path, name: str) -> Path:
    """``run/sections/<name>``: where the section ``name`` of a run lives."""
    return Path(run) / SECTIONS_DIR / name


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "figure"


def _jsonable(x: Any):
    """numpy scalars and arrays (and other non-JSON values) in table rows as plain JSON values."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def write_section(run: str | Path, name: str, *, title: str, summary: str, flags: Iterable[str] = (),
                  figures: Mapping[str, Any] | None = None, tables: Mapping[str, Any] | None = None,
                  methods: Iterable[str] = ()) -> Path:
    """Write ``run/sections/<name>/section.json`` and its figures as PNG files beside it.

    Parameters
    ----------
    run : path
        The run directory.
    name : str
        The section's folder name (``"explain"``, ``"det_export"``, …).
    title, summary : str
        The heading and one plain-language paragraph.
    flags : iterable of str
        Warnings the report shows prominently.
    figures : mapping, optional
        name -> a matplotlib figure, or ``{"figure": fig, "alt": str, "title": str, "caption": str}``
        (all but ``figure`` optional); None values are skipped. Saved as ``<name>.png``.
    tables : mapping, optional
        name -> a list of row dicts (one column per key), or ``{"rows": [...], "title": str, "note": str}``.
    methods : iterable of str
        How the section's numbers were computed, one item each (a list under "Methods").

    Returns
    -------
    Path
        The written ``section.json``.
    """
    out = section_dir(run, name)
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, dict] = {}
    for key, spec in (figures or {}).items():
        if spec is None:
            continue
        spec = dict(spec) if isinstance(spec, Mapping) else {"figure": spec}
        fig = spec.pop("figure")
        file = _file_name(key) + ".png"
        save_figure(fig, out / file)
        figs[key] = {"file": file, "sha256": hashlib.sha256((out / file).read_bytes()).hexdigest(),
                     "alt": spec.get("alt") or key.replace("_", " "), "title": spec.get("title"),
                     "caption": spec.get("caption")}
    tabs: dict[str, dict] = {}
    for key, spec in (tables or {}).items():
        spec = dict(spec) if isinstance(spec, Mapping) else {"rows": spec}
        tabs[key] = {"rows": [dict(r) for r in spec.get("rows") or []], "title": spec.get("title"),
                     "note": spec.get("note")}
    doc = {"format": FORMAT, "name": name, "title": title, "summary": summary, "flags": list(flags),
           "figures": figs, "tables": tabs, "methods": list(methods)}
    path = out / "section.json"
    stale = set()
    if path.is_file():
        try:
            stale = {f["file"] for f in json.loads(path.read_text()).get("figures", {}).values()}
        except (ValueError, KeyError, TypeError, AttributeError):
            stale = set()
    tmp = path.with_name("section.json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_jsonable))
    os.replace(tmp, path)
    for file in stale - {f["file"] for f in figs.values()}:
        (out / file).unlink(missing_ok=True)
    return path


def read_section(path: str | Path) -> dict:
    """One ``section.json``, with each figure's ``path`` (absolute) added.

    Raises
    ------
    DataError
        When the file is not a section of a format this medlens reads, or names a missing figure.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e}); rerun the stage that wrote it") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a format-{FORMAT} report section; rerun the stage that wrote it")
    for key, fig in doc.get("figures", {}).items():
        fig["path"] = path.parent / fig["file"]
        if not fig["path"].is_file():
            raise DataError(f"{path}: figure {key!r} ({fig['path']}) is missing; rerun the stage that wrote it")
    doc.setdefault("flags", [])
    doc.setdefault("tables", {})
    doc.setdefault("methods", [])
    return doc


def read_sections(run: str | Path, order: Iterable[str] = ()) -> dict[str, dict]:
    """Every section of a run, name -> :func:`read_section`, those named in ``order`` first, the rest by name."""
    root = Path(run) / SECTIONS_DIR
    found = {p.parent.name: p for p in root.glob("*/section.json")} if root.is_dir() else {}
    rank = {n: i for i, n in enumerate(order)}
    names = sorted(found, key=lambda n: (rank.get(n, len(rank)), n))
    return {n: read_section(found[n]) for n in names}
