"""The multi-objective search: requirement margin on validation against measured CPU latency.

Each candidate (backbone, image size) is trained once on fold 0's training patients with
the study's recipe and exported to ONNX; its fp32 and int8 (dynamic quantisation) graphs
are scored through ONNX Runtime on fold 0's validation patients. Optuna (multi-objective,
any storage URL) proposes the candidates: the whole grid when ``trials`` covers it,
otherwise TPE. At the end every candidate is timed again side by side (batch 1, one
thread, interleaved rounds), the Pareto front is marked and the choice is made from
``candidates.csv`` alone (:func:`medlens.lightweight.decide.choose`). Nothing here loads a
test or external image.

Outputs in ``run/tune/lightweight/``: ``candidates/<backbone>_<size>/`` (weights, ONNX,
per-precision results: a rerun reuses them), ``candidates.csv``, ``choice.json`` and, when
a candidate meets the requirement, ``chosen.yaml``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medlens.config import StudyConfig, dump_config, parse_config
from medlens.errors import ConfigError, MedlensError
from medlens.lightweight.decide import choose, pareto_front, requirement_estimate

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class Space:
    """The candidates: every backbone at every image size, in every precision."""

    backbones: tuple[str, ...] = ("mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100",
                                  "mobilenetv3_large_075", "mobilenetv3_large_100", "efficientnet_b0", "resnet18")
    image_sizes: tuple[int, ...] = (32, 48, 64)
    precisions: tuple[str, ...] = PRECISIONS

    @property
    def size(self) -> int:
        """Number of candidates in the grid."""
        return len(self.backbones) * len(self.image_sizes) * len(self.precisions)


class RequirementNotMet(MedlensError):
    """No candidate's validation CI lower bound reaches the requirement."""


class _FoldImages:
    """Fold 0's training or validation images at a candidate's size, each loaded once."""

    def __init__(self, manifest: pd.DataFrame, fold: dict) -> None:
        self.manifest, self.ids, self.cache = manifest, {"train": list(fold["train"]), "val": list(fold["val"])}, {}

    def __call__(self, tcfg: StudyConfig, part: str) -> tuple[torch.Tensor, np.ndarray]:
        from medlens.train.fold import FoldData

        key = (tcfg.train.image_size, part)
        if key not in self.cache:
            self.cache[key] = FoldData(tcfg, self.manifest)(self.ids[part])
        return self.cache[key]


def chosen_config(cfg: StudyConfig, row: pd.Series | dict) -> StudyConfig:
    """The study of the chosen candidate: run ``<name>-chosen`` with its backbone and image size.

    A sensitivity requirement also becomes the study's operating rule
    (``evaluate.operating_point: specificity`` at ``at_specificity``), so every figure of the
    confirmatory report is at the required operating point.
    """
    d = cfg.model_dump(mode="json")
    d["name"] = f"{cfg.name}-chosen"
    d["model"]["name"] = str(row["backbone"])
    d["train"]["image_size"] = int(row["image_size"])
    req = cfg.requirement
    if req is not None and req.metric == "sensitivity":
        d["evaluate"]["operating_point"] = "specificity"
        d["evaluate"]["target_specificity"] = req.at_specificity
    return parse_config(d, source="chosen config")


def _validated(cfg: StudyConfig, space: Space) -> None:
    if cfg.requirement is None:
        raise ConfigError("tune --objective requirement,latency: the config has no requirement; add e.g. "
                          "`requirement: {metric: auc, at_least: 0.94}`")
    if cfg.engine.task != "classification" or cfg.task != "classification":
        raise ConfigError("tune --objective requirement,latency: classification studies only")
    if cfg.model.pretrained is not None:
        raise ConfigError("tune --objective requirement,latency varies the architecture, so model.pretrained "
                          f"({cfg.model.pretrained}) cannot be loaded into every candidate; remove it")
    unknown = sorted(set(space.precisions) - set(PRECISIONS))
    if unknown or not space.precisions or not space.backbones or not space.image_sizes:
        raise ConfigError(f"--precisions must be a non-empty subset of {PRECISIONS}; backbones and sizes non-empty")
    import timm

    missing = [b for b in space.backbones if not timm.is_model(b)]
    if missing:
        raise ConfigError(f"--backbones: {', '.join(missing)} not in timm (e.g. mobilenetv3_small_100, resnet18)")


