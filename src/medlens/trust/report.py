"""The trust section of ``report.html``, read from ``run/trust/``.

:func:`write_trust_section` writes it (``run/sections/trust/``) at the end of the trust audit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from medlens.sections import write_section

TRUST_DIR = "trust"
"""The trust audit's folder in the run directory."""


def _risk_coverage_figure(rc: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    styles = {"decision_margin": "-", "epistemic": "--", "max_softmax": ":"}
    for (part, by), g in rc.groupby(["part", "ordered_by"]):
        if part == "val":
            continue
        ax.plot(g["coverage"], g["accuracy"], styles.get(by, ":"), marker=".", label=f"{part}, referred by {by.replace('_', ' ')}")
    ax.set_xlabel("coverage (share of cases the model decides)")
    ax.set_ylabel("accuracy on the kept cases")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Risk-coverage: refer the least certain cases", fontsize=9)
    return fig


LABEL_ISSUE_CAUTION = 0.15
"""Above this share of flagged development labels the report says the flags may be the model's own errors."""


def _label_caution(li: dict) -> str:
    """A caution when confident learning flags an implausible share of the labels (a weak model's disagreements)."""
    share = li["n_issues"] / max(li["n_checked"], 1)
    if share <= LABEL_ISSUE_CAUTION:
        return ""
    acc = f" (its out-of-fold accuracy is {li['oof_accuracy']:.0%})" if "oof_accuracy" in li else ""
    return (f" Treat these flags with caution: {share:.0%} of the labels is more than label noise usually amounts to, "
            f"and confident learning flags where the model disagrees with the label{acc}, so many flags may be the "
            "model's errors rather than the annotator's. A stronger model makes the audit more specific.")


def _ood_figure(unc: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(5.2, 3.0))
    ax = fig.subplots()
    score = np.log10(unc["mahalanobis"].clip(lower=1e-3))
    bins = np.linspace(score.min(), score.max(), 40)
    for part, g in unc.groupby("part"):
        ax.hist(np.log10(g["mahalanobis"].clip(lower=1e-3)), bins=bins, alpha=0.5, label=f"{part} ({len(g)})")
    ax.axvline(0.0, color="k", lw=1, ls="--", label="gate threshold")
    ax.set_xlabel("log10 Mahalanobis score (1 = threshold)")
    ax.set_ylabel("images")
    ax.legend(fontsize=7)
    ax.set_title("Out-of-distribution gate", fontsize=9)
    return fig


def _annotator_figure(ann: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(5.2, 2.6))
    ax = fig.subplots()
    y = np.arange(len(ann))
    ax.barh(y - 0.2, ann["crowdlab_quality"], 0.4, label="CROWDLAB quality")
    ax.barh(y + 0.2, ann["kappa_consensus"], 0.4, label="Cohen's kappa vs others")
    ax.set_yticks(y, ann["annotator"])
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Annotator reliability", fontsize=9)
    return fig


def _issue_gallery(issues: pd.DataFrame, n: int = 8) -> Figure | None:
    from medlens.data.images import load_image

    top = issues[issues["is_label_issue"]].head(n)
    if top.empty:
        return None
    fig = Figure(figsize=(1.4 * len(top), 1.8))
    axes = np.atleast_1d(fig.subplots(1, len(top)))
    for ax, (_, r) in zip(axes, top.iterrows()):
        try:
            img = load_image(str(r["image"]))
            ax.imshow(img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0], cmap="gray")
        except Exception:  # noqa: BLE001 - a missing image must not break the report
            pass
        ax.set_title(f"#{r['rank']}: {r['given_label']}→{r['suggested_label']}\n({r['confidence']:.2f})", fontsize=7)
        ax.axis("off")
    return fig


