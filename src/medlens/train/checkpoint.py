"""Checkpoints: the last epoch's full training state, written atomically in the background.

``last.pt`` holds weights, optimiser, scheduler, every random-number state, the history so
far and a fingerprint of the settings, so a killed run resumes to the same final weights
as an uninterrupted one (CPU, same seed). The file is replaced atomically
(write ``last.pt.tmp``, then rename), so a kill during a write leaves the previous one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import torch

from medlens.errors import ConfigError, StageInputMissing

log = logging.getLogger(__name__)

LAST = "last.pt"


def fingerprint(settings: dict) -> str:
    """Stable hash of the settings a checkpoint is only valid for."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def snapshot(obj):
    """A deep copy of a (nested) state dict, so training can go on while it is written."""
    return copy.deepcopy(obj)


class AsyncSaver:
    """Writes one checkpoint at a time on a background thread; :meth:`wait` joins it."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _write(self, state: dict, path: Path) -> None:
        try:
            tmp = path.with_name(path.name + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
        except BaseException as err:  # re-raised in the training thread by wait()
            self._error = err

    def save(self, state: dict, path: Path) -> None:
        """Start writing ``state`` (already a snapshot) to ``path`` after the previous write ends."""
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(state, Path(path)), daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the pending write is on disk; raise its error, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err


def load_last(path: Path) -> dict:
    """Read a ``last.pt`` written by :class:`AsyncSaver` (tensors and plain containers only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def resumable_state(ckpt: Path, fp: str, resume: bool | str, *, command: str, settings: str = "") -> dict | None:
    """The ``last.pt`` state to continue from, or None to start afresh.

    Parameters
    ----------
    ckpt : path
        The ``last.pt`` file.
    fp : str
        :func:`fingerprint` of the current settings; a checkpoint is used only when it matches.
    resume : {False, True, 'auto'}
        True requires a matching checkpoint; 'auto' uses one if present; False never does.
    command : str
        The command named in the error messages (``train``, ``pretrain``).
    settings : str
        What the fingerprint covers, for the mismatch message (e.g. ``" (model, train, seed)"``).

    Raises
    ------
    StageInputMissing
        ``resume=True`` without a checkpoint.
    ConfigError
        ``resume=True`` with a checkpoint of other settings.
    """
    if resume and ckpt.is_file():
        state = load_last(ckpt)
        if state["fingerprint"] == fp:
            log.info("%s: resuming after epoch %d", ckpt, state["epoch"])
            return state
        if resume is True:
            raise ConfigError(f"{ckpt} was written with other settings{settings}; delete it or {command} without --resume")
        log.info("%s: settings changed, starting afresh", ckpt)
    elif resume is True:
        raise StageInputMissing(f"no checkpoint to resume in {ckpt.parent} ({LAST} not found); {command} without --resume")
    return None
