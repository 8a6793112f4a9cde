"""Clinical evaluation: metrics with confidence intervals, comparisons, calibration.

Functions take ``(y_true, y_score)`` or ``(y_true, y_pred)`` like scikit-learn. Intervals
are :class:`Estimate` records: DeLong for AUC, Wilson for proportions, and a seeded,
stratified (patient-level with ``groups=``) percentile bootstrap for the rest.
"""

from medlens.evaluate.calibration import (
    ReliabilityCurve,
    apply_platt,
    apply_temperature,
    brier_score_loss,
    expected_calibration_error,
    fit_platt,
    fit_temperature,
    reliability_curve,
)
from medlens.evaluate.ci import BootstrapWarning, Estimate, bootstrap_ci, bootstrap_distribution, wilson_ci
from medlens.evaluate.delong import (
    RocTest,
    delong_ci,
    delong_covariance,
    delong_test,
    delong_unpaired_test,
    delong_variance,
    mcnemar_test,
)
from medlens.evaluate.metrics import (
    UndefinedMetricWarning,
    accuracy_score,
    auc_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    npv_score,
    ppv_score,
    sensitivity_score,
    specificity_score,
    youden_j_score,
)
from medlens.evaluate.summary import (
    BINARY_METRICS,
    binary_summary,
    compare_binary,
    external_difference,
    multiclass_summary,
)
from medlens.evaluate.threshold import RocCoordinates, choose_threshold, roc_coordinates

__all__ = [
    "BINARY_METRICS",
    "BootstrapWarning",
    "Estimate",
    "ReliabilityCurve",
    "RocCoordinates",
    "RocTest",
    "UndefinedMetricWarning",
    "accuracy_score",
    "apply_platt",
    "apply_temperature",
    "auc_score",
    "average_precision_score",
    "balanced_accuracy_score",
    "binary_summary",
    "bootstrap_ci",
    "bootstrap_distribution",
    "brier_score_loss",
    "choose_threshold",
    "compare_binary",
    "confusion_matrix",
    "delong_ci",
    "delong_covariance",
    "delong_test",
    "delong_unpaired_test",
    "delong_variance",
    "expected_calibration_error",
    "external_difference",
    "f1_score",
    "fit_platt",
    "fit_temperature",
    "mcnemar_test",
    "multiclass_summary",
    "npv_score",
    "ppv_score",
    "reliability_curve",
    "roc_coordinates",
    "sensitivity_score",
    "specificity_score",
    "wilson_ci",
    "youden_j_score",
]
