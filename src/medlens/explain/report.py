"""The explainability section of ``report.html``: gallery, agreement table with CIs, flags.

:func:`write_explain_section` writes it (``run/sections/explain/``) at the end of the explain stage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from medlens.explain.agreement import SCORES
from medlens.sections import format_ci, write_section

OUT = "explain"
"""The explain stage's folder in the run directory."""

_NAMES = {"pointing": "Pointing game (map maximum inside the expert box)",
          "energy": "Energy pointing (share of the map inside the expert box)",
          "iou": "IoU (top map region vs expert box)", "dice": "Dice (top map region vs expert box)",
          "rank_corr": "Rank correlation with the (blurred) lesion mask"}


def safe_name(sample_id: str) -> str:
    """A sample id as a file name (the stem of its overlay, ``run/explain/overlays/<stem>.png``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sample_id)


def _fmt(e: dict | None) -> str:
    return format_ci(e, undefined="–")


def agreement_rows(summary: dict) -> list[dict]:
    """Table rows: score, model (95 % CI), random-map baseline (95 % CI)."""
    a = summary["agreement"]
    rows = [{"score": _NAMES[k], "model": _fmt(a[k]["model"]), "random map": _fmt(a[k].get("random"))}
            for k in (*SCORES, "rank_corr") if k in a]
    return rows


def faithfulness_rows(summary: dict) -> list[dict]:
    """Table rows of deletion / insertion AUC and ROAD, model vs random map."""
    f = summary.get("faithfulness") or {}
    if not f.get("deletion_auc"):
        return []
    rows = [{"score": "Deletion AUC (lower = more faithful)", "model": _fmt(f["deletion_auc"]),
             "random map": _fmt(f.get("deletion_auc_random"))},
            {"score": "Insertion AUC (higher = more faithful)", "model": _fmt(f["insertion_auc"]),
             "random map": _fmt(f.get("insertion_auc_random"))}]
    if f.get("road"):
        rows.append({"score": "ROAD, (LeRF − MoRF)/2 (higher = more faithful)", "model": _fmt(f["road"]), "random map": "–"})
    return rows


def gallery_figure(run: Path, table: pd.DataFrame, threshold: float, *, per_cell: int = 4) -> Figure:
    """Overlays of true/false positives/negatives (rows), up to ``per_cell`` each, expert box in green."""
    import matplotlib.image as mpimg

    pred = table["score"] >= threshold
    y = table["label"] == 1
    cells = {"true positive": y & pred, "false negative": y & ~pred, "false positive": ~y & pred,
             "true negative": ~y & ~pred}
    fig = Figure(figsize=(1.6 * per_cell, 1.75 * len(cells)))
    axes = fig.subplots(len(cells), per_cell, squeeze=False)
    for r, (name, sel) in enumerate(cells.items()):
        picks = table[sel].sort_values("score", ascending=name in ("false negative", "true negative")).head(per_cell)
        for c in range(per_cell):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if c < len(picks):
                row = picks.iloc[c]
                ax.imshow(mpimg.imread(run / OUT / "overlays" / f"{safe_name(row['sample_id'])}.png"))
                e = row.get("energy")
                ax.set_title(f"p={row['score']:.2f}" + (f"  E={e:.2f}" if pd.notna(e) else ""), fontsize=7)
    fig.tight_layout()
    return fig


def sanity_figure(steps: pd.DataFrame, limit: float) -> Figure:
    """Rank correlation and SSIM between trained and randomised maps along the cascade."""
    fig = Figure(figsize=(6, 2.6))
    ax = fig.subplots()
    ax.plot(steps["step"], steps["rank_correlation"], "o-", label="rank correlation")
    ax.plot(steps["step"], steps["ssim"], "s--", label="SSIM")
    ax.axhline(limit, color="grey", lw=0.8, ls=":")
    ax.set_xticks(steps["step"], steps["randomised"], rotation=60, fontsize=6, ha="right")
    ax.set_ylabel("similarity to trained maps", fontsize=8)
    ax.set_xlabel("blocks randomised (cumulative, output first)", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def faithfulness_text(f: dict | None) -> str:
    """A sentence for the report: does the map's pixel order beat a random order on the deletion and
    insertion curves, judged by the 95% CIs (empty when faithfulness was not scored).

    Parameters
    ----------
    f : dict or None
        ``summary.json``'s ``faithfulness``: ``deletion_auc``, ``insertion_auc`` and their
        ``*_random`` twins, each ``{value, low, high}``.
    """
    if not f or not f.get("deletion_auc"):
        return ""
    out = []
    for curve, claim, lower_is_better in (
            ("deletion", "removing the pixels the map ranks first lowers the score faster than a random order", True),
            ("insertion", "revealing them first raises it faster", False)):
        m, r = f[f"{curve}_auc"], f[f"{curve}_auc_random"]
        beats = m["high"] < r["low"] if lower_is_better else m["low"] > r["high"]
        loses = m["low"] > r["high"] if lower_is_better else m["high"] < r["low"]
        verdict = "shown" if beats else "the opposite holds" if loses else "not shown, the intervals overlap"
        out.append(f"{claim} ({curve} AUC {m['value']:.2f}, 95% CI {m['low']:.2f}–{m['high']:.2f}, vs "
                   f"{r['value']:.2f} for random maps): {verdict}")
    return " Faithfulness: " + "; ".join(out) + "."


def write_explain_section(run: str | Path) -> Path | None:
    """Write the report's explainability section (``run/sections/explain/``) from ``run/explain/``.

    Returns
    -------
    Path or None
        The written ``section.json`` (None if the explain stage has not run): ``title``,
        ``summary`` (one plain-language paragraph), ``flags`` (warnings to show prominently),
        figures ``gallery`` and ``sanity``, tables ``agreement``, ``faithfulness`` and ``sanity``.
    """
    run = Path(run)
    path = run / OUT / "summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    table = pd.read_parquet(run / OUT / "agreement.parquet")
    figures = {"gallery": gallery_figure(run, table, s.get("threshold", 0.5))}
    sanity_rows = []
    if (run / OUT / "sanity.csv").is_file():
        steps = pd.read_csv(run / OUT / "sanity.csv")
        figures["sanity"] = sanity_figure(steps, s["sanity"].get("max_rank_correlation", 0.5))
        sanity_rows = steps.round(3).to_dict("records")
    maps = (f"Heat maps ({s['method']}, layer {s['layer']}, {s['grid'][0]}×{s['grid'][1]} cells"
            f"{', explaining ' + s['explained'] if 'explained' in s else ''}) of {s['n_images']} test images")
    if s["n_scored"]:
        e, er = s["agreement"]["energy"]["model"], s["agreement"]["energy"]["random"]
        verdict = ("points at the expert's region clearly more than a random map"
                   if s["rationale_ok"] else "does NOT point at the expert's region more than a random map")
        agreement = (f"{maps} were compared with the expert's region on the {s['n_scored']} {s['scope']} (of "
                     f"{s['n_positive_with_roi']} positive images). On average {e['value']:.0%} of the map lies inside "
                     f"the expert box (95% CI {e['low']:.0%}–{e['high']:.0%}) against {er['value']:.0%} for random "
                     f"maps of the same smoothness: the model {verdict}.")
    else:
        agreement = (f"{maps} were drawn, but no positive image has an expert region, so whether the model looks "
                     "where the expert looks was not measured.")
    sanity_txt = (" " + s["sanity"]["message"] + ".") if s.get("sanity") else ""
    summary = f"{agreement}{sanity_txt}{faithfulness_text(s.get('faithfulness'))}"
    return write_section(run, "explain", title="Explainability: does the model look where the expert looks?",
                         summary=summary, flags=s["flags"], figures=figures,
                         tables={"agreement": agreement_rows(s), "faithfulness": faithfulness_rows(s),
                                 "sanity": sanity_rows})
