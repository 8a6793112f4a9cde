"""Fold models, their calibration and the calibrated ensemble (see :mod:`medlens.inference`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medlens.config import StudyConfig
from medlens.data.arrays import MEAN, STD
from medlens.errors import StageInputMissing


def fold_count(run: Path) -> int:
    """Number of trained folds in a run directory (``fold_k/model.safetensors``, k = 0, 1, …)."""
    k = 0
    while (Path(run) / f"fold_{k}" / "model.safetensors").is_file():
        k += 1
    if k == 0:
        raise StageInputMissing(f"{run}: no fold_0/model.safetensors; train the study first with `medlens run CONFIG`")
    return k


def load_fold_model(run: Path, cfg: StudyConfig, k: int) -> torch.nn.Module:
    """Rebuild fold ``k``'s network from ``cfg.model`` and load ``fold_k/model.safetensors`` (eval mode)."""
    path = Path(run) / f"fold_{k}" / "model.safetensors"
    if not path.is_file():
        raise StageInputMissing(f"{path} not found; train the study first with `medlens run CONFIG`")
    return load_weights(path, cfg.model.name, in_chans=cfg.model.in_chans, image_size=cfg.train.image_size)


def load_weights(path: Path, model_name: str, *, in_chans: int, image_size: int) -> torch.nn.Module:
    """Rebuild the network ``model_name`` and load the weights file ``path`` into it (eval mode).

    Parameters
    ----------
    path : path
        A ``model.safetensors`` written by training (or its copy in an export folder).
    model_name : str
        The timm name it was trained as (``model.name``).
    in_chans, image_size : int
        ``model.in_chans`` and ``train.image_size`` of the study.

    The number of classes is read from the head's weight in the file.
    """
    from safetensors.torch import load_file

    from medlens.models import create_model

    state = load_file(str(path))
    with torch.device("meta"):  # no weight initialisation: every tensor comes from the file
        model = create_model(model_name, num_classes=2, in_chans=in_chans, image_size=image_size)
        head_weight = f"{model.pretrained_cfg.get('classifier', 'fc')}.weight"
        n_classes = int(state[head_weight].shape[0]) if head_weight in state else 2
        if n_classes != 2:
            model = create_model(model_name, num_classes=n_classes, in_chans=in_chans, image_size=image_size)
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise StageInputMissing(f"{path} lacks {len(missing)} tensor(s) of {model_name} (e.g. {sorted(missing)[0]}); "
                                "was it trained with another model.name?")
    model.load_state_dict(state, assign=True)
    return model.eval()


def load_calibration(run: Path, k: int) -> dict:
    """Fold ``k``'s calibration parameters (``fold_k/calibration.json``, written by evaluate)."""
    path = Path(run) / f"fold_{k}" / "calibration.json"
    if not path.is_file():
        raise StageInputMissing(f"{path} not found; the evaluate stage writes it (`medlens run CONFIG`)")
    return json.loads(path.read_text())


def calibration_matrix(params: dict, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, c)`` with calibrated logits ``z @ W + c`` for :func:`medlens.evaluate.calibration.fit_calibration` output."""
    eye = torch.eye(n_classes, dtype=torch.float32)
    if params["method"] == "none":
        return eye, torch.zeros(n_classes)
    if params["method"] == "temperature":
        return eye / float(params["temperature"]), torch.zeros(n_classes)
    if params["method"] == "bias_temperature":
        return eye / float(params["temperature"]), torch.tensor(params["bias"], dtype=torch.float32)
    a, b = float(params["a"]), float(params["b"])
    return torch.tensor([[0.0, -a], [0.0, a]]), torch.tensor([0.0, b])


class Ensemble(torch.nn.Module):
    """The calibrated fold models as one graph: a [0, 1] image in; probabilities, member probabilities, features out.

    Parameters
    ----------
    members : list of timm classifiers
        Evaluated in ``eval()`` mode; each must offer ``forward_features``/``forward_head``.
    calibrations : list of dict, optional
        One per member (``fold_k/calibration.json``); default: none.
    folds : list of int, optional
        The fold index of each member (default 0, 1, …).

    Notes
    -----
    ``forward(image)`` takes float ``N×C×S×S`` in [0, 1] (the output of
    :class:`medlens.data.preprocess.Preprocess`) and returns ``(probabilities (N, K),
    member probabilities (N, F, K), features (N, F·D))``; it is what ONNX exports.
    """

    def __init__(self, members: list[torch.nn.Module], calibrations: list[dict] | None = None,
                 folds: list[int] | None = None) -> None:
        super().__init__()
        if not members:
            raise StageInputMissing("an ensemble needs at least one fold model")
        self.members = torch.nn.ModuleList(members).eval()
        self.folds = list(folds) if folds is not None else list(range(len(members)))
        k = int(members[0].get_classifier().out_features)
        cal = calibrations or [{"method": "none"}] * len(members)
        mats = [calibration_matrix(c, k) for c in cal]
        self.calibrations = list(cal)
        self.register_buffer("cal_w", torch.stack([w for w, _ in mats]))
        self.register_buffer("cal_c", torch.stack([c for _, c in mats]))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (image - MEAN) / STD
        probs, feats = [], []
        for i, m in enumerate(self.members):
            f = m.forward_head(m.forward_features(x), pre_logits=True)
            z = m.get_classifier()(f)
            probs.append(F.softmax(z @ self.cal_w[i] + self.cal_c[i], dim=1))
            feats.append(torch.flatten(f, 1))
        member = torch.stack(probs, dim=1)
        return member.mean(dim=1), member, torch.cat(feats, dim=1)

    @torch.no_grad()
    def run(self, images: torch.Tensor, *, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`forward` on a uint8 (or [0, 1] float) tensor in batches, as float64 numpy arrays."""
        outs = [[], [], []]
        for i in range(0, len(images), batch_size):
            b = images[i:i + batch_size]
            b = b.float() / 255.0 if b.dtype == torch.uint8 else b.float()
            for o, t in zip(outs, self(b)):
                o.append(t.double())
        return tuple(torch.cat(o).numpy() for o in outs)

    def predict(self, images: torch.Tensor, *, members: list[int] | None = None) -> np.ndarray:
        """Calibrated probabilities ``(N, K)``: the mean over all members, or over the member positions given."""
        _, member, _ = self.run(images)
        return member.mean(1) if members is None else member[:, members].mean(1)


def operating_threshold(run: Path) -> float | None:
    """The run's default operating threshold (``operating_point.json``), or None when evaluate has not run."""
    path = Path(run) / "operating_point.json"
    if path.is_file():
        op = json.loads(path.read_text())
        if op.get("threshold") is not None:
            return float(op["threshold"])
    return None


def load_ensemble(run: Path, cfg: StudyConfig, *, folds: list[int] | None = None) -> Ensemble:
    """The run's calibrated fold ensemble (every trained fold, or ``folds``)."""
    folds = list(range(fold_count(run))) if folds is None else list(folds)
    return Ensemble([load_fold_model(run, cfg, k) for k in folds], [load_calibration(run, k) for k in folds], folds)
