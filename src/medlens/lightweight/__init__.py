"""The smallest model that meets the clinician's requirement.

``medlens tune CONFIG --objective requirement,latency`` trains candidate networks
(backbone × image size) on fold 0, scores each in fp32 and int8 through ONNX Runtime on
fold 0's validation patients against the config's ``requirement`` (judged by the lower
bound of its 95% CI), measures batch-1 CPU latency, parameters and file size, and keeps
the Pareto front. The chosen model is the fastest one whose validation lower bound meets
the requirement; only then is it trained as the full study and evaluated, once, on the
test and external sets.
"""

from __future__ import annotations

from medlens._lazy import lazy_exports

_WHERE = {
    "requirement_estimate": "decide", "pareto_front": "decide", "choose": "decide",
    "Space": "search", "search": "search", "chosen_config": "search", "write_lightweight_section": "report",
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
