"""The stage protocol: what a stage declares, and how the runner decides that it must run.

A stage module declares one :class:`Stage`: its name, the config sections it depends on,
the run-directory files it reads and writes, and one entry point ``run(run_dir, cfg)``.
Stages talk to each other only through those files (nnU-Net style: the run directory is
the contract). A stage runs again when an output is missing, or when its config sections, an input
file's bytes or the medlens version changed. Inputs are compared by content, not by time:
a stage upstream that re-makes a file byte for byte (every stage is deterministic) leaves
the stages below it up to date, as Bazel's early cut-off does. Stages import this module, the functional
packages and :mod:`medlens.config`; never the runner, the CLI, the report or another stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import medlens
from medlens.config import StudyConfig

log = logging.getLogger("medlens.stages")
"""One line at each stage's start and end (the CLI prints them in a pipe, where no progress bar shows)."""

Paths = Sequence[str] | Callable[[StudyConfig], Sequence[str]]
"""Run-relative paths, or a function of the config returning them. ``{fold}`` expands over the
folds of ``splits.json``; a trailing ``?`` marks an input that may be absent."""


def _always(cfg: StudyConfig) -> bool:
    return True


def _nothing(cfg: StudyConfig) -> dict:
    return {}


def _no_check(cfg: StudyConfig) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One step of a study.

    Parameters
    ----------
    name : str
        Unique within a task; the runner records its state in ``run/.stages/<name>.json``.
    run : callable (run_dir, cfg) -> None
        The entry point. It writes every path of ``writes``; an exception leaves the stage
        unrecorded, so it runs again next time.
    sections : sequence of str
        Config fields the outputs depend on, as dotted paths (``"qc"``, ``"split.external_site"``,
        ``"seed"``).
    reads, writes : sequence of str, or callable (cfg) -> sequence of str
        Run-relative paths (see :data:`Paths`).
    when : callable (cfg) -> bool
        Whether the stage belongs to this study (e.g. ``deid`` for DICOM sources only).
    extra_key : callable (cfg) -> dict
        Key material outside the run directory (digests of the user's source files).
    check : callable (cfg) -> None
        Called for every stage of a task before any of them runs: refuse bad input before
        anything is written or trained.
    folds : callable (run_dir, cfg) -> int, optional
        How many folds ``{fold}`` expands over; default: the folds of ``splits.json``.
    """

    name: str
    run: Callable[[Path, StudyConfig], None]
    sections: Sequence[str] = ()
    reads: Paths = ()
    writes: Paths = ()
    when: Callable[[StudyConfig], bool] = _always
    extra_key: Callable[[StudyConfig], dict] = _nothing
    check: Callable[[StudyConfig], None] = _no_check
    folds: Callable[[Path, StudyConfig], int] | None = field(default=None)

    def inputs(self, run: Path, cfg: StudyConfig) -> list[tuple[str, bool]]:
        """``(path, required)`` for each declared input, folds expanded."""
        return [(p.rstrip("?"), not p.endswith("?")) for p in self._expand(self.reads, run, cfg)]

    def outputs(self, run: Path, cfg: StudyConfig) -> list[str]:
        """The declared outputs, folds expanded."""
        return self._expand(self.writes, run, cfg)

    def _expand(self, paths: Paths, run: Path, cfg: StudyConfig) -> list[str]:
        listed = list(paths(cfg) if callable(paths) else paths)
        if not any("{fold}" in p for p in listed):
            return listed
        n = self.folds(run, cfg) if self.folds else fold_count(run)
        return [p.format(fold=k) for p in listed for k in (range(n) if "{fold}" in p else (0,))]


def fold_count(run: Path) -> int:
    """Folds in ``run/splits.json`` (0 before the split stage has run)."""
    path = Path(run) / "splits.json"
    return len(json.loads(path.read_text())["folds"]) if path.is_file() else 0


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's listing (relative path, size, mtime)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def digest(value: Any) -> str:
    """sha256 of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def config_value(cfg: StudyConfig, dotted: str) -> Any:
    """The JSON value of a dotted config path (``"trust.ood_pass_rate"``)."""
    value: Any = cfg.model_dump(mode="json")
    for part in dotted.split("."):
        value = value[part]
    return value


def stage_key(stage: Stage, run: Path, cfg: StudyConfig) -> dict[str, str]:
    """What a stage's outputs depend on, part by part, each as a sha256.

    Parts: ``medlens`` (version), ``config:<section>`` for each declared section,
    ``file:<path>`` for each declared input (``absent`` for a missing optional one), and
    ``extra`` (the stage's ``extra_key``). Only digests are recorded: a data path in the
    config never enters the run directory.
    """
    key = {"medlens": medlens.__version__}
    for section in stage.sections:
        key[f"config:{section}"] = digest(config_value(cfg, section))
    for path, _ in stage.inputs(run, cfg):
        p = run / path
        key[f"file:{path}"] = file_digest(p) if p.exists() else "absent"
    extra = stage.extra_key(cfg)
    if extra:
        key["extra"] = digest(extra)
    return key


def run_unit(run: Path, name: str, key: dict, outputs: Sequence[Path], fn: Callable[[], None], *,
             label: str | None = None) -> bool:
    """Run ``fn`` unless ``run/.stages/<name>.json`` records ``key`` and every output exists.

    The stage runner uses it for whole stages; a stage uses it for resumable parts of its
    own work (one fold). The key is recorded only after ``fn`` returns, so an interrupted
    unit runs again next time. Returns True when ``fn`` ran. ``label`` starts its log lines
    (default ``"stage <name>:"``; a fold of the train stage logs as ``"stage train: fold 0"``).
    """
    state = run / ".stages" / f"{name}.json"
    recorded = json.loads(state.read_text()).get("key", {}) if state.is_file() else {}
    missing = [p for p in outputs if not Path(p).exists()]
    label = label or f"stage {name}:"
    if recorded == key and not missing:
        log.info("%s up to date, skipped", label)
        return False
    changed = sorted(k for k in set(key) | set(recorded) if key.get(k) != recorded.get(k))
    why = (f"{len(missing)} output(s) missing" if missing and recorded else
           f"changed: {', '.join(changed[:4])}{' …' if len(changed) > 4 else ''}" if recorded else "first run")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.unlink(missing_ok=True)
    log.info("%s started (%s)", label, why)
    t0 = time.perf_counter()
    fn()
    state.write_text(json.dumps({"key": key, "seconds": round(time.perf_counter() - t0, 3)}, indent=1))
    log.info("%s done in %.1f s", label, time.perf_counter() - t0)
    return True
