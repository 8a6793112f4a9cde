"""Trust the data and the model: uncertainty, the OOD audit, label issues, annotator reliability, relabel queue.

The OOD gate itself is :mod:`medlens.inference.ood` (one detector for the audit and the service).
"""

from medlens._lazy import lazy_exports

_WHERE = {
    "class_label_quality": "labels", "label_issues": "labels", "label_quality": "labels", "rank_label_issues": "labels",
    "risk_coverage": "selective", "decompose": "uncertainty", "energy_score": "uncertainty", "entropy": "uncertainty",
    "max_softmax": "uncertainty", "trust_stage": "stage", "write_trust_section": "report",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
