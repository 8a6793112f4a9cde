"""The report's self-supervised section: label-efficiency curves and the labels-saved figure.

:func:`write_ssl_section` writes it (``run/sections/ssl/``) at the end of every probe.
"""

from __future__ import annotations

import json
from pathlib import Path

from medlens.sections import write_section


def curve_figure(summary: dict):
    """AUC against the share of labeled training patients, one line per encoder (log x axis)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for i, (enc, points) in enumerate(summary["curves"].items()):
        f = [p["fraction"] for p in points]
        auc = [p["auc"] for p in points]
        sd = [p["sd"] or 0.0 for p in points]
        ax.errorbar(f, auc, yerr=sd, marker="o", capsize=3, color=f"C{i}", ls="--" if enc.startswith("random") else "-",
                    label=enc)
    ref = summary.get("supervised") or summary["reference"]
    if ref["auc"] is not None:
        ax.axhline(ref["auc"], color="grey", lw=0.8, ls=":", label=f"{ref['encoder']}, {ref['fraction']:.0%} labels")
    ax.set(xscale="log", xlabel="share of labeled training patients", ylabel="test AUC",
           title=f"label efficiency ({summary['mode']} probe, mean ± SD over {summary['draws']} draws)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_ssl_section(run: Path) -> Path | None:
    """Write the report's self-supervised section (``run/sections/ssl/``) from ``run/ssl/probe.json``.

    Returns the written ``section.json``, or None when ``run/ssl/probe.json`` is absent.
    """
    path = Path(run) / "ssl" / "probe.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    rows = []
    for enc, points in s["curves"].items():
        for p in points:
            rows.append({"encoder": enc, "labeled share": f"{p['fraction']:.0%}", "patients": round(p["patients"]),
                         "test AUC (mean)": round(p["auc"], 3), "SD over draws": None if p["sd"] is None else round(p["sd"], 3),
                         "95% CI (mean DeLong bounds)": f"{p['low']:.3f}–{p['high']:.3f}"})
    ref = s["reference"]
    saved = [f"{enc}: {v:.0%}" if v is not None else f"{enc}: never reaches it"
             for enc, v in s["labels_saved"].items()]
    how = {"linear": "fitting a linear classifier on frozen features",
           "finetune": "fine-tuning the whole network",
           "both": "fitting a linear classifier on frozen features and by fine-tuning the whole network"}[s["mode"]]
    summary = (f"Encoders pretrained without labels were compared with a randomly initialised one by {how} on a "
               f"growing share of the {s['pool_patients']} labeled training patients (up to {s['draws']} random draws "
               "per share, the same patients for every encoder) and scoring it on the "
               f"{s['test_images']} held-out test images.")
    if ref["auc"] is not None:
        summary += (f" Random initialisation with {ref['fraction']:.0%} of the labels reaches AUC {ref['auc']:.3f}; "
                    "share of the labels saved before an encoder matches random initialisation of its own "
                    "architecture in the same mode — " + ("; ".join(saved) or "no pretrained encoder") + ".")
    sup = s.get("supervised")
    if sup is not None:
        vs = [f"{enc}: {v:.0%}" if v is not None else f"{enc}: never reaches it"
              for enc, v in s["labels_saved_vs_supervised"].items()]
        summary += (f" The supervised baseline — the same network trained end to end from random initialisation "
                    f"on {sup['fraction']:.0%} of the labels — reaches AUC {sup['auc']:.3f}; labels saved against it: "
                    + ("; ".join(vs) or "no pretrained encoder") + ".")
    tables = {"probe": rows}
    if s.get("versus_supervised"):
        tables["versus supervised"] = [
            {"encoder": c["encoder"], "labeled share": f"{c['fraction']:.0%}", "test AUC (mean)": round(c["auc"], 3),
             f"supervised, {c['supervised_fraction']:.0%} labels": round(c["supervised_auc"], 3),
             "difference": round(c["difference"], 3),
             "DeLong p (largest over draws)": None if c["p_max"] is None else float(f"{c['p_max']:.3g}")}
            for c in s["versus_supervised"]]
    return write_section(run, "ssl", title="Self-supervised pretraining: label efficiency", summary=summary,
                         figures={"label_efficiency": curve_figure(s)}, tables=tables)
