"""The training section of the report: learning curves and the chosen epoch of every fold.

:func:`write_training_section` writes it (``run/sections/train/``) once every fold has trained.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from medlens.sections import write_section


def _monitor(h: pd.DataFrame) -> str:
    """What training kept the best of: the ``monitor`` column, or for histories written before it was
    recorded (2026-12-04), the validation AUC when there is one."""
    if "monitor" in h.columns:
        return str(h["monitor"].iloc[-1])
    return "auc" if h["val_auc"].notna().any() else "loss"


def kept_row(h: pd.DataFrame) -> int:
    """Index of the row whose weights training kept: the first highest AUC or lowest loss, as the loop decides."""
    return int(h["val_auc"].idxmax() if _monitor(h) == "auc" else h["val_loss"].idxmin())


def _rule(histories: dict[int, pd.DataFrame]) -> str:
    rules = {_monitor(h) for h in histories.values()}
    return {"auc": "highest validation AUC", "loss": "lowest validation loss"}[rules.pop()] if len(rules) == 1 \
        else "best validation score"


def write_training_section(run: Path) -> Path | None:
    """Write the report's training section (``run/sections/train/``) after every fold has trained.

    Returns
    -------
    Path or None
        The written ``section.json``: ``title``, ``summary`` (one plain-language paragraph), the
        figure ``learning_curves`` and the table ``folds`` (one row per fold); None when no fold
        has a ``history.csv``.
    """
    from matplotlib.figure import Figure

    histories = {int(p.parent.name.split("_")[1]): pd.read_csv(p) for p in sorted(Path(run).glob("fold_*/history.csv"))}
    if not histories:
        return None
    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_auc = fig.subplots(1, 2)
    rows = []
    for k, h in sorted(histories.items()):
        ax_loss.plot(h["epoch"], h["train_loss"], color=f"C{k}", label=f"fold {k} train")
        ax_loss.plot(h["epoch"], h["val_loss"], color=f"C{k}", ls="--", label=f"fold {k} validation")
        ax_auc.plot(h["epoch"], h["val_auc"], color=f"C{k}", label=f"fold {k}")
        kept = h.loc[kept_row(h)]
        auc = float(kept["val_auc"])
        rows.append({"fold": k, "epochs run": int(h["epoch"].max()) + 1, "best epoch": int(kept["epoch"]),
                     "validation AUC": None if math.isnan(auc) else round(auc, 3),
                     "validation loss": round(float(kept["val_loss"]), 4)})
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_auc.set(xlabel="epoch", ylabel="AUC", title="validation AUC")
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    gap = [r["epochs run"] - 1 - r["best epoch"] for r in rows]
    when = "after every epoch" if all(len(h) == h["epoch"].max() + 1 for h in histories.values()) \
        else "at evenly spaced epochs"
    summary = (f"Each of the {len(rows)} folds was trained on its own training patients and watched on its own "
               f"validation patients {when}; the weights of the epoch with the {_rule(histories)} "
               f"were kept (on average {sum(gap) / len(gap):.1f} epochs before the last). A validation loss that "
               "rises while the training loss keeps falling means the network started to memorise the training "
               "images; the test and external sets played no part in these choices.")
    return write_section(run, "train", title="Training", summary=summary, figures={"learning_curves": fig},
                         tables={"folds": rows})
