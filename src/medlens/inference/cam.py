"""THE CAM: heat maps in batches, over pytorch-grad-cam, with a fixed output contract.

The explain stage scores these maps against the expert's region and the service overlays
them (``POST /v1/predict?cam=true``): both take the model and layer from
:func:`explained_member` and the method and class from the run's ``explain`` section, so
the map a clinician is shown is the map the report scored. The export ships that member
(:func:`save_explained_member`: its weights and the resolved layer, method and class rule)
and the service loads it from the export folder alone (:func:`load_explained_member`).

:func:`explain_images` turns a uint8 image tensor ``N×C×S×S`` into float32 maps
``N×S×S`` in [0, 1] (one per image, min-max scaled as pytorch-grad-cam does). Hooks live
in a :class:`CamExplainer` context manager that always releases them and never swallows
an exception (pytorch-grad-cam's own ``__exit__`` prints and suppresses ``IndexError``).

Methods (``METHODS``): ``gradcam``, ``gradcam++``, ``scorecam``, ``eigencam``,
``layercam``, ``hirescam``, ``xgradcam``. Several target layers (a layer-wise CAM) are
averaged after each is scaled to [0, 1].
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from rich.progress import Progress

from medlens.data.arrays import normalise
from medlens.config import StudyConfig
from medlens.errors import ConfigError, DataError, MedlensError, did_you_mean
from medlens.inference.core import fold_count, load_fold_model, load_weights
from medlens.inference.layers import CamTarget, resolve_target

METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
}
"""Method name -> pytorch-grad-cam class."""
CAM_WEIGHTS = "cam.safetensors"
"""The explained fold model's weights in an export folder (``export.json``'s ``cam`` says how to use them)."""


def method_class(method: str) -> type:
    """The pytorch-grad-cam class of ``method``; an unknown name lists the valid ones."""
    if method not in METHODS:
        raise ConfigError(f"explain.method: unknown CAM method '{method}'.{did_you_mean(method, list(METHODS))} "
                          f"Valid: {', '.join(METHODS)}")
    return METHODS[method]


class CamExplainer:
    """A CAM object bound to a model and target layer(s); use it as a context manager.

    Parameters
    ----------
    model : torch.nn.Module
    targets : CamTarget or sequence of CamTarget
        Several layers give a layer-wise CAM (mean of the per-layer maps). All must share
        the same reshape (all CNN maps, or all token layers of one ViT).
    method : str, default="gradcam"

    Examples
    --------
    >>> with CamExplainer(model, target) as cam:  # doctest: +SKIP
    ...     maps = cam(x_uint8, target_class=1)
    """

    def __init__(self, model: torch.nn.Module, targets: CamTarget | Sequence[CamTarget], *, method: str = "gradcam") -> None:
        cls = method_class(method)
        targets = [targets] if isinstance(targets, CamTarget) else list(targets)
        if not targets:
            raise ConfigError("explain: no target layer given")
        reshapes = {type(t.reshape) for t in targets}
        if len(reshapes) > 1:
            raise ConfigError(f"explain: target layers {[t.name for t in targets]} mix token and spatial outputs")
        self.method = method
        self.targets = targets
        self.model = model
        self._cam = cls(model=model, target_layers=[t.module for t in targets], reshape_transform=targets[0].reshape)

    def __enter__(self) -> "CamExplainer":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.release()
        return False

    def release(self) -> None:
        """Remove the forward/backward hooks (idempotent)."""
        self._cam.activations_and_grads.release()

    def __call__(self, images: torch.Tensor, *, target_class: int | np.ndarray | None = 1) -> np.ndarray:
        """Maps for one batch of uint8 images ``B×C×S×S``: float32 ``B×S×S`` in [0, 1].

        ``target_class``: one class for all, one per image ``(B,)``, or None for each
        image's predicted class.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise MedlensError(f"explain: images must be a uint8 tensor B×C×H×W, got {images.dtype} {tuple(images.shape)}")
        x = normalise(images)
        targets = None if target_class is None else [
            ClassifierOutputTarget(int(c)) for c in np.broadcast_to(np.asarray(target_class), (len(x),))]
        try:
            maps = self._cam(input_tensor=x, targets=targets)
        except IndexError as err:  # pytorch-grad-cam raises this for a class index the head lacks
            raise ConfigError(f"explain: target class {target_class} is not an output of this model ({err})") from None
        finally:
            self.model.zero_grad(set_to_none=True)
        maps = np.nan_to_num(np.asarray(maps, np.float32), nan=0.0)
        return np.clip(maps, 0.0, 1.0)


