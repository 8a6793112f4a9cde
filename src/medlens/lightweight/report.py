"""Report section of a confirmatory run: the Pareto front, the chosen model against the largest, the test result.

:func:`write_lightweight_section` reads only ``run/lightweight/candidates.csv``,
``run/lightweight/choice.json`` (copied there by ``medlens tune --objective requirement,latency``)
and ``run/metrics.json``, and writes ``run/sections/lightweight/`` once the confirmatory study is
evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from medlens.lightweight.decide import confirmation
from medlens.sections import format_ci, write_section

TITLE = "Lightest model that meets the requirement"


def front_figure(table: pd.DataFrame, choice: dict):
    """Validation CI lower bound against batch-1 latency; the front joined, the requirement dashed, the choice ringed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    need = choice["requirement"]["at_least"]
    for q, marker in (("fp32", "o"), ("int8", "s")):
        g = table[table["precision"] == q]
        ax.scatter(g["latency_ms"], g["low"], marker=marker, s=22, alpha=0.6, label=q)
    front = table[table["front"].astype(bool)].sort_values("latency_ms")
    ax.plot(front["latency_ms"], front["low"], color="C3", lw=1, label="Pareto front")
    ax.axhline(need, color="grey", ls="--", lw=0.8, label=f"requirement {need:.3g}")
    c = choice.get("chosen")
    if c is not None:
        ax.scatter([c["latency_ms"]], [c["low"]], s=160, facecolors="none", edgecolors="k", lw=1.5,
                   label=f"chosen: {c['backbone']} {c['image_size']} px {c['precision']}")
    ax.set(xscale="log", xlabel="CPU latency, batch 1, 1 thread (ms)",
           ylabel=f"validation {choice['requirement']['metric']}: 95% CI lower bound")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _row(c: dict, metric: str) -> dict:
    """A candidate as a table row; ``metric`` names the validation column."""
    return {"model": f"{c['backbone']} {c['image_size']} px {c['precision']}",
            f"validation {metric} (95% CI)": format_ci(c["value"], c["low"], c["high"]),
            "meets it on validation": "yes" if c["met"] else "no", "latency p50 (ms)": round(c["latency_ms"], 3),
            "parameters": f"{c['params'] / 1e6:.2f} M", "file (MiB)": round(c["size_bytes"] / 2**20, 2)}


def write_lightweight_section(run: Path) -> Path | None:
    """Write the "Lightest model that meets the requirement" section (``run/sections/lightweight/``).

    Returns the written ``section.json``, or None when the run is not a tune choice (or not yet evaluated).
    """
    run = Path(run)
    path, csv = run / "lightweight" / "choice.json", run / "lightweight" / "candidates.csv"
    if not (path.is_file() and csv.is_file() and (run / "metrics.json").is_file()):
        return None
    choice, table = json.loads(path.read_text()), pd.read_csv(csv)
    metrics = json.loads((run / "metrics.json").read_text())
    req, c, big = choice["requirement"], choice["chosen"], choice["largest"]
    metric = "AUC" if req["metric"] == "auc" else req["metric"]
    v = choice["validation"]
    summary = (f"Requirement: {req['text']}, judged by the lower bound of the 95% CI on the {v['n_images']} validation "
               f"images ({v['n_patients']} patients) of fold 0. {choice['candidates']} candidates (backbone × image "
               f"size × fp32/int8) were trained on fold 0 and timed side by side with ONNX Runtime at batch 1 on one "
               f"CPU thread. ")
    flags = []
    if c is None:
        return write_section(run, "lightweight", title=TITLE, summary=summary + "No candidate met it.",
                             flags=["No candidate meets the requirement on validation."])
    summary += (f"The fastest that meets it is {c['backbone']} at {c['image_size']} px in {c['precision']} "
                f"(validation {metric} {c['value']:.3f}, 95% CI {c['low']:.3f}–{c['high']:.3f}): "
                f"{c['latency_ms']:.2f} ms and {c['params'] / 1e6:.2f} M parameters, against {big['latency_ms']:.2f} ms "
                f"and {big['params'] / 1e6:.2f} M for the largest candidate, {big['backbone']} at {big['image_size']} px "
                f"({big['latency_ms'] / c['latency_ms']:.1f}× the latency, {big['params'] / c['params']:.1f}× the "
                "parameters). This study then trained it on every fold, and the test set was scored once, after the "
                "choice. ")
    for part in ("test", "external"):
        r = confirmation(metrics, req, part)
        if r is None:
            continue
        where = "the internal test set" if part == "test" else "the external site"
        at = f" (specificity {r['specificity']:.3f})" if "specificity" in r else ""
        if r["holds"]:
            summary += (f"On {where} {metric} is {r['value']:.3f}{at}, 95% CI {r['low']:.3f}–{r['high']:.3f}: the "
                        f"requirement holds" + (", and so does the CI's lower bound. " if r["ci_holds"] else
                                                ", though the CI's lower bound is below it. "))
        else:
            summary += (f"On {where} {metric} is {r['value']:.3f}{at}, 95% CI {r['low']:.3f}–{r['high']:.3f}: the "
                        f"requirement does not hold ({r['why']}). ")
            flags.append(f"The requirement ({req['text']}) does not hold on {where}: {r['why']}.")
    front = table[table["front"].astype(bool)].sort_values("latency_ms")
    return write_section(
        run, "lightweight", title=TITLE, summary=summary.strip(), flags=flags,
        figures={"pareto_front": front_figure(table, choice)},
        tables={"chosen vs largest": [_row(c, metric) | {"role": "chosen"}, _row(big, metric) | {"role": "largest"}],
                "Pareto front (validation)": [_row(r, metric) for r in front.to_dict("records")]})
