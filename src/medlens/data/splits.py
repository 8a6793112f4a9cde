"""Patient-grouped, label-stratified splits; external-site holdout; leakage check.

A patient's images always land in the same part (train, validation, test or external):
otherwise near-identical images of one eye sit on both sides and inflate every metric.

The assignment is greedy and exact: patients are shuffled by the seed, ordered by number
of images (largest first), and each goes to the part whose per-class image counts are
furthest below their target share. With patients of a few images each this keeps every
part's class balance within a few percent of the whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medlens.errors import DataError, LeakageError, StageInputMissing

PARTS = ("train", "val", "test", "external")


def assign_groups(labels: np.ndarray, groups: np.ndarray, weights: list[float], *, seed: int) -> np.ndarray:
    """Assign every group (patient) to one of ``len(weights)`` parts, stratified by label.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        Class index per sample (unlabeled samples as -1 form their own stratum).
    groups : array-like of shape (n_samples,)
        Patient id per sample.
    weights : list of float
        Target share of each part; normalised to sum to 1.
    seed : int
        Shuffles patients before the greedy pass (ties and order).

    Returns
    -------
    ndarray of shape (n_samples,)
        Part index per sample; all samples of a group share it.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    w = np.asarray(weights, float) / np.sum(weights)
    classes, y = np.unique(labels, return_inverse=True)
    g, uniq = pd.factorize(groups)  # patients in order of first appearance: independent of the IDs' spelling
    counts = np.zeros((len(uniq), len(classes)))
    np.add.at(counts, (g, y), 1)
    target = w[:, None] * counts.sum(0)[None, :]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]
    filled = np.zeros_like(target)
    part_of = np.empty(len(uniq), int)
    for p in order:
        # fill ratio each part would have after taking this patient, on the patient's classes
        ratio = ((filled + counts[p]) / np.maximum(target, 1e-9))[:, counts[p] > 0].max(1)
        best = int(np.argmin(ratio))
        part_of[p] = best
        filled[best] += counts[p]
    return part_of[g]


def make_splits(
    manifest: pd.DataFrame,
    *,
    folds: int,
    test_fraction: float,
    external_site: str | None,
    seed: int,
    strategy: str = "kfold",
    classify: bool = True,
    pool_val: bool = False,
) -> dict:
    """Build the study's splits.

    Returns a JSON-ready dict with ``test``, ``external`` (sample ids) and ``folds``, a list
    of ``{"train": [...], "val": [...]}``. Unlabeled rows (e.g. OOD images) are left out.
    With ``strategy="predefined"`` the manifest's ``split`` column is used: train/val/test
    as one fold, or, with no val rows (or ``pool_val``: val rows joined to train), test as
    given and ``folds`` patient-grouped folds drawn from train. ``classify`` (classification
    studies) requires every class in every part (:func:`check_classes`); otherwise only that
    no part is empty. Sample ids are listed in the manifest's row order, and patients are
    taken in order of first appearance, so the splits (and the training that follows them)
    do not depend on how the IDs are spelled: pseudonyms give the original study's splits.
    """
    labeled = manifest[manifest["label"].notna()]
    if labeled.empty:
        raise DataError(f"no labelled image to split ({len(manifest)} images, none with a label after the quality "
                        "gate); check the label column and qc.parquet")
    if external_site is not None:
        is_ext = labeled["site"] == external_site
        sites = sorted(labeled["site"].astype(str).unique())
        if not is_ext.any():
            raise DataError(f"split.external_site '{external_site}' names no image: the sites in the data are {sites}; "
                            "set split.external_site to one of them, or to null for no external validation")
        if is_ext.all():
            raise DataError(f"split.external_site '{external_site}' holds every labelled image; nothing is left to "
                            "train on. Set split.external_site: null, or add images of another site")
    else:
        is_ext = pd.Series(False, index=labeled.index)
    internal = labeled[~is_ext]
    out: dict = {"seed": seed, "strategy": strategy, "external_site": external_site,
                 "external": labeled.loc[is_ext, "sample_id"].tolist()}
    if strategy == "predefined":
        if "split" not in internal.columns:
            raise DataError("split.strategy 'predefined' needs a 'split' column in the manifest (e.g. MedMNIST)")
        by = {s: internal.loc[internal["split"] == s, "sample_id"].tolist() for s in ("train", "val", "test")}
        if by["val"] and not pool_val:
            out.update(test=by["test"], folds=[{"train": by["train"], "val": by["val"]}])
        else:  # only train and test given, or val pooled with train: validation patients drawn from them, k-fold
            dev = internal[internal["split"].isin(["train", "val"])]
            fold_of = assign_groups(dev["label"].to_numpy(int), dev["patient_id"].to_numpy(), [1.0] * folds,
                                    seed=seed + 1)
            ids = dev["sample_id"].to_numpy()
            out.update(test=by["test"], folds=[{"train": ids[fold_of != k].tolist(), "val": ids[fold_of == k].tolist()}
                                               for k in range(folds)])
        _check_parts(internal, out, classify)
        return out
    y, pid = internal["label"].to_numpy(int), internal["patient_id"].to_numpy()
    if strategy == "temporal":
        is_test = _newest(internal, test_fraction)
        out["test_from"] = (f"acquisition order {int(internal.loc[is_test, 'acquired_order'].min())} (dates are shifted "
                            "per patient)" if "acquired_order" in internal.columns
                            else str(pd.to_datetime(internal.loc[is_test, "acquired"]).min().date()))
    else:
        is_test = assign_groups(y, pid, [test_fraction, 1 - test_fraction], seed=seed) == 0
    dev = internal[~is_test]
    fold_of = assign_groups(dev["label"].to_numpy(int), dev["patient_id"].to_numpy(), [1.0] * folds, seed=seed + 1)
    ids = dev["sample_id"].to_numpy()
    out["test"] = internal.loc[is_test, "sample_id"].tolist()
    out["folds"] = [{"train": ids[fold_of != k].tolist(), "val": ids[fold_of == k].tolist()} for k in range(folds)]
    _check_parts(internal, out, classify)
    return out


