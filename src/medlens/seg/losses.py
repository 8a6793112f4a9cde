"""Losses: Dice + BCE/focal for tiny foregrounds, severity, and multi-task weighting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medlens.seg.models import SEVERITY_LEVELS

__all__ = ["MultiTaskLoss", "ordinal_targets", "segmentation_loss", "severity_from_output", "severity_loss"]


def segmentation_loss(kind: str) -> nn.Module:
    """Dice + BCE (``dice_bce``), Dice + focal (``dice_focal``) or BCE alone (``bce``) on sigmoid logits.

    BCE alone keeps probabilities graded (Dice pushes them to 0 or 1), which is what a
    pixel AUC and a threshold chosen on validation need for thin structures such as vessels.

    Dice is computed over the whole batch (``batch=True``): with lesions covering well
    under 1% of an image and many lesion-free images, a per-image Dice is dominated by
    empty masks, whereas the batch Dice weighs every lesion pixel equally.
    """
    from monai.losses import DiceCELoss, DiceFocalLoss

    if kind == "bce":
        return nn.BCEWithLogitsLoss()
    if kind == "dice_bce":
        return DiceCELoss(sigmoid=True, batch=True)
    return DiceFocalLoss(sigmoid=True, batch=True, gamma=2.0)


def ordinal_targets(grade: torch.Tensor) -> torch.Tensor:
    """Cumulative targets ``[grade > 0, grade > 1, ...]`` (CORAL), shape ``(N, levels-1)``."""
    ks = torch.arange(SEVERITY_LEVELS - 1, device=grade.device, dtype=grade.dtype)
    return (grade[:, None] > ks[None]).float()


def severity_loss(output: torch.Tensor, grade: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 on the grade (regression, 1-D output) or BCE on cumulative logits (ordinal)."""
    if output.ndim == 1:
        return F.smooth_l1_loss(output, grade.float())
    return F.binary_cross_entropy_with_logits(output, ordinal_targets(grade.float()))


def severity_from_output(output: torch.Tensor) -> torch.Tensor:
    """Predicted grade (float): clipped regression, or the expected count of passed thresholds."""
    if output.ndim == 1:
        return output.clamp(0, SEVERITY_LEVELS - 1)
    return torch.sigmoid(output).sum(1)


class MultiTaskLoss(nn.Module):
    """Weighted sum of task losses, fixed or learned (homoscedastic uncertainty).

    With ``uncertainty=True`` each task ``i`` has a learned ``s_i = log σ_i²`` and the total
    is ``Σ w_i (exp(-s_i) L_i + s_i) / 2`` (Kendall, Gal & Cipolla, CVPR 2018), with the
    fixed weights ``w_i`` switching tasks on or off.
    """

    def __init__(self, weights: dict[str, float], *, uncertainty: bool = False) -> None:
        super().__init__()
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.uncertainty = uncertainty
        self.log_vars = nn.ParameterDict({k: nn.Parameter(torch.zeros(())) for k in self.weights}) if uncertainty else None

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(())
        for k, w in self.weights.items():
            if k not in losses:
                continue
            if self.log_vars is not None:
                s = self.log_vars[k]
                total = total + w * 0.5 * (torch.exp(-s) * losses[k] + s)
            else:
                total = total + w * losses[k]
        return total
