"""The explain stage: read a finished run directory, write ``run/explain/``.

Inputs: ``config.yaml`` (the model the run trained), ``manifest.parquet`` (images and the
expert ROI), ``predictions.parquet`` (which images are in the test set), and
``fold_<k>/model.safetensors``. Outputs under ``run/explain/``:

- ``maps.npz`` — ``sample_id`` and ``maps`` (float16 ``N×S×S`` in [0, 1], at training size);
- ``overlays/<sample_id>.png`` — heat map over the image with the expert box drawn;
- ``agreement.parquet`` — one row per image: prediction, the explained class, agreement scores of the model's
  map and of a random map, deletion/insertion AUC and ROAD where computed;
- ``sanity.csv`` — the cascading randomisation steps;
- ``summary.json`` — aggregated scores with 95 % CIs, the sanity verdict and the flags.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medlens.config import StudyConfig, load_config
from medlens.data.cache import build_cache
from medlens.data.preprocess import Preprocess
from medlens.data.images import load_image, load_mask
from medlens.data.manifest import load_manifest
from medlens.errors import DataError, StageInputMissing
from medlens.explain import agreement as agr
from medlens.inference.cam import explain_images, explained_classes, explained_member
from medlens.explain.faithfulness import curve_auc, deletion_insertion_curves, road_scores
from medlens.explain.report import safe_name as _safe
from medlens.explain.report import write_explain_section
from medlens.explain.sanity import cascading_randomisation
from medlens.inference import load_ensemble, operating_threshold

log = logging.getLogger(__name__)
OUT = "explain"


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise StageInputMissing(f"{path} not found; {what}")
    return path


def expert_region(row: pd.Series, pre: Preprocess, *, mode: str = "box") -> np.ndarray | None:
    """The expert region of a manifest row in the prepared image (``size×size`` bool), or None if it has none.

    The box (or mask) goes through the same field-of-view crop, resize and padding as the
    image (:class:`medlens.data.preprocess.Preprocess`).
    """
    size = pre.size
    has_box = all(c in row.index and pd.notna(row[c]) for c in ("roi_x0", "roi_y0", "roi_x1", "roi_y1"))
    has_mask = "mask" in row.index and isinstance(row["mask"], str) and row["mask"] != ""
    if not (has_box or (mode == "mask" and has_mask)):
        return None
    img = load_image(row["image"]) if pre.roi_crop else None
    if mode == "mask" and has_mask:
        m = load_mask(row["mask"])
        x0, y0, x1, y1 = pre.crop(img) if img is not None else (0, 0, m.shape[1], m.shape[0])
        m = m[y0:y1, x0:x1]
        scale = size / max(m.shape)
        nh, nw = max(1, round(m.shape[0] * scale)), max(1, round(m.shape[1] * scale))
        oy, ox = (size - nh) // 2, (size - nw) // 2
        out = np.zeros((size, size), bool)
        out[oy:oy + nh, ox:ox + nw] = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
        return out if out.any() else None
    h, w = _image_hw(row) if img is None else img.shape[1:]
    crop = pre.crop(img) if img is not None else (0, 0, w, h)
    bx = pre.box_to_output((row["roi_x0"], row["roi_y0"], row["roi_x1"] + 1, row["roi_y1"] + 1), (h, w), crop)
    return agr.box_region((bx[0], bx[1], bx[2] - 1, bx[3] - 1), (size, size))


def _image_hw(row: pd.Series) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(row["image"]) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError):
        return tuple(load_image(row["image"]).shape[1:])  # type: ignore[return-value]


def overlay(image_u8: np.ndarray, heat: np.ndarray, region: np.ndarray | None = None, *, scale: int = 2) -> np.ndarray:
    """RGB uint8 overlay (``scale``× enlarged): jet heat map over the image, expert box outline in green."""
    img = image_u8.transpose(1, 2, 0)
    img = np.repeat(img, 3, 2) if img.shape[2] == 1 else img
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * np.clip(heat, 0, 1)), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = np.uint8(np.clip(0.55 * img.astype(np.float32) + 0.45 * colour, 0, 255))
    out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if region is not None and region.any():
        ys, xs = np.nonzero(region)
        cv2.rectangle(out, (int(xs.min()) * scale, int(ys.min()) * scale),
                      (int(xs.max() + 1) * scale - 1, int(ys.max() + 1) * scale - 1), (0, 255, 0), 1)
    return out


def _rows(run: Path, cfg: StudyConfig) -> pd.DataFrame:
    pred = pd.read_parquet(_need(run / "predictions.parquet", "evaluate the run first (`medlens run`)"))
    manifest = load_manifest(run / "manifest.parquet")
    ex = cfg.explain
    sel = pred[pred["part"].isin(ex.parts)].drop_duplicates("sample_id")
    if sel.empty:
        raise DataError(f"{run / 'predictions.parquet'}: no predictions in part(s) {ex.parts} to explain")
    keep = [c for c in manifest.columns if c not in ("label", "patient_id")]
    rows = sel[["sample_id", "part"]].merge(manifest[keep + ["label", "patient_id"]], on="sample_id", how="left")
    return rows.head(ex.max_images).reset_index(drop=True)


def explain_stage(run: Path, cfg: StudyConfig | None = None) -> dict:
    """Explain the test images of a run and score the maps; writes ``run/explain/`` and returns the summary.

    Parameters
    ----------
    run : path
        A finished run directory.
    cfg : StudyConfig, optional
        Its ``explain`` section drives this stage; default: ``run/config.yaml``. The
        network is always rebuilt from ``run/config.yaml`` (the one that trained it).
    """
    run = Path(run)
    trained = load_config(_need(run / "config.yaml", "run `medlens run` first"))
    cfg = cfg or trained
    ex = cfg.explain
    rows = _rows(run, cfg)
    pre = Preprocess.from_config(trained)
    size = pre.size
    model, target = explained_member(run, trained.model_copy(update={"explain": ex}))
    ensemble = load_ensemble(run, trained)
    log.info("explain: %s on layer %s (%dx%d) of fold %d", ex.method, target.name, *target.grid, ex.fold)
    x = build_cache(run, rows["image"].tolist(), pre).to_tensor()
    # the decision shown beside each map is the evaluated one: the calibrated ensemble (for a validation image,
    # the fold model that held it out) at the operating threshold of metrics.json
    val_fold = {s: f for f, fold in enumerate(json.loads((run / "splits.json").read_text())["folds"]) for s in fold["val"]}
    _, member, _ = ensemble.run(x)
    proba = np.empty((len(rows), member.shape[2]))
    for i, (sid, part) in enumerate(zip(rows["sample_id"], rows["part"])):
        proba[i] = member[i, ensemble.folds.index(val_fold[sid])] if part == "val" else member[i].mean(0)
    tc = explained_classes(ex.target_class, proba)
    from rich.console import Console

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, disable=not Console().is_terminal) as progress:
        maps = explain_images(model, x, target, method=ex.method, target_class=tc, batch_size=ex.batch_size,
                              progress=progress)
    score_col = ex.target_class if isinstance(ex.target_class, int) else 1  # binary: p1, as predictions.parquet
    table = rows[["sample_id", "patient_id", "part", "label"]].copy()
    table["score"] = proba[:, min(score_col, proba.shape[1] - 1)]
    table["explained_class"] = tc
    rand = agr.random_maps(len(x), size, grid=target.grid, seed=cfg.seed)
    out = run / OUT
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    scores, base, regions = [], [], []
    for i, (_, row) in enumerate(rows.iterrows()):
        region = expert_region(row, pre, mode=ex.roi)
        regions.append(region)
        if region is None:
            scores.append({}), base.append({})
        else:
            scores.append(agr.image_scores(maps[i], region, method=ex.threshold, top_percent=ex.top_percent))
            base.append(agr.image_scores(rand[i], region, method=ex.threshold, top_percent=ex.top_percent))
        cv2.imwrite(str(out / "overlays" / f"{_safe(row['sample_id'])}.png"),
                    cv2.cvtColor(overlay(x[i].numpy(), maps[i], region), cv2.COLOR_RGB2BGR))
    for k in (*agr.SCORES, "area"):
        table[k] = [s.get(k, np.nan) for s in scores]
    for k in agr.SCORES:
        table[f"{k}_random"] = [s.get(k, np.nan) for s in base]
    if "mask" in rows.columns:
        table["rank_corr"] = [_rank_vs_mask(r, maps[i], pre) for i, (_, r) in enumerate(rows.iterrows())]
    table = table.join(_faithfulness(model, x, maps, rand, ex, tc))
    np.savez_compressed(out / "maps.npz", sample_id=rows["sample_id"].to_numpy(str), maps=maps.astype(np.float16))
    table.to_parquet(out / "agreement.parquet", index=False)
    sanity = {}
    if ex.sanity_images:
        k = min(ex.sanity_images, len(x))
        steps, sanity = cascading_randomisation(model, x[:k], target, method=ex.method, target_class=tc[:k],
                                                seed=cfg.seed, reference=maps[:k])
        steps.to_csv(out / "sanity.csv", index=False)
    summary = summarise(table, cfg, method=ex.method, layer=target.name, grid=target.grid, sanity=sanity,
                        threshold=operating_threshold(run) or 0.5)
    summary["explained"] = (f"class {ex.target_class}" if isinstance(ex.target_class, int)
                            else "class 1 (the positive class)" if ex.target_class == "auto" and member.shape[2] == 2
                            else "each image's predicted class (the evaluated ensemble's)")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=float))
    write_explain_section(run)  # the report's section: run/sections/explain/
    return summary


def _rank_vs_mask(row: pd.Series, heat: np.ndarray, pre: Preprocess) -> float:
    if not isinstance(row.get("mask"), str) or int(row.get("label", 0) or 0) != 1:
        return float("nan")
    region = expert_region(row, pre, mode="mask")
    return float("nan") if region is None else agr.rank_correlation_score(heat, agr.soft_expert_map(region))


def _faithfulness(model, x, maps, rand, ex, tc) -> pd.DataFrame:
    n = min(ex.faithfulness_images, len(x))
    cols = {c: np.full(len(x), np.nan) for c in ("deletion_auc", "insertion_auc", "deletion_auc_random",
                                                 "insertion_auc_random", "road")}
    if n:
        d, i = deletion_insertion_curves(model, x[:n], maps[:n], target_class=tc[:n])
        dr, ir = deletion_insertion_curves(model, x[:n], rand[:n], target_class=tc[:n])
        cols["deletion_auc"][:n], cols["insertion_auc"][:n] = curve_auc(d), curve_auc(i)
        cols["deletion_auc_random"][:n], cols["insertion_auc_random"][:n] = curve_auc(dr), curve_auc(ir)
        if ex.road:
            cols["road"][:n] = road_scores(model, x[:n], maps[:n], target_class=tc[:n])
    return pd.DataFrame(cols)


def summarise(table: pd.DataFrame, cfg: StudyConfig, *, method: str, layer: str, grid: tuple[int, int],
              sanity: dict, threshold: float = 0.5) -> dict:
    """Aggregate per-image scores with CIs, and raise the flags.

    Headline agreement is over the true positives (positive label, score >= ``threshold``,
    with an expert region) — all positives when fewer than two; ``energy_all_positives``
    keeps the score over every positive.
    """
    from medlens.train.loop import validation_auc

    n_boot, seed, ex = cfg.evaluate.n_bootstrap, cfg.seed, cfg.explain
    positives = table[(table["label"] == 1) & table["energy"].notna()]
    pos = positives[positives["score"] >= threshold]  # true positives: a map of a missed lesion explains nothing
    scope = "true positives"
    if len(pos) < 2:
        pos, scope = positives, "all positives"
    agreement = {"energy_all_positives": {
        "model": agr.aggregate(positives["energy"], groups=positives["patient_id"], n_resamples=n_boot, seed=seed).to_dict(),
        "random": agr.aggregate(positives["energy_random"], groups=positives["patient_id"], n_resamples=n_boot,
                                seed=seed).to_dict()}}
    for k in agr.SCORES:
        model_est = agr.aggregate(pos[k], groups=pos["patient_id"], n_resamples=n_boot, seed=seed)
        rand_est = agr.aggregate(pos[f"{k}_random"], groups=pos["patient_id"], n_resamples=n_boot, seed=seed)
        agreement[k] = {"model": model_est.to_dict(), "random": rand_est.to_dict()}
    if "rank_corr" in pos:
        agreement["rank_corr"] = {"model": agr.aggregate(pos["rank_corr"], groups=pos["patient_id"],
                                                         n_resamples=n_boot, seed=seed).to_dict()}
    agreement["area"] = float(pos["area"].mean()) if len(pos) else float("nan")
    faith = {}
    f = table[table["deletion_auc"].notna()]
    for k in ("deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random", "road"):
        faith[k] = agr.aggregate(f[k], groups=f["patient_id"], n_resamples=n_boot, seed=seed).to_dict() \
            if k in f and f[k].notna().any() else None
    labelled = table[table["label"].notna()]
    y = (labelled["label"].astype(int) == 1).to_numpy(int)  # class 1 against the rest (multi-class too)
    auc = validation_auc(y, np.stack([1 - labelled["score"], labelled["score"]], 1))
    energy, energy_rand = agreement["energy"]["model"], agreement["energy"]["random"]
    rationale_ok = bool(np.isfinite(energy["low"]) and energy["low"] > energy_rand["value"] + ex.margin)
    flags = []
    if len(pos) and not rationale_ok:
        lead = "The model separates the classes well (AUC %.2f) but its" % auc if auc >= 0.75 else "The model's"
        flags.append(f"{lead} heat maps do not point at the expert's region more than a random map does "
                     f"(energy inside the region {energy['value']:.2f}, 95% CI {energy['low']:.2f}-{energy['high']:.2f}, "
                     f"vs {energy_rand['value']:.2f} for random maps). It may be right for the wrong reason "
                     f"(a shortcut such as a marker, text or border); review the gallery before trusting it.")
    if sanity and not sanity.get("passed", True):
        flags.append(sanity["message"])
    if not len(pos):
        flags.append("No positive image with an expert region among the explained images: agreement not measured.")
    elif scope == "all positives":
        flags.append("Fewer than two true positives: agreement is scored over all positive images.")
    return {"method": method, "layer": layer, "grid": list(grid), "n_images": int(len(table)),
            "n_positive_with_roi": int(len(positives)), "n_scored": int(len(pos)), "scope": scope,
            "threshold": float(threshold), "auc": float(auc), "agreement": agreement,
            "faithfulness": faith, "sanity": sanity, "rationale_ok": rationale_ok,
            "shortcut_suspected": bool(len(pos) and not rationale_ok and auc >= 0.75), "flags": flags,
            "roi": ex.roi, "map_threshold": ex.threshold, "top_percent": ex.top_percent, "margin": ex.margin}


def agreement_comparison(run_a: str | Path, run_b: str | Path) -> dict:
    """Compare two explained runs by rationale: agreement of each and a paired Wilcoxon test.

    Uses the positive test images both runs explained (``run/explain/agreement.parquet``),
    pairing per-image energy pointing.

    Returns
    -------
    dict
        ``shared_test_set`` (bool), ``n_pairs``, ``mean_a``, ``mean_b``,
        ``median_difference`` (a - b), ``statistic``, ``p_value`` (None when untestable),
        ``energy_a``/``energy_b`` summaries from each run and a one-line ``message``.
    """
    tables, summaries = [], []
    for r in (Path(run_a), Path(run_b)):
        t = _need(r / OUT / "agreement.parquet", f"run `medlens explain {r}` first")
        tab = pd.read_parquet(t)
        tables.append(tab[(tab["part"] == "test") & (tab["label"] == 1)])
        summaries.append(json.loads((r / OUT / "summary.json").read_text()) if (r / OUT / "summary.json").is_file() else {})
    res = agr.paired_energy_test(tables[0], tables[1], column="energy")
    res["shared_test_set"] = bool(res["n_pairs"] > 0)
    res["energy_a"] = summaries[0].get("agreement", {}).get("energy")
    res["energy_b"] = summaries[1].get("agreement", {}).get("energy")
    if not res["shared_test_set"]:
        res["message"] = "the two runs share no explained positive test image; no paired test"
    elif res["p_value"] is None:
        res["message"] = f"{res['n_pairs']} shared images, no difference in energy pointing to test"
    else:
        res["message"] = (f"energy pointing {res['mean_a']:.3f} vs {res['mean_b']:.3f} on {res['n_pairs']} shared "
                          f"positive test images (Wilcoxon p = {res['p_value']:.3g})")
    return res