def repeat_splits(manifest: pd.DataFrame, splits: dict, repeat: int, *, classify: bool = True) -> dict:
    """The splits of repeat ``repeat`` of a repeated cross-validation: new folds, the same locked parts.

    The development patients of ``splits`` (every fold's train and val) are assigned to the
    same number of patient-grouped, label-stratified folds with seed ``splits["seed"] + 1 +
    10_000 × repeat``; ``test`` and ``external`` stay as they are. A single predefined
    train/val split is kept as it is (a repeat then changes only the initial weights).

    Parameters
    ----------
    manifest : DataFrame
        The run's manifest (``sample_id``, ``patient_id``, ``label``).
    splits : dict
        ``splits.json`` (repeat 0).
    repeat : int
        1, 2, ...
    classify : bool
        Require every class in every part, as :func:`make_splits`.
    """
    out = {**splits, "repeat": repeat}
    folds = splits["folds"]
    if splits.get("strategy") == "predefined" and len(folds) == 1:
        return out
    dev_ids = {s for f in folds for s in f["train"] + f["val"]}
    dev = manifest[manifest["sample_id"].isin(dev_ids)]  # the manifest's row order, as make_splits
    fold_of = assign_groups(dev["label"].to_numpy(int), dev["patient_id"].to_numpy(), [1.0] * len(folds),
                            seed=splits["seed"] + 1 + 10_000 * repeat)
    ids = dev["sample_id"].to_numpy()
    out["folds"] = [{"train": ids[fold_of != k].tolist(), "val": ids[fold_of == k].tolist()}
                    for k in range(len(folds))]
    _check_parts(manifest, out, classify)
    return out


def _check_parts(internal: pd.DataFrame, out: dict, classify: bool) -> None:
    if classify:  # a segmentation study may have one image class (every DRIVE image shows vessels)
        check_classes(internal, out)
        return
    empty = [f"fold {k} {part}" for k, f in enumerate(out["folds"]) for part in ("train", "val") if not f[part]]
    if empty or not out["test"]:
        raise DataError(f"{(empty or ['the test set'])[0]} is empty ({len(internal)} images); "
                        "lower split.folds or add images")


