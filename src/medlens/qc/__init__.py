"""Image quality gate: exposure, contrast, blur, field of view, near-duplicates -> pass/fail + reasons."""

from medlens._lazy import lazy_exports

_WHERE = {name: "checks" for name in ("REGISTRY", "QCCheck", "blur_effect", "dhash", "field_of_view", "list_checks",
                                      "phash", "register")} | {"run_qc": "core"}
__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
