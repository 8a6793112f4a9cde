"""The quality gate of a study: limits learned on the internal images, then every image judged."""

from __future__ import annotations

import pandas as pd

from medlens.config.qc import QCConfig
from medlens.data.images import load_image
from medlens.progress import track
from medlens.qc.core import run_qc
from medlens.qc.learn import learn_thresholds


def quality_gate(manifest: pd.DataFrame, config: QCConfig,
                 external_site: str | None = None) -> tuple[pd.DataFrame, QCConfig, dict, int]:
    """Learn the limits ``config`` does not pin from the internal images, then judge every image.

    Parameters
    ----------
    manifest : DataFrame
        Rows with ``image`` and ``sample_id`` (and ``site`` when ``external_site`` is set).
    config : QCConfig
    external_site : str, optional
        Images of this site are judged but never learned from (labels are never used).

    Returns
    -------
    qc : DataFrame
        One row per image (:func:`medlens.qc.run_qc`).
    learned : QCConfig
        The applied limits.
    report : dict
        Per limit: value, learned or fixed, and why (:func:`medlens.qc.learn.learn_thresholds`).
    n_learned : int
        The images the limits were learned from.
    """
    internal = manifest if external_site is None else manifest[manifest["site"] != external_site]
    learned, report = learn_thresholds(
        (load_image(ref) for ref in internal["image"]), config,
        progress=lambda it: track(it, total=len(internal), description="QC: learning limits"))
    images = (load_image(ref) for ref in track(manifest["image"], description="quality gate"))
    return run_qc(images, manifest["sample_id"].tolist(), learned), learned, report, len(internal)