def write_trust_section(run: Path) -> Path | None:
    """Write the report's trust section (``run/sections/trust/``) from ``run/trust/``.

    Returns
    -------
    Path or None
        The written ``section.json`` (None when the audit has not run): ``title``, ``summary``
        (one plain-language paragraph), ``flags``, figures (``risk_coverage``, ``ood``, and
        ``annotators``, ``label_issues`` when there are some) and tables (``ood``, ``ood_auroc``,
        ``annotators``, ``label_issues`` (top 10), ``class_quality``, ``selective``).
    """
    out = Path(run) / TRUST_DIR
    if not (out / "summary.json").is_file():
        return None
    s = json.loads((out / "summary.json").read_text())
    unc = pd.read_parquet(out / "uncertainty.parquet")
    issues = pd.read_csv(out / "label_issues.csv")
    rc = pd.read_csv(out / "risk_coverage.csv")
    cq = pd.read_csv(out / "class_quality.csv")
    figures = {"risk_coverage": _risk_coverage_figure(rc), "ood": _ood_figure(unc)}
    tables: dict = {}
    ood = s["ood"]
    tables["ood"] = [{"part": p, "passed_gate": f"{r:.1%}"} for p, r in sorted(ood["pass_rate"].items())]
    for name, auc in sorted(ood.get("auroc_ood_vs_test", {}).items()):
        tables.setdefault("ood_auroc", []).append({"score": name, "AUROC phantom OOD vs test": round(auc, 3)})
    text = []
    if (out / "annotators.csv").is_file():
        ann = pd.read_csv(out / "annotators.csv")
        figures["annotators"] = _annotator_figure(ann)
        cols = ["annotator", "n_labels", "crowdlab_quality", "kappa_consensus", "accuracy_vs_expert", "kappa_vs_expert",
                "label_issues_oof"]
        tables["annotators"] = ann[cols].round(3).to_dict("records")
        text.append(f"Of {len(ann)} annotators, '{s['annotators']['least_reliable']}' is the least reliable "
                    f"(lowest CROWDLAB quality; Fleiss' kappa over all is {s['annotators']['fleiss_kappa']:.2f}).")
    figures["label_issues"] = _issue_gallery(issues)  # None (left out) when no label is flagged
    keep = ["rank", "sample_id", "given_label", "suggested_label", "confidence", "label_quality"]
    tables["label_issues"] = issues.loc[issues["is_label_issue"], keep].head(10).round(3).to_dict("records")
    tables["class_quality"] = cq.round(3).to_dict("records")
    tables["selective"] = [{"set / referred by": k, "accuracy, all cases": round(v["accuracy_all"], 3),
                            "accuracy, 80% most certain": round(v["accuracy_80"], 3)} for k, v in sorted(s["selective"].items())]
    li = s["label_issues"]
    text.insert(0, f"Confident learning on the out-of-fold predictions flags {li['n_issues']} of {li['n_checked']} "
                   f"development labels as probably wrong; class {li['worst_class']} is the least cleanly labelled. "
                   f"relabel_queue.csv lists the {li['relabel_budget']} images most worth a second look."
                   + _label_caution(li))
    pr = ood["pass_rate"]
    gate = (f"The out-of-distribution gate (Mahalanobis distance on the network's features, threshold set so "
            f"{pr.get('val', float('nan')):.0%} of validation images pass) lets {pr.get('test', float('nan')):.0%} of test images through")
    if "external" in pr:
        gate += f" and {pr['external']:.0%} of external-site images"
    if "ood" in pr:
        gate += f"; it stops {1 - pr['ood']:.0%} of images that are not fundus photographs"
    text.append(gate + ".")
    if s.get("new_site", {}).get("n_draws"):
        table, sentence = new_site_text(s["new_site"])
        tables["new_site"] = table
        text.append(sentence)
    by = s.get("referral_score", "epistemic")
    test_sel = s["selective"].get(f"test/{by}")
    if test_sel:
        binary = s.get("operating_threshold") is not None
        margin = ("whose calibrated probability lies nearest the operating threshold" if binary
                  else "whose two most likely classes are closest in calibrated probability")
        what = {"decision_margin": margin,
                "epistemic": "with the highest epistemic uncertainty"}.get(by, f"ordered by {by}")
        rule = "at the operating point" if binary else "of the most likely class"
        text.append(f"Referring the 20% of test cases {what} to a clinician changes accuracy {rule} on "
                    f"the {test_sel['n_80']} kept cases from {test_sel['accuracy_all']:.1%} (all {test_sel['n_all']}) "
                    f"to {test_sel['accuracy_80']:.1%}.")
        truth = s.get("selective_label_true", {}).get(f"test/{by}")
        if truth:
            text.append(f"Against the phantom's true labels (some given test labels are wrong, and no score can refer a "
                        f"confident prediction whose label is wrong) it changes from {truth['accuracy_all']:.1%} to "
                        f"{truth['accuracy_80']:.1%}.")
    return write_section(run, "trust", title="Trust: uncertainty, out-of-distribution gate, label and annotator quality",
                         summary=" ".join(text), flags=uncertainty_flags(s), figures=figures, tables=tables)