def explain_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: CamTarget | Sequence[CamTarget],
    *,
    method: str = "gradcam",
    target_class: int | np.ndarray | None = 1,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """CAM maps for every image, computed in batches.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier; it is put in eval mode.
    images : uint8 tensor of shape (N, C, S, S)
        As from :func:`medlens.data.arrays.load_tensor`.
    targets : CamTarget or sequence of CamTarget
        From :func:`medlens.inference.layers.resolve_target`.
    method : str, default="gradcam"
        One of :data:`METHODS`.
    target_class : int, ndarray of shape (N,) or None, default=1
        The logit explained (1 = the positive class of a binary task), per image
        (:func:`explained_classes`), or None for each image's predicted class.
    batch_size : int, default=32
    progress : rich Progress, optional
        Adds a task advancing per image.

    Returns
    -------
    ndarray of shape (N, S, S), float32 in [0, 1]
    """
    if batch_size < 1:
        raise ConfigError(f"explain.batch_size must be >= 1, got {batch_size}")
    model.eval()
    out = np.empty((len(images), images.shape[2], images.shape[3]), np.float32)
    task = progress.add_task(f"explain ({method})", total=len(images)) if progress is not None else None
    with CamExplainer(model, targets, method=method) as cam:
        for i in range(0, len(images), batch_size):
            tc = target_class[i:i + batch_size] if isinstance(target_class, np.ndarray) else target_class
            out[i:i + batch_size] = cam(images[i:i + batch_size], target_class=tc)
            if task is not None:
                progress.advance(task, len(images[i:i + batch_size]))
    if task is not None:
        progress.remove_task(task)
    return out


def explained_member(run: Path, cfg: StudyConfig) -> tuple[torch.nn.Module, CamTarget]:
    """The fold model and target layer whose maps the run explains (the explain stage and the service alike).

    Parameters
    ----------
    run : path
        A trained run directory.
    cfg : StudyConfig
        The config that trained the run (``run/config.yaml``): the network, the training
        size and ``explain.fold`` / ``explain.target_layer`` / ``explain.min_grid``.

    Raises
    ------
    DataError
        ``explain.fold`` is not a trained fold of the run.
    """
    ex, n = cfg.explain, fold_count(run)
    if not 0 <= ex.fold < n:
        raise DataError(f"explain.fold: fold {ex.fold} is not trained in {run} (folds 0-{n - 1})")
    model = load_fold_model(run, cfg, ex.fold)
    return model, resolve_target(model, size=cfg.train.image_size, in_chans=cfg.model.in_chans, layer=ex.target_layer,
                                 min_grid=ex.min_grid)


def save_explained_member(run: Path, cfg: StudyConfig, folder: Path) -> dict:
    """Ship the explained member to an export folder: its weights (:data:`CAM_WEIGHTS`) and how to explain with them.

    Parameters
    ----------
    run : path
        A trained run directory.
    cfg : StudyConfig
        The config that trained the run (see :func:`explained_member`).
    folder : path
        The export folder.

    Returns
    -------
    dict
        ``export.json``'s ``cam`` entry for :func:`load_explained_member`: ``weights``,
        ``model_name``, ``in_chans``, ``image_size``, ``fold``, ``layer`` (the target layer
        :func:`explained_member` resolved), ``method`` and ``target_class`` (the
        ``explain.target_class`` rule of :func:`explained_classes`).
    """
    ex = cfg.explain
    _, target = explained_member(run, cfg)
    shutil.copyfile(Path(run) / f"fold_{ex.fold}" / "model.safetensors", Path(folder) / CAM_WEIGHTS)
    return {"weights": CAM_WEIGHTS, "model_name": cfg.model.name, "in_chans": cfg.model.in_chans,
            "image_size": cfg.train.image_size, "fold": ex.fold, "layer": target.name, "method": ex.method,
            "target_class": ex.target_class}


def load_explained_member(folder: Path, cam: dict) -> tuple[torch.nn.Module, CamTarget]:
    """The model and target layer shipped by :func:`save_explained_member`, from the export folder alone.

    Parameters
    ----------
    folder : path
        The export folder.
    cam : dict
        Its ``export.json``'s ``cam`` entry.
    """
    model = load_weights(Path(folder) / cam["weights"], cam["model_name"], in_chans=cam["in_chans"],
                         image_size=cam["image_size"])
    return model, resolve_target(model, size=cam["image_size"], in_chans=cam["in_chans"], layer=cam["layer"])


def explained_classes(target_class: int | str | None, proba: np.ndarray) -> np.ndarray:
    """The class each image's map explains, ``(N,)`` int: the one rule of the explain stage and the service.

    Parameters
    ----------
    target_class : int, 'auto' or None
        ``explain.target_class``: one class for every image; None, each image's predicted
        class; 'auto', class 1 (the positive class) of a binary study and the predicted class
        of a multi-class one.
    proba : ndarray of shape (N, K)
        The probabilities the study reports for these images (the calibrated ensemble, or
        for a validation image the fold model that held it out): "predicted" is their
        arg-max, so a map explains the label a clinician is shown, not one member's guess.
    """
    proba = np.asarray(proba)
    if isinstance(target_class, int):
        return np.full(len(proba), target_class, int)
    if target_class == "auto" and proba.shape[1] == 2:
        return np.ones(len(proba), int)
    return proba.argmax(1).astype(int)