def _newest(internal: pd.DataFrame, fraction: float) -> np.ndarray:
    """Rows of the newest ``fraction`` of patients by their first acquisition date (whole patients).

    A pseudonymised source's dates are shifted per patient, so its ``acquired_order`` (the
    rank of the original dates) orders the patients.
    """
    if "acquired" not in internal.columns or pd.to_datetime(internal["acquired"], errors="coerce").isna().all():
        raise DataError("split.strategy 'temporal' needs acquisition dates: map the date column in "
                        "data.csv_columns.date (ISO 8601, e.g. 2021-03-15)")
    when = (internal["acquired_order"].astype("Float64").astype(float) if "acquired_order" in internal.columns
            else pd.to_datetime(internal["acquired"], errors="coerce"))  # pseudonymised sources: the original order
    if when.isna().any():
        raise DataError(f"split.strategy 'temporal': {int(when.isna().sum())} image(s) have no readable acquisition "
                        f"date, e.g. {internal.loc[when.isna(), 'sample_id'].iloc[0]}")
    first = when.groupby(internal["patient_id"]).min().sort_values(kind="stable")
    n_test = max(1, round(fraction * len(first)))
    newest = set(first.index[-n_test:])
    return internal["patient_id"].isin(newest).to_numpy()


def check_classes(manifest: pd.DataFrame, splits: dict, *, min_test: int = 2) -> None:
    """Raise DataError unless every class is in every fold's train and val part and ``min_test`` times in test.

    A fold without a positive cannot be validated, and a test set with one positive has
    no confidence interval; the message says which part lacks which class and what to change.
    """
    label = manifest.set_index("sample_id")["label"]
    classes = sorted(int(c) for c in label.dropna().unique())
    if len(classes) < 2:
        raise DataError(f"only one class ({classes}) among {len(label)} labelled images; a classifier needs two or more")
    parts = [(f"fold {k} {part}", fold[part], 1) for k, fold in enumerate(splits["folds"]) for part in ("train", "val")]
    for name, ids, need in parts + [("test set", splits["test"], min_test)]:
        counts = label.loc[list(ids)].astype(int).value_counts() if len(ids) else pd.Series(dtype=int)
        short = [c for c in classes if counts.get(c, 0) < need]
        if short:
            n = {c: int((label.astype(int) == c).sum()) for c in short}
            raise DataError(f"the {name} holds {', '.join(f'{counts.get(c, 0)} image(s) of class {c}' for c in short)} "
                            f"(the data hold {', '.join(f'{v} of class {c}' for c, v in n.items())}); lower split.folds "
                            "or raise split.test_fraction, or add images of that class")


def check_leakage(manifest: pd.DataFrame, splits: dict) -> None:
    """Raise :class:`LeakageError` if any patient appears in two parts of any fold.

    Parts are train, val, test and external. The message lists the offending patient ids
    (pseudonyms after de-identification) and the parts they appear in.
    """
    pid = manifest.set_index("sample_id")["patient_id"]
    unknown = set(splits["test"]) | set(splits["external"])
    for fold in splits["folds"]:
        unknown |= set(fold["train"]) | set(fold["val"])
    unknown -= set(pid.index)
    if unknown:
        raise DataError(f"splits name sample ids not in the manifest: {sorted(unknown)[:5]}")
    problems = []
    for k, fold in enumerate(splits["folds"]):
        parts = {"train": fold["train"], "val": fold["val"], "test": splits["test"], "external": splits["external"]}
        patients = {name: set(pid.loc[list(ids)]) for name, ids in parts.items()}
        names = list(parts)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = patients[a] & patients[b]
                if shared:
                    problems.append(f"fold {k}: {a}/{b} share patient(s) {sorted(shared)[:10]}")
    if problems:
        raise LeakageError("patient leakage between splits: " + "; ".join(problems))


def save_splits(splits: dict, path: str | Path) -> Path:
    """Write ``splits.json`` (indented, sorted keys, human-readable)."""
    path = Path(path)
    path.write_text(json.dumps(splits, indent=1, sort_keys=True))
    return path


def load_splits(path: str | Path) -> dict:
    """Read ``splits.json``."""
    path = Path(path)
    if not path.is_file():
        raise StageInputMissing(f"{path} not found; run `medlens split` (or `medlens run`) first")
    return json.loads(path.read_text())