def search(cfg: StudyConfig, *, trials: int | None = None, storage: str | None = None, space: Space = Space(),
           study_name: str | None = None, progress=None) -> dict:
    """Search the candidates, write ``candidates.csv`` and ``choice.json``; return the choice.

    Parameters
    ----------
    cfg : StudyConfig
        The study, with a ``requirement``; its run directory must hold ``manifest.parquet``
        and ``splits.json`` (:func:`medlens.stages.runner.prepare_study`). Binary classification.
    trials : int, optional
        Optuna trials to run now; default (and any number ≥ ``space.size``): the whole grid.
    storage : str, optional
        Optuna storage URL (``sqlite:///runs/demo/tune.db``); trials accumulate over calls.
    space : Space
    study_name : str, optional
        Default ``<cfg.name>-lightweight-<digest of the requirement, the recipe and fold 0>``.
    progress : rich Progress, optional

    Returns
    -------
    dict
        The content of ``choice.json``: ``requirement``, ``chosen`` (a candidate row or
        None), ``largest`` (the fp32 candidate with most parameters), ``validation`` (fold,
        images, patients) and ``candidates`` (count).
    """
    import optuna

    from medlens.train.fold import task_classes
    from medlens.train.tune import load_inputs

    _validated(cfg, space)
    manifest, splits = load_inputs(cfg)
    if task_classes(cfg, manifest) != 2:
        raise ConfigError("tune --objective requirement,latency: binary classification only (the label has more "
                          "than two classes)")
    fold = splits["folds"][0]
    by_id = manifest.set_index("sample_id")
    val = by_id.loc[fold["val"]]
    y_val, groups = val["label"].to_numpy(int), val["patient_id"].to_numpy()
    work = cfg.out / "tune" / "lightweight"
    work.mkdir(parents=True, exist_ok=True)
    data = _FoldImages(manifest, fold)

    scored: dict[tuple[str, int, str], dict] = {}  # this call's estimates; trials of earlier calls are re-scored

    def score(b: str, s: int, q: str) -> dict:
        if (b, s, q) not in scored:
            scored[b, s, q] = _score(cfg, work, b, s, q, data, y_val, groups, progress)
        return scored[b, s, q]

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        b = trial.suggest_categorical("backbone", list(space.backbones))
        s = trial.suggest_categorical("image_size", list(space.image_sizes))
        q = trial.suggest_categorical("precision", list(space.precisions))
        r = score(b, s, q)
        trial.set_user_attr("params", r["params"])
        return r["margin"], _trial_latency(work, b, s, q)

    grid = {"backbone": list(space.backbones), "image_size": list(space.image_sizes),
            "precision": list(space.precisions)}
    n = space.size if trials is None else trials
    if n < 1:
        raise ConfigError(f"--trials must be at least 1, got {n}")
    sampler = (optuna.samplers.GridSampler(grid, seed=cfg.seed) if n >= space.size
               else optuna.samplers.TPESampler(seed=cfg.seed))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the default name changes with the requirement and the recipe, so a storage never mixes their values
    name = study_name or f"{cfg.name}-lightweight-{_digest(cfg.requirement, _recipe(cfg), fold)[:10]}"
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                                load_if_exists=True, sampler=sampler)
    study.optimize(objective, n_trials=n, catch=(MedlensError,))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ConfigError(f"no candidate completed; see the log and {work}")
    on_front = {t.number for t in study.best_trials}
    rows = {}
    for t in done:  # the latest trial of each candidate; its estimate recomputed from the cached probabilities
        b, s, q = t.params["backbone"], t.params["image_size"], t.params["precision"]
        rows[b, s, q] = {**score(b, s, q), "trial": t.number, "trial_margin": t.values[0],
                         "trial_latency_ms": t.values[1], "optuna_front": t.number in on_front}
    table = pd.DataFrame(list(rows.values())).sort_values(["backbone", "image_size", "precision"]).reset_index(drop=True)
    table["latency_ms"] = _side_by_side(work, table)
    table["front"] = pareto_front(table["margin"].to_numpy(), table["latency_ms"].to_numpy())
    table.to_csv(work / "candidates.csv", index=False)
    return decide(cfg, work, table, n_val=len(val), n_patients=int(val["patient_id"].nunique()))


