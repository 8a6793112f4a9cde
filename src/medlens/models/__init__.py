"""Model factory over timm; pretrained weights only from a local file."""

from medlens.models.factory import BACKBONES, check_pretrained, create_model, load_weights, num_outputs

__all__ = ["BACKBONES", "check_pretrained", "create_model", "load_weights", "num_outputs"]
