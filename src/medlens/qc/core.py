"""``run_qc``: run the registered checks over images and return one row per image."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from medlens.errors import DataError
from medlens.qc.checks import REGISTRY, luminance
from medlens.config.qc import QCConfig

log = logging.getLogger(__name__)


def run_qc(images: Iterable[np.ndarray], sample_ids: Sequence[str], config: QCConfig | None = None) -> pd.DataFrame:
    """Run the quality gate.

    Parameters
    ----------
    images : iterable of ndarray of shape (C, H, W), float32 in [0, 1]
        Consumed once, in the order of ``sample_ids`` (a generator keeps memory flat).
    sample_ids : sequence of str
        One per image.
    config : QCConfig, optional
        Checks and thresholds; defaults documented in :mod:`medlens.config.qc`.

    Returns
    -------
    pandas.DataFrame
        ``sample_id``, ``passed``, ``reason`` (``"; "``-joined reasons of failing checks),
        then for each check ``is_<name>`` (bool) and ``<name>_score`` (< 1 means flagged).

    Examples
    --------
    >>> import numpy as np
    >>> df = run_qc([np.zeros((3, 32, 32), np.float32)], ["a"])
    >>> bool(df.loc[0, "passed"]), bool(df.loc[0, "is_exposure"])
    (False, True)
    """
    config = config or QCConfig()
    checks = [REGISTRY[name](config) for name in config.checks]
    measurements: list[list] = [[] for _ in checks]
    n = 0
    for img in images:
        img = np.asarray(img)
        if img.dtype != np.float32:
            img = img.astype(np.float32)
        lum = luminance(img)
        for k, check in enumerate(checks):
            measurements[k].append(check.measure(img, lum))
        n += 1
    ids = [str(s) for s in sample_ids]
    if n != len(ids):
        raise DataError(f"run_qc got {n} images but {len(ids)} sample ids; pass one id per image")
    out = pd.DataFrame({"sample_id": ids})
    fail_on = set(config.fail_on if config.fail_on is not None else config.checks)
    failed = np.zeros(n, dtype=bool)
    reasons: list[list[str]] = [[] for _ in range(n)]
    for check, meas in zip(checks, measurements):
        judged = check.judge(meas, ids)
        flags = np.array([score < 1 for score, _ in judged], dtype=bool)
        out[f"is_{check.name}"] = flags
        out[f"{check.name}_score"] = np.array([score for score, _ in judged], dtype=np.float64)
        for i, (_, reason) in enumerate(judged):
            if reason:
                reasons[i].append(f"{check.name}: {reason}")
        if check.name in fail_on:
            failed |= flags
    out.insert(1, "passed", ~failed)
    out.insert(2, "reason", ["; ".join(r) for r in reasons])
    log.info("QC: %d of %d images passed", int((~failed).sum()), n)
    return out
