"""Trust the data and the model: uncertainty, OOD gate, label issues, annotator reliability, relabel queue."""

from medlens.trust.labels import class_label_quality, label_issues, label_quality, rank_label_issues
from medlens.trust.ood import EnsembleDetector, MahalanobisDetector, fit_mahalanobis, load_ood_detector
from medlens.trust.selective import risk_coverage
from medlens.trust.uncertainty import decompose, energy_score, entropy, max_softmax

__all__ = ["EnsembleDetector", "MahalanobisDetector", "class_label_quality", "decompose", "energy_score", "entropy",
           "fit_mahalanobis", "label_issues", "label_quality", "load_ood_detector", "max_softmax",
           "rank_label_issues", "risk_coverage", "trust_stage", "report_section"]


def __getattr__(name: str):
    if name == "trust_stage":
        from medlens.trust.stage import trust_stage

        return trust_stage
    if name == "report_section":
        from medlens.trust.report import report_section

        return report_section
    raise AttributeError(name)