def _recipe(cfg: StudyConfig) -> dict:
    """What a candidate's weights depend on besides backbone and size."""
    return {"seed": cfg.seed, "train": cfg.train.model_dump(mode="json"), "engine": cfg.engine.model_dump(mode="json"),
            "model": cfg.model.model_dump(mode="json", exclude={"name"})}


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps([p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts],
                                     sort_keys=True, default=str).encode()).hexdigest()


def _onnx_path(work: Path, backbone: str, size: int, precision: str) -> Path:
    return work / "candidates" / f"{backbone}_{size}" / ("model.onnx" if precision == "fp32" else "model.int8.onnx")


def _score(cfg: StudyConfig, work: Path, backbone: str, size: int, precision: str, data, y_val: np.ndarray,
           groups: np.ndarray, progress) -> dict:
    """One candidate in one precision: the requirement's validation estimate, parameters and file size.

    The weights, the ONNX graphs and the validation probabilities are cached in the
    candidate's folder under a key of the recipe and the fold's patients; the estimate is
    recomputed every time, so a changed requirement never reuses an old verdict.
    """
    from medlens.export.onnx_export import quantize
    from medlens.inference.onnx import onnx_proba, session
    from medlens.train.tune import trial_config

    tcfg = trial_config(cfg, {"lr": cfg.train.lr, "backbone": backbone, "image_size": size})
    d = work / "candidates" / f"{backbone}_{size}"
    key = _digest(_recipe(tcfg), backbone, size, sorted(data.ids["train"]), sorted(data.ids["val"]))
    if not (d / "key.txt").is_file() or (d / "key.txt").read_text() != key or not (d / "model.onnx").is_file():
        shutil.rmtree(d, ignore_errors=True)
        _train_and_export(tcfg, d, data, progress)
        (d / "key.txt").write_text(key)
    path = _onnx_path(work, backbone, size, precision)
    if not path.is_file():
        quantize(d / "model.onnx", path, "int8")
    cached = d / f"val_{precision}.npy"
    if not cached.is_file():
        np.save(cached, onnx_proba(session(path, threads=max(1, torch.get_num_threads())), data(tcfg, "val")[0])[:, 1])
    est = requirement_estimate(y_val, np.load(cached), groups, cfg.requirement, n_boot=cfg.evaluate.n_bootstrap,
                               seed=cfg.seed)
    card = json.loads((d / "card.json").read_text())
    log.info("%s %d px %s: %s %.3f (95%% CI %.3f-%.3f)", backbone, size, precision, cfg.requirement.metric,
             est["value"], est["low"], est["high"])
    return {"backbone": backbone, "image_size": size, "precision": precision, "params": card["params"],
            "size_bytes": path.stat().st_size, **est}


def _batch1_call(work: Path, backbone: str, size: int, precision: str):
    """A callable running one candidate's ONNX graph on one random image, on one thread."""
    from medlens.inference.onnx import session

    sess = session(_onnx_path(work, backbone, size, precision), threads=1)
    feed = {"image": np.random.default_rng(0).random((1, sess.get_inputs()[0].shape[1], size, size), dtype=np.float32)}
    return lambda: sess.run(["probabilities"], feed)


