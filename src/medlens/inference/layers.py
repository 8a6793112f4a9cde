"""Which layer a CAM looks at: automatic choice for CNNs and ViTs, with an override.

Users of CAM libraries keep asking which layer to pass and which ``reshape_transform``
a transformer needs. :func:`resolve_target` answers both by probing one dummy forward
pass: it records every module's output shape and picks

- for a **CNN**, the deepest stage (timm's ``feature_info`` modules, or top-level
  children, plus the last map-producing module) whose output is a
  ``B×C×h×w`` map with at least ``min_grid`` (default 7) positions per side — the
  grid of a ResNet's last stage at 224 px, where that is the usual choice; at 64 px the
  last stage is 2×2 and the one before 4×4, too coarse to say *where* the evidence lies
  (on the phantom, energy pointing of a trained ResNet rose from 0.18 at 4×4 to 0.56 at
  8×8, random maps 0.15), so the 8×8 stage is taken;
- for a **ViT** (timm models with ``patch_embed`` and ``num_prefix_tokens``), the first
  norm of the last block (``blocks[-1].norm1``): the last block's *output* patch tokens
  get no gradient when the class token is the pooled feature, its input does. Tokens are
  reshaped to the patch grid after dropping the prefix (class / register) tokens.

An explicit layer name (``"layer4"``, ``"blocks.11.norm1"``) overrides the choice; a
layer whose activation is not spatial is rejected with a message naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from medlens.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class CamTarget:
    """The layer a CAM hooks and how its activations become ``B×C×h×w``.

    Attributes
    ----------
    name : str
        Dotted module path inside the model.
    module : torch.nn.Module
    reshape : callable or None
        Turns token activations ``B×N×C`` into ``B×C×h×w``; None for CNN layers.
    grid : tuple of int
        ``(h, w)`` of the activation map.
    """

    name: str
    module: torch.nn.Module
    reshape: Callable[[torch.Tensor], torch.Tensor] | None
    grid: tuple[int, int]


class TokenReshape:
    """Drop ``prefix`` tokens and lay the rest out on an ``h×w`` grid (``B×N×C -> B×C×h×w``)."""

    def __init__(self, prefix: int, grid: tuple[int, int]) -> None:
        self.prefix = prefix
        self.grid = grid

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        x = tokens[:, self.prefix:, :]
        if x.shape[1] != h * w:
            raise ConfigError(f"explain: expected {h * w} patch tokens after {self.prefix} prefix token(s), "
                              f"got {x.shape[1]}; set explain.target_layer to a token layer of this model")
        return x.reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def _probe(model: torch.nn.Module, size: int, in_chans: int) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output shape) in the order the modules finish their forward pass."""
    order: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m, _inp, out, name=name):
            if isinstance(out, torch.Tensor):
                order.append((name, tuple(out.shape)))

        handles.append(mod.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, size, size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order


def _token_info(model: torch.nn.Module) -> tuple[int, tuple[int, int]] | None:
    pe = getattr(model, "patch_embed", None)
    grid = getattr(pe, "grid_size", None)
    if grid is None or not hasattr(model, "num_prefix_tokens"):
        return None
    return int(model.num_prefix_tokens), (int(grid[0]), int(grid[1]))


def _stage_names(model: torch.nn.Module) -> set[str]:
    """Module names of the feature stages timm declares (``feature_info``), else the top-level children."""
    info = getattr(model, "feature_info", None)
    names = set()
    if isinstance(info, list):
        names = {f["module"] for f in info if isinstance(f, dict) and "module" in f}
    return names or {n for n, _ in model.named_children()}


def resolve_target(model: torch.nn.Module, *, size: int, in_chans: int = 3, layer: str | None = None,
                   min_grid: int = 7) -> CamTarget:
    """Choose (or check) the CAM target layer of ``model`` for ``size``-pixel inputs.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier (timm CNN or ViT).
    size : int
        Input side in pixels (the training size).
    in_chans : int, default=3
    layer : str, optional
        Dotted module path that overrides the automatic choice.
    min_grid : int, default=7
        CNNs: take the deepest map with at least this many positions per side (the last
        4-D map if none has).

    Returns
    -------
    CamTarget

    Raises
    ------
    ConfigError
        Unknown layer name (with the closest names), or a layer whose output is not a
        spatial map or patch-token sequence.
    """
    shapes = _probe(model, size, in_chans)
    by_name = dict(shapes)
    tokens = _token_info(model)
    if layer is not None:
        names = [n for n, _ in model.named_modules() if n]
        if layer not in names:
            raise ConfigError(f"explain.target_layer: no module '{layer}' in this model.{did_you_mean(layer, names)}")
        return _check(model, layer, by_name.get(layer), tokens)
    if tokens is not None:
        blocks = getattr(model, "blocks", None)
        if blocks is not None and len(blocks) and hasattr(blocks[-1], "norm1"):
            return _check(model, f"blocks.{len(blocks) - 1}.norm1", by_name.get(f"blocks.{len(blocks) - 1}.norm1"), tokens)
        n_tok = tokens[0] + tokens[1][0] * tokens[1][1]
        cands = [n for n, s in shapes if len(s) == 3 and s[1] == n_tok]
        if cands:
            return _check(model, cands[-1], by_name[cands[-1]], tokens)
    maps = [(n, s) for n, s in shapes if len(s) == 4 and s[2] >= 2 and s[3] >= 2]
    stages = _stage_names(model)
    if maps and stages:  # stage outputs (timm feature_info) and the last map, never a mid-block module
        maps = [(n, s) for n, s in maps if n in stages or n == maps[-1][0]]
    if not maps:
        raise ConfigError("explain: found no layer with a spatial (B×C×h×w) output in this model; "
                          "set explain.target_layer to a convolutional or token layer")
    fine = [(n, s) for n, s in maps if min(s[2], s[3]) >= min_grid]
    name, _ = (fine or maps)[-1]
    return _check(model, name, by_name[name], tokens)


def _check(model: torch.nn.Module, name: str, shape: tuple[int, ...] | None,
           tokens: tuple[int, tuple[int, int]] | None) -> CamTarget:
    module = model.get_submodule(name)
    if shape is None:
        raise ConfigError(f"explain.target_layer: module '{name}' produced no tensor output in a forward pass")
    if len(shape) == 4 and shape[2] >= 1 and shape[3] >= 1:
        return CamTarget(name, module, None, (shape[2], shape[3]))
    if len(shape) == 3 and tokens is not None:
        prefix, grid = tokens
        if shape[1] == prefix + grid[0] * grid[1]:
            return CamTarget(name, module, TokenReshape(prefix, grid), grid)
    raise ConfigError(f"explain.target_layer: layer '{name}' outputs shape {list(shape)}, not a spatial map "
                      f"(B×C×h×w) or patch tokens; choose a convolutional stage or a transformer block")
