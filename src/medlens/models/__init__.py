"""Model factory over timm; pretrained weights only from a local file."""

from medlens.models.factory import create_model

__all__ = ["create_model"]
