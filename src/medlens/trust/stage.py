"""``trust_stage``: the trust audit of a finished k-fold run, written to ``run/trust/``.

Inputs: ``manifest.parquet``, ``splits.json``, ``predictions.parquet`` (pooled, from the
evaluate stage) and ``fold_k/model.safetensors``. Outputs:

- ``uncertainty.parquet``: per image (val, test, external and phantom OOD rows): mean
  probabilities, max softmax, entropy, MC-dropout aleatoric/epistemic parts, ensemble
  epistemic part, energy, Mahalanobis score (1.0 = the gate's threshold) and OOD flag. A
  validation row is scored by the one fold model that did not train on it; held-out rows
  by every fold model.
- ``ood.safetensors`` + ``ood.json``: the OOD gate (:func:`medlens.inference.ood.load_detectors`).
- ``label_issues.csv``: out-of-fold label issues, worst first; ``class_quality.csv``.
- ``annotators.csv``: agreement, kappas and CROWDLAB quality per annotator.
- ``relabel_queue.csv``: the ``budget`` images most worth relabeling.
- ``risk_coverage.csv``; ``summary.json`` with the headline figures.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from medlens.config import StudyConfig
from medlens.data.arrays import MEAN, STD
from medlens.data.manifest import load_manifest
from medlens.data.splits import load_splits
from medlens.errors import StageInputMissing
from medlens.evaluate.study import proba_columns
from medlens.trust import annotators as ann
from medlens.inference import calibration_matrix, fold_count, load_calibration, load_fold_model, operating_threshold
from medlens.inference.ood import fit_fold_detectors, gate_ids, gate_meta, save_detectors
from medlens.trust.features import features_and_logits, load_images, mc_dropout_proba
from medlens.trust.labels import class_label_quality, label_issues, label_quality
from medlens.trust.report import TRUST_DIR, write_trust_section
from medlens.trust.selective import decision_margin, risk_coverage
from medlens.trust.uncertainty import decompose, energy_score, entropy

log = logging.getLogger(__name__)
REFERRAL_SCORE = "decision_margin"
"""The default referral order: cases whose calibrated probability is nearest the operating threshold go first."""


def _require(run: Path) -> None:
    for name in ("manifest.parquet", "splits.json", "predictions.parquet"):
        if not (run / name).is_file():
            raise StageInputMissing(f"{run / name} not found; run the study first with `medlens run CONFIG`")


def _score_folds(run: Path, cfg: StudyConfig, manifest: pd.DataFrame, gate: list, rows: pd.DataFrame, keep: np.ndarray):
    """Per fold: features/logits/MC samples of every row, and the OOD detectors fitted on ``gate`` (:func:`gate_ids`).

    Each fold's features of the rows in ``keep`` (a boolean mask) are returned under ``features``.
    """
    t = cfg.trust
    by_id = manifest.set_index("sample_id")
    ids = rows["sample_id"].tolist()
    pos = {s: i for i, s in enumerate(ids)}
    images = load_images(by_id.loc[ids].reset_index(), cfg)
    labels = pd.to_numeric(by_id.loc[ids, "label"], errors="coerce").fillna(-1).to_numpy(int)  # -1: OOD rows
    per_fold, detectors = [], []
    for k in range(fold_count(run)):
        model = load_fold_model(run, cfg, k)
        feats, logits = features_and_logits(model, images)
        fit_ids, threshold_ids = gate[k]
        det = fit_fold_detectors(feats, labels, [[pos[s] for s in fit_ids]], [[pos[s] for s in threshold_ids]],
                                 t.ood_pass_rate)[0]
        detectors.append(det)
        w, c = calibration_matrix(load_calibration(run, k), logits.shape[1])
        mc = mc_dropout_proba(model, feats, p=t.mc_dropout_p or cfg.model.drop_rate or 0.3, samples=t.mc_samples,
                              seed=cfg.seed * 1000 + k, calibration=(w, c))
        z = torch.from_numpy(logits) @ w + c
        per_fold.append({"logits": logits, "mc": mc, "maha": det.score(feats) / det.threshold,
                         "proba": torch.softmax(z.double(), 1).numpy(), "n_features": feats.shape[1],
                         "features": feats[keep]})
    return per_fold, detectors


def _new_site(run: Path, cfg: StudyConfig, rows: pd.DataFrame, preds: pd.DataFrame, manifest: pd.DataFrame,
              per_fold: list[dict], detectors: list) -> dict:
    """:func:`medlens.trust.new_site.new_site_draws` on the external site; the draws go to ``new_site_draws.csv``."""
    from medlens.trust.new_site import new_site_draws

    ev, op = cfg.evaluate, json.loads((run / "operating_point.json").read_text())
    is_site = (rows["part"] == "external").to_numpy()
    site = rows[is_site][["sample_id"]].merge(preds[preds["part"] == "external"][["sample_id", "label", "p1"]],
                                              on="sample_id", how="left")
    site["patient_id"] = manifest.set_index("sample_id").loc[site["sample_id"], "patient_id"].to_numpy()
    target = ev.target_specificity if ev.new_site_rule == "specificity" else ev.target_sensitivity
    res = new_site_draws(site.rename(columns={"p1": "score"}), [f["features"][is_site] for f in per_fold],
                         [f["features"][~is_site] for f in per_fold] if (~is_site).any() else None, detectors,
                         internal_threshold=op["threshold"], fraction=ev.local_fraction, rule=ev.new_site_rule,
                         target=target, pass_rate=cfg.trust.ood_pass_rate, n_draws=cfg.trust.new_site_draws,
                         seed=cfg.seed)
    res.pop("draws").to_csv(run / TRUST_DIR / "new_site_draws.csv", index=False)
    res["internal_transfers"] = op.get("transfers", {}).get("external")
    return res


def _aggregate(rows: pd.DataFrame, splits: dict, per_fold: list[dict]) -> pd.DataFrame:
    """One row per image from the fold models that did not train on it."""
    n, k = len(rows), len(per_fold)
    eligible = np.ones((n, k), bool)
    val_of = {s: f for f, fold in enumerate(splits["folds"]) for s in fold["val"]}
    for i, (sid, part) in enumerate(zip(rows["sample_id"], rows["part"])):
        if part == "val":
            eligible[i] = False
            eligible[i, val_of[sid]] = True
    w = eligible / eligible.sum(1, keepdims=True)
    proba = sum(w[:, f, None] * per_fold[f]["proba"] for f in range(k))
    out = rows[["sample_id", "part", "label"]].copy().reset_index(drop=True)
    for c in range(proba.shape[1]):
        out[f"p{c}"] = proba[:, c]
    out["msp"] = proba.max(1)
    out["entropy"] = entropy(proba)
    mc = [decompose(per_fold[f]["mc"]) for f in range(k)]
    out["mc_aleatoric"] = sum(w[:, f] * mc[f]["aleatoric"] for f in range(k))
    out["mc_epistemic"] = sum(w[:, f] * mc[f]["epistemic"] for f in range(k))
    # all MC passes of all eligible fold models as one sample set: its mutual information
    # holds both the dropout and the between-model (deep-ensemble) disagreement
    out["epistemic"] = np.maximum(entropy(sum(w[:, f, None] * mc[f]["mean"] for f in range(k))) - out["mc_aleatoric"], 0)
    ens = decompose(np.stack([per_fold[f]["proba"] for f in range(k)]))["epistemic"] if k > 1 else np.full(n, np.nan)
    out["ensemble_epistemic"] = np.where(eligible.sum(1) > 1, ens, np.nan)
    out["energy"] = sum(w[:, f] * energy_score(per_fold[f]["logits"]) for f in range(k))
    out["mahalanobis"] = sum(w[:, f] * per_fold[f]["maha"] for f in range(k))
    out["ood_flag"] = out["mahalanobis"] > 1.0
    return out


def _ood_metrics(unc: pd.DataFrame) -> dict:
    """Gate pass rates per part, and AUROC of each score for phantom OOD vs in-distribution test images."""
    res: dict = {"pass_rate": {p: float((~g["ood_flag"]).mean()) for p, g in unc.groupby("part")}}
    ood, ind = unc[unc["part"] == "ood"], unc[unc["part"] == "test"]
    if len(ood) and len(ind):
        both = pd.concat([ind, ood])
        y = (both["part"] == "ood").to_numpy(int)
        scores = {"mahalanobis": both["mahalanobis"], "energy": both["energy"], "msp": -both["msp"],
                  "mc_epistemic": both["mc_epistemic"], "ensemble_epistemic": both["ensemble_epistemic"],
                  "epistemic": both["epistemic"]}
        res["auroc_ood_vs_test"] = {name: float(roc_auc_score(y, s)) for name, s in scores.items() if s.notna().all()}
    return res


def _annotators(manifest: pd.DataFrame, oof: pd.DataFrame, proba: np.ndarray, cfg: StudyConfig):
    """Annotator table, per-annotator label issues, ActiveLab scores (None when fewer than 2 annotators)."""
    cols = ann.annotator_columns(manifest, cfg.trust.annotators)
    if len(cols) < 2:
        return None, None, None
    labelled = manifest[manifest[cols].notna().any(axis=1)]
    table = ann.annotator_agreement(labelled[cols], expert=cfg.trust.expert)
    a_oof = manifest.set_index("sample_id").loc[oof["sample_id"], cols].reset_index(drop=True)
    quality, images = ann.crowdlab(a_oof, proba)
    table = table.merge(quality, on="column", how="left")
    table["label_issues_oof"] = [int(label_issues(a_oof[c].dropna().astype(int).to_numpy(),
                                                  proba[a_oof[c].notna().to_numpy()]).sum()) for c in cols]
    table["fleiss_kappa_all"] = ann.fleiss_kappa(labelled[cols])
    table = table.sort_values("crowdlab_quality", kind="stable").reset_index(drop=True)
    return table, images, ann.active_label_scores(a_oof, proba)


def _rank_pct(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).rank(pct=True, method="average").to_numpy()


def trust_stage(run: Path, cfg: StudyConfig, *, budget: int | None = None) -> dict:
    """Run the trust audit on a finished run and write ``run/trust/``; returns the summary dict.

    Parameters
    ----------
    run : path
        The run directory (``medlens run`` output).
    cfg : StudyConfig
        The study config (``cfg.trust`` holds the audit settings).
    budget : int, optional
        Rows of the relabel queue; default ``cfg.trust.relabel_budget``.
    """
    t0 = time.perf_counter()
    run = Path(run)
    _require(run)
    out = run / TRUST_DIR
    out.mkdir(parents=True, exist_ok=True)
    budget = budget or cfg.trust.relabel_budget
    manifest, splits = load_manifest(run / "manifest.parquet"), load_splits(run / "splits.json")
    preds = pd.read_parquet(run / "predictions.parquet")
    pcols = proba_columns(preds)
    rows = preds[["sample_id", "part", "label"]].copy()
    gate = gate_ids(splits, list(range(len(splits["folds"]))), cfg.trust.ood_fit_images, seed=cfg.seed)
    spare = sorted({s for fit, thr in gate for s in fit + thr} - set(rows["sample_id"]))
    train_only = pd.DataFrame({"sample_id": spare, "part": "train", "label": pd.NA})
    if "is_ood" in manifest.columns:
        ood_rows = manifest.loc[manifest["is_ood"].astype(bool), ["sample_id"]].assign(part="ood", label=pd.NA)
        rows = pd.concat([rows, ood_rows], ignore_index=True)
    all_rows = pd.concat([rows, train_only], ignore_index=True)
    site_rows = all_rows["part"].isin(["external", "ood"]).to_numpy()  # the new-site procedure's images
    per_fold, detectors = _score_folds(run, cfg, manifest, gate, all_rows, site_rows)
    for f in per_fold:  # drop the train-only rows (used to fit the detectors)
        for key in ("logits", "maha", "proba"):
            f[key] = f[key][:len(rows)]
        f["mc"] = f["mc"][:, :len(rows)]
    unc = _aggregate(rows, splits, per_fold)
    unc.to_parquet(out / "uncertainty.parquet", index=False)
    save_detectors(out, detectors, {
        "model_name": cfg.model.name, "image_size": cfg.train.image_size, "in_chans": cfg.model.in_chans,
        "normalise": {"mean": MEAN, "std": STD, "input": "uint8/255 then (x - mean) / std"},
        **gate_meta(cfg.trust.ood_fit_images, cfg.trust.ood_pass_rate,
                    "model.forward_head(model.forward_features(x), pre_logits=True)")})
    summary: dict = {"ood": _ood_metrics(unc), "n_folds": len(per_fold)}
    (out / "new_site_draws.csv").unlink(missing_ok=True)  # never leave the draws of an earlier audit
    if len(pcols) == 2 and (rows["part"] == "external").any():
        summary["new_site"] = _new_site(run, cfg, all_rows[site_rows], preds, manifest, per_fold, detectors)

    # label issues on the out-of-fold validation predictions
    oof = preds[preds["part"] == "val"].reset_index(drop=True)
    proba = oof[pcols].to_numpy(float)
    proba = proba / proba.sum(1, keepdims=True)
    y = oof["label"].to_numpy(int)
    by_id = manifest.set_index("sample_id")
    issues = pd.DataFrame({"sample_id": oof["sample_id"], "image": by_id.loc[oof["sample_id"], "image"].to_numpy(),
                           "given_label": y, "suggested_label": proba.argmax(1), "confidence": proba.max(1),
                           "label_quality": label_quality(y, proba), "is_label_issue": label_issues(y, proba)})
    issues = issues.merge(unc[["sample_id", "mc_epistemic"]], on="sample_id", how="left")
    table, images, active = _annotators(manifest, oof, proba, cfg)
    (out / "annotators.csv").unlink(missing_ok=True)  # never leave a stale table from an earlier audit
    if table is not None:
        for c in ann.annotator_columns(manifest, cfg.trust.annotators):
            issues[c] = by_id.loc[oof["sample_id"], c].to_numpy()
        issues["consensus_label"] = images["consensus_label"].to_numpy()
        issues["consensus_quality"] = images["consensus_quality"].to_numpy()
        issues["activelab_score"] = active
        table.to_csv(out / "annotators.csv", index=False)
        worst = table.iloc[0]
        summary["annotators"] = {"least_reliable": str(worst["annotator"]), "ranking": table["annotator"].tolist(),
                                 "fleiss_kappa": float(table["fleiss_kappa_all"].iloc[0])}
    # the queue is for wrong labels: ordered by how strongly the calibrated out-of-fold model disputes the given
    # label. Mixing in model uncertainty (hard but correctly labelled cases) filled the demo's queue of 50 with
    # 47 correct labels; ActiveLab's order found 6 of the 8 wrong labels against 8 of 8 for label quality.
    issues["relabel_priority"] = 1 - _rank_pct(issues["label_quality"].to_numpy())
    issues = issues.sort_values("label_quality", kind="stable").reset_index(drop=True)
    issues.insert(0, "rank", np.arange(1, len(issues) + 1))
    issues.to_csv(out / "label_issues.csv", index=False)
    names = [str(c) for c in range(proba.shape[1])]
    cq = class_label_quality(y, proba, class_names=names)
    cq.to_csv(out / "class_quality.csv", index=False)
    queue = issues.sort_values("relabel_priority", ascending=False, kind="stable").head(budget)
    queue.drop(columns="rank").to_csv(out / "relabel_queue.csv", index=False)
    summary["label_issues"] = {"n_checked": int(len(issues)), "n_issues": int(issues["is_label_issue"].sum()),
                               "worst_class": str(cq["class"].iloc[0]), "relabel_budget": int(budget),
                               "oof_accuracy": float((proba.argmax(1) == y).mean())}

    # selective prediction: accuracy at the study's operating point on the cases the model keeps
    threshold = operating_threshold(run) if len(pcols) == 2 else None
    frames = []
    for part, g in unc[unc["part"].isin(["val", "test", "external"])].groupby("part"):
        p = g[pcols].to_numpy(float)
        yy = g["label"].to_numpy(int)
        for by, conf in ((REFERRAL_SCORE, decision_margin(p, threshold)), ("epistemic", -g["epistemic"].to_numpy()),
                         ("max_softmax", g["msp"].to_numpy())):
            frames.append(risk_coverage(yy, p, conf, threshold=threshold).assign(part=part, ordered_by=by))
    rc = pd.concat(frames, ignore_index=True)
    rc.to_csv(out / "risk_coverage.csv", index=False)
    if "label_true" in manifest.columns and manifest["label_true"].notna().any():  # the phantom knows the truth
        truth = manifest.set_index("sample_id")["label_true"]
        summary["selective_label_true"] = {}
        for part, g in unc[unc["part"] == "test"].groupby("part"):
            p, yt = g[pcols].to_numpy(float), truth.loc[g["sample_id"]].to_numpy(int)
            t = risk_coverage(yt, p, decision_margin(p, threshold), threshold=threshold, coverages=(0.8, 1.0))
            summary["selective_label_true"][f"{part}/{REFERRAL_SCORE}"] = {
                "accuracy_all": float(t["accuracy"].iloc[1]), "accuracy_80": float(t["accuracy"].iloc[0])}
    summary["referral_score"] = REFERRAL_SCORE
    summary["operating_threshold"] = threshold
    summary["selective"] = {
        f"{part}/{by}": {"accuracy_all": float(g.loc[np.isclose(g["coverage"], 1.0), "accuracy"].iloc[0]),
                         "accuracy_80": float(g.loc[np.isclose(g["coverage"], 0.8), "accuracy"].iloc[0]),
                         "n_all": int(g.loc[np.isclose(g["coverage"], 1.0), "n"].iloc[0]),
                         "n_80": int(g.loc[np.isclose(g["coverage"], 0.8), "n"].iloc[0])}
        for (part, by), g in rc.groupby(["part", "ordered_by"])}
    summary["uncertainty"] = {part: {c: float(g[c].mean()) for c in ("mc_epistemic", "mc_aleatoric", "epistemic",
                                                                      "ensemble_epistemic", "mahalanobis")}
                              for part, g in unc.groupby("part")}
    gated = unc[unc["part"] != "val"]  # validation images set the gate's threshold
    summary["uncertainty_vs_gate"] = {
        "flagged_n": int(gated["ood_flag"].sum()), "passed_n": int((~gated["ood_flag"]).sum()),
        **{f"{side}_{c}": float(gated.loc[gated["ood_flag"] == (side == "flagged"), c].mean())
           for side in ("flagged", "passed") for c in ("mc_epistemic", "epistemic")}}
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=float))
    log.info("trust audit: %d images scored, %d label issues, in %.1f s", len(unc), summary["label_issues"]["n_issues"],
             summary["seconds"])
    write_trust_section(run)  # the report's section: run/sections/trust/
    return summary
