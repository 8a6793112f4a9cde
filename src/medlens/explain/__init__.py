"""Explainability that can be checked: CAM maps, agreement with the expert, faithfulness, sanity.

- the maps themselves come from the inference core (:mod:`medlens.inference.cam`, target layer in
  :mod:`medlens.inference.layers`), which the service uses too;
- :mod:`~medlens.explain.agreement` — pointing game, energy pointing, IoU/Dice, rank
  correlation against the expert ROI, random-map baseline, CIs, paired Wilcoxon test;
- :mod:`~medlens.explain.faithfulness` — deletion / insertion curves, ROAD;
- :mod:`~medlens.explain.sanity` — cascading model-parameter randomisation;
- :mod:`~medlens.explain.stage` — ``explain_stage(run, cfg)`` writing ``run/explain/``,
  ``agreement_comparison(run_a, run_b)``;
- :mod:`~medlens.explain.report` — ``write_explain_section(run)``, the report's section (the stage writes it).
"""

from __future__ import annotations

__all__ = ["agreement_comparison", "explain_stage", "write_explain_section"]


def __getattr__(name: str):
    if name in __all__:
        from importlib import import_module

        module = "report" if name == "write_explain_section" else "stage"
        return getattr(import_module(f"medlens.explain.{module}"), name)
    raise AttributeError(f"module 'medlens.explain' has no attribute {name!r}")
