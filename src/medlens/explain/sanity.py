"""Sanity check for saliency methods (Adebayo et al., NeurIPS 2018): cascading randomisation.

The weights of the network are re-initialised block by block, from the output layer
towards the input, and the maps recomputed after each step. A method whose maps stay
the same while the model it claims to explain is destroyed shows image structure (edges),
not the model's reasoning. We report, per step, the median Spearman rank correlation and
the median SSIM between the original and the randomised maps, and flag the method when
the fully randomised model's maps still correlate at or above ``max_rank_correlation``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from medlens.explain.agreement import rank_correlation_score
from medlens.inference.cam import explain_images
from medlens.inference.layers import CamTarget


def ssim_score(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0) -> float:
    """Structural similarity of two ``H×W`` maps (Gaussian window, sigma 1.5; Wang et al. 2004)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (0, 0), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def cascade_blocks(model: torch.nn.Module) -> list[str]:
    """Names of the parameterised blocks from the output towards the input.

    Top-level children in reverse order; a ``Sequential``/``ModuleList`` child (ResNet
    stages, ViT ``blocks``) is split into its items. Parameters owned directly by the
    model (ViT ``cls_token``, ``pos_embed``) form a last step, ``(embeddings)``.
    """
    names: list[str] = []
    for name, child in model.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, (torch.nn.Sequential, torch.nn.ModuleList)) and len(child) > 1:
            names.extend(f"{name}.{sub}" for sub, c in child.named_children() if any(True for _ in c.parameters()))
        else:
            names.append(name)
    names.reverse()
    if any(True for _ in model.parameters(recurse=False)):
        names.append("(embeddings)")
    return names


def randomise_block(model: torch.nn.Module, name: str, *, generator_seed: int = 0) -> None:
    """Re-initialise every parameter of one block in place (``reset_parameters`` where a module has it)."""
    torch.manual_seed(generator_seed)
    if name == "(embeddings)":
        for p in model.parameters(recurse=False):
            torch.nn.init.normal_(p, std=0.02)
        return
    block = model.get_submodule(name)
    with torch.no_grad():
        for mod in block.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
            elif hasattr(mod, "reset_running_stats"):
                mod.reset_running_stats()
            for p in mod.parameters(recurse=False):
                if not hasattr(mod, "reset_parameters"):
                    torch.nn.init.normal_(p, std=0.02)


def cascading_randomisation(
    model: torch.nn.Module,
    images: torch.Tensor,
    target: CamTarget | Sequence[CamTarget],
    *,
    method: str = "gradcam",
    target_class: int | np.ndarray = 1,
    seed: int = 0,
    max_rank_correlation: float = 0.5,
    reference: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Run the cascading model-parameter randomisation test.

    Parameters
    ----------
    model : torch.nn.Module
        Left untouched: a deep copy is randomised.
    images : uint8 tensor of shape (N, C, S, S)
        A few images (8-32 are enough).
    target : CamTarget or sequence
        Target layer(s) of ``model``; the same layer names are used in the copy.
    method : str, default="gradcam"
    target_class : int or ndarray of shape (N,), default=1
        One class for all images, or each image's explained class.
    seed : int, default=0
    max_rank_correlation : float, default=0.5
        The method passes when the fully randomised maps correlate below this (median).
    reference : ndarray of shape (N, S, S), optional
        Maps of the trained model if already computed.

    Returns
    -------
    steps : DataFrame
        One row per cascade step: ``step``, ``randomised`` (block name, cumulative),
        ``rank_correlation``, ``ssim`` (medians over images).
    verdict : dict
        ``passed`` (bool), ``final_rank_correlation``, ``final_ssim``, ``method``, ``message``.
    """
    targets = [target] if isinstance(target, CamTarget) else list(target)
    if reference is None:
        reference = explain_images(model, images, targets, method=method, target_class=target_class)
    rand = copy.deepcopy(model)
    rand.eval()
    rows = []
    for k, name in enumerate(cascade_blocks(rand)):
        randomise_block(rand, name, generator_seed=seed + k)
        layer_targets = [CamTarget(t.name, rand.get_submodule(t.name), t.reshape, t.grid) for t in targets]
        maps = explain_images(rand, images, layer_targets, method=method, target_class=target_class)
        rc = [rank_correlation_score(a, b) for a, b in zip(reference, maps)]
        ss = [ssim_score(a, b) for a, b in zip(reference, maps)]
        rows.append({"step": k + 1, "randomised": name, "rank_correlation": float(np.median(rc)),
                     "ssim": float(np.median(ss))})
    steps = pd.DataFrame(rows, columns=["step", "randomised", "rank_correlation", "ssim"])
    return steps, sanity_verdict(steps, method, max_rank_correlation=max_rank_correlation)


def sanity_verdict(steps: pd.DataFrame, method: str, *, max_rank_correlation: float = 0.5) -> dict:
    """Pass/fail of a cascade: the fully randomised model's maps must correlate below the limit."""
    final_rc = float(steps["rank_correlation"].iloc[-1]) if len(steps) else float("nan")
    final_ss = float(steps["ssim"].iloc[-1]) if len(steps) else float("nan")
    passed = bool(final_rc < max_rank_correlation)
    msg = (f"{method}: maps change when the model's weights are randomised (median rank correlation {final_rc:.2f} "
           f"< {max_rank_correlation})" if passed else
           f"{method} FAILS the randomisation sanity check: maps of a fully randomised model still correlate "
           f"{final_rc:.2f} (>= {max_rank_correlation}) with the trained model's; they show image structure, not the model")
    return {"passed": passed, "final_rank_correlation": final_rc, "final_ssim": final_ss, "method": method,
            "max_rank_correlation": max_rank_correlation, "message": msg}
