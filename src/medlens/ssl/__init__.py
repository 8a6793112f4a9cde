"""Self-supervised pretraining on unlabeled images and label-efficiency probing.

``medlens pretrain CONFIG`` trains encoders with SimCLR, MICLe (positive pairs from two
images of the same patient), a masked autoencoder or the rotation proxy on unlabeled
images (never the study's test or external images) and writes
``run/ssl/<method>/encoder.safetensors``, which ``model.pretrained`` loads. ``medlens probe
CONFIG`` draws label-efficiency curves (linear probe or fine-tuning) against random
initialisation and reports how many labels pretraining saves.
"""

from __future__ import annotations

_WHERE = {
    "MAE": "methods", "micle_partners": "methods", "nt_xent": "methods",
    "random_views": "methods", "pretrain": "pretraining", "Encoder": "probing",
    "find_encoders": "probing", "labels_saved": "probing", "probe": "probing", "sample_patients": "probing",
    "write_ssl_section": "report", "pixel_similarity": "pairs", "feature_similarity": "pairs",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"medlens.ssl.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'medlens.ssl' has no attribute {name!r}")
