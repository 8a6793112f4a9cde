"""Tiny real studies: trained in seconds on a CPU, with every stage of `medlens run`."""

from __future__ import annotations

from pathlib import Path

PREPROCESSED = {"engine": {"preprocess": {"roi_crop": True, "clahe": "lab"}}}
"""Overrides that switch on the field-of-view crop and CLAHE (the preprocessing-contract tests)."""


def make_tiny_config(run_dir: Path, **overrides):
    """A study small enough to train in seconds on a CPU (2 folds, 2 epochs, 32 px)."""
    from medlens.config import StudyConfig

    base = {"run_dir": str(run_dir), "name": "tiny",
            "data": {"synthetic": {"n_patients": 30, "image_size": 64}},
            "split": {"folds": 2}, "train": {"epochs": 2, "image_size": 32},
            "evaluate": {"n_bootstrap": 200}, "explain": {"faithfulness_images": 4, "sanity_images": 4}}
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return StudyConfig.model_validate(base)


def trained_run(root: Path, **overrides) -> Path:
    """Run the whole tiny study (train, evaluate, explain, trust, export, report) and return its directory."""
    from medlens.stages.runner import run_study

    return run_study(make_tiny_config(root, **overrides))


def evaluated_run(root: Path, **overrides) -> Path:
    """Train and evaluate the tiny study, nothing after (``predictions.parquet``, ``metrics.json``).

    What ``medlens compare`` reads, without the explain, trust, export and report stages.
    """
    from medlens.evaluate.study import evaluate_run
    from medlens.stages.runner import prepare_study
    from medlens.train.fold import train_fold

    cfg = make_tiny_config(root, **overrides)
    manifest, splits = prepare_study(cfg)
    for k in range(len(splits["folds"])):
        train_fold(cfg, manifest, splits, k)
    evaluate_run(cfg.out, cfg)
    return cfg.out
