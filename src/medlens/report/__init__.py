"""The study report: one self-contained HTML file a clinician can read (images inline, no CDN).

:func:`write_report` renders ``report.html`` for every task from the run directory's files alone
(``metrics.json`` and the sections the stages wrote, :mod:`medlens.sections`).
"""

from medlens.report.html import INPUTS, write_report

__all__ = ["INPUTS", "write_report"]
