"""The study report: one self-contained HTML file a clinician can read (images inline, no CDN)."""

from medlens.report.html import write_report

__all__ = ["write_report"]