def new_site_text(ns: dict) -> tuple[list[dict], str]:
    """The new-site table (median and 5th-95th percentiles over the local draws) and its plain-language verdict."""
    sm = ns["summary"]
    names = {"sensitivity": "sensitivity, local threshold", "specificity": "specificity, local threshold",
             "sensitivity_internal": "sensitivity, internal threshold",
             "specificity_internal": "specificity, internal threshold",
             "gate_pass_before": "OOD gate passes (training gate)", "gate_pass": "OOD gate passes (refitted)",
             "ood_refused": "OOD images refused (refitted gate)"}
    table = [{"on the site's remaining patients": label, "median": round(sm[k]["median"], 3),
              "5th percentile": round(sm[k]["p5"], 3), "95th percentile": round(sm[k]["p95"], 3)}
             for k, label in names.items() if k in sm]
    med = {k: v["median"] for k, v in sm.items()}
    text = (f"A new site, simulated on the external site over {ns['n_draws']} random local acceptance sets of "
            f"{ns['fraction']:.0%} of its patients: the local threshold ({ns['rule']}) gives sensitivity "
            f"{med['sensitivity']:.2f} (5th–95th percentile {sm['sensitivity']['p5']:.2f}–{sm['sensitivity']['p95']:.2f}) "
            f"and specificity {med['specificity']:.2f} ({sm['specificity']['p5']:.2f}–{sm['specificity']['p95']:.2f}) "
            f"on the site's other patients, against {med['sensitivity_internal']:.2f} and "
            f"{med['specificity_internal']:.2f} at the internal threshold. Refitted on the local set, the OOD gate "
            f"passes {med['gate_pass']:.0%} of the site's other images (the training gate: {med['gate_pass_before']:.0%})")
    if "ood_refused" in med:
        text += f" and still refuses {med['ood_refused']:.0%} of the images that are not fundus photographs"
    ok = ns.get("internal_transfers")
    text += ". " + ("The internal threshold holds at this site (a two-sample test of its target metric finds no "
                    "difference from validation): it can be used, with the refitted gate." if ok else
                    "The internal threshold does not hold at this site (a two-sample test finds its target metric "
                    "there different from validation): use the local threshold, with the refitted gate."
                    if ok is not None else "")
    return table, text


def uncertainty_flags(summary: dict) -> list[str]:
    """A warning when MC-dropout uncertainty is not higher on the images the OOD gate stops than on those it passes.

    A network can be confidently wrong far from its training data (saturated logits barely move under
    dropout); then the uncertainty must not be used to catch such images — the gate must.
    """
    g = summary.get("uncertainty_vs_gate")
    if not g or not g["flagged_n"] or not g["passed_n"] or not g["flagged_mc_epistemic"] <= g["passed_mc_epistemic"]:
        return []
    return [f"MC-dropout uncertainty is not higher on the {g['flagged_n']} images the out-of-distribution gate stops "
            f"than on the {g['passed_n']} it lets through (mean mutual information {g['flagged_mc_epistemic']:.4f} vs "
            f"{g['passed_mc_epistemic']:.4f}): this model is confidently wrong away from its training images, so rely "
            "on the gate, not on the uncertainty, to catch them."]