def _trial_latency(work: Path, backbone: str, size: int, precision: str) -> float:
    """Batch-1 p50 latency (ms, one thread) of one candidate, as the trial's second objective."""
    from medlens.export.onnx_export import time_calls

    return float(np.median(time_calls({"x": _batch1_call(work, backbone, size, precision)}, per_round=30)["x"]) * 1e3)


def _train_and_export(tcfg: StudyConfig, d: Path, data, progress) -> None:
    """Fit the candidate on fold 0 with the study's recipe; export the best epoch as ONNX; count parameters."""
    from safetensors.torch import load_file

    from medlens.export.onnx_export import export_onnx
    from medlens.inference import Ensemble
    from medlens.train.fold import build_model
    from medlens.train.loop import fit, seed_everything

    seed = tcfg.seed * 1000
    seed_everything(seed)
    fit_dir = d / "fit"
    fit_dir.mkdir(parents=True, exist_ok=True)
    fit(build_model(tcfg, 2), data(tcfg, "train"), data(tcfg, "val"), tcfg.train, num_classes=2, seed=seed,
        out_dir=fit_dir, progress=progress, engine=tcfg.engine.model_copy(update={"checkpoint": False}))
    model = build_model(tcfg, 2)
    model.load_state_dict(load_file(str(fit_dir / "model.safetensors")))
    model.eval()
    size, chans = tcfg.train.image_size, tcfg.model.in_chans
    tmp = d / "model.onnx.tmp"
    export_onnx(Ensemble([model]), tmp, image_size=size, in_chans=chans,
                metadata={"model_name": tcfg.model.name, "image_size": str(size), "candidate": "lightweight search"})
    (d / "card.json").write_text(json.dumps({"params": int(sum(p.numel() for p in model.parameters()))}))
    tmp.replace(d / "model.onnx")


def _side_by_side(work: Path, table: pd.DataFrame, rounds: int = 5, per_round: int = 20) -> np.ndarray:
    """Batch-1 p50 latency (ms, one thread) of every candidate, timed in interleaved rounds."""
    from medlens.export.onnx_export import time_calls

    calls = {i: _batch1_call(work, r["backbone"], int(r["image_size"]), r["precision"]) for i, r in table.iterrows()}
    t = time_calls(calls, rounds=rounds, per_round=per_round)
    return np.array([np.median(t[i]) * 1e3 for i in table.index])


def decide(cfg: StudyConfig, work: Path, table: pd.DataFrame, *, n_val: int, n_patients: int) -> dict:
    """Choose from the candidates table and write ``choice.json`` (and ``chosen.yaml`` when one meets it)."""
    row = choose(table)
    chosen = None if row is None else chosen_config(cfg, row)
    fp32 = table[table["precision"] == "fp32"]
    largest = (fp32 if len(fp32) else table).sort_values(["params", "image_size"]).iloc[-1]
    info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "requirement": {**cfg.requirement.model_dump(), "text": cfg.requirement.describe()},
            "chosen": None if row is None else _plain(row), "largest": _plain(largest),
            "validation": {"fold": 0, "n_images": n_val, "n_patients": n_patients,
                           "rule": "95% CI lower bound on fold 0's validation patients (patient bootstrap)"},
            "candidates": int(len(table)), "latency": "ONNX Runtime, batch 1, 1 thread, p50 of 5 interleaved rounds",
            "chosen_run": None if chosen is None else chosen.name}
    (work / "chosen.yaml").unlink(missing_ok=True)
    if chosen is not None:
        (work / "chosen.yaml").write_text(f"# lightest candidate meeting {info['requirement']['text']} on validation\n"
                                          + dump_config(chosen))
    (work / "choice.json").write_text(json.dumps(info, indent=1))
    return info


def _plain(row: pd.Series) -> dict:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.to_dict().items()}

