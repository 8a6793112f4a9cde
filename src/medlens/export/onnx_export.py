"""ONNX export of a run's fold models (one fold or the k-fold ensemble) with a parity check.

The exported graph takes ``image``: float32 ``N×C×S×S`` in [0, 1] (the uint8 output of
:class:`medlens.data.preprocess.Preprocess` divided by 255; the contract is in the metadata) and carries the normalisation inside, so
a client only resizes and scales. Outputs:

- ``probabilities`` ``N×K``: calibrated softmax, averaged over the ensemble members
  (:class:`medlens.inference.Ensemble`, the probabilities ``predictions.parquet`` holds);
- ``member_probabilities`` ``N×F×K``: each member's calibrated softmax (uncertainty = their spread);
- ``features`` ``N×D``: penultimate features (``forward_head(..., pre_logits=True)``),
  concatenated over members, for the Mahalanobis OOD gate.

The opset is pinned (:data:`OPSET`) and the legacy TorchScript exporter is used: it is
deterministic, fast and supports opset 17, which Triton's ONNX Runtime backend runs.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medlens.data.arrays import MEAN, STD
from medlens.errors import MedlensError, StageInputMissing
from medlens.inference import Ensemble
from medlens.inference.onnx import INPUT, OUTPUTS, onnx_features, onnx_proba, session
from medlens.inference.ood import EnsembleDetector, fit_fold_detectors, gate_ids, gate_meta, save_detectors

log = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of every medlens export (Triton 23.x+ / ONNX Runtime >= 1.14 run it)."""
PARITY_TOLERANCE = 1e-4


class ParityError(MedlensError):
    """ONNX Runtime and PyTorch disagree on the probabilities by more than the tolerance."""


def export_onnx(ensemble: torch.nn.Module, path: Path, *, image_size: int, in_chans: int, metadata: dict[str, str],
                outputs: tuple[str, ...] = OUTPUTS) -> Path:
    """Write ``ensemble`` as ONNX (dynamic batch axis, opset :data:`OPSET`) with ``metadata``.

    Parameters
    ----------
    ensemble : Ensemble, or any module of one ``image`` input
        (the detector: :class:`medlens.detection.model.Detector`)
    path : path
        Output ``.onnx`` file (parent folders are created).
    image_size, in_chans : int
        Declared input shape ``N×in_chans×image_size×image_size``.
    metadata : dict of str to str
        Stored as ONNX ``metadata_props`` (preprocessing constants, class names …).
    outputs : tuple of str
        Names of the module's outputs, in order.
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(2, in_chans, image_size, image_size)
    axes = {INPUT: {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ensemble.eval(), (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.producer_name = "medlens"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def fit_served_gate(sess, load: Callable[[list[str]], torch.Tensor], labels, splits: dict, folds: list[int], *,
                    n: int, pass_rate: float, seed: int, out: Path,
                    held_out: dict[str, torch.Tensor] | None = None) -> dict:
    """The OOD gate of an exported graph, fitted on its own ``features`` output, in ``out/ood.*``.

    The same detector and the same images as the trust audit
    (:func:`medlens.inference.ood.gate_ids`, :func:`~medlens.inference.ood.fit_fold_detectors`),
    but on the features of the graph that is shipped (fp32 or quantised).

    Parameters
    ----------
    sess : onnxruntime.InferenceSession
        The shipped graph; its ``features`` are the members' features in the order of ``folds``.
    load : callable
        Sample ids -> uint8 ``N×C×S×S`` tensor through the run's preprocessing contract.
    labels : pandas.Series or None
        Class per sample id (class-conditional means); None: one class (detection).
    splits : dict
        ``splits.json``.
    folds : list of int
        The exported members.
    n, pass_rate, seed
        ``trust.ood_fit_images``, ``trust.ood_pass_rate`` and the study seed.
    out : path
        The export folder.
    held_out : dict of str to uint8 tensor, optional
        Held-out images by part (``test``, ``external``): the fraction the gate refuses is
        recorded per part (``flagged``).

    Returns
    -------
    dict
        ``export.json``'s ``ood`` entry (load the gate with :func:`medlens.inference.ood.load_detectors`).
    """
    gate = gate_ids(splits, folds, n, seed=seed)
    ids = sorted({s for fit, thr in gate for s in fit + thr})
    pos = {s: i for i, s in enumerate(ids)}
    y = np.zeros(len(ids), int) if labels is None else labels.loc[ids].to_numpy(int)
    dets = fit_fold_detectors(onnx_features(sess, load(ids)), y, [[pos[s] for s in fit] for fit, _ in gate],
                              [[pos[s] for s in thr] for _, thr in gate], pass_rate)
    meta = gate_meta(n, pass_rate, "the ONNX graph's `features` output")
    save_detectors(out, dets, meta)
    ens = EnsembleDetector(tuple(dets))
    info = {**meta, "threshold": ens.threshold, "member_thresholds": [d.threshold for d in dets],
            "n_fit": [len(fit) for fit, _ in gate], "n_threshold": [len(thr) for _, thr in gate],
            "n_features": int(dets[0].means.shape[1] * len(dets))}
    info["flagged"] = {part: float(ens.is_ood(onnx_features(sess, x)).mean())
                       for part, x in (held_out or {}).items() if x is not None and len(x)}
    return info


def parity_check(ensemble: Ensemble, sess, images: torch.Tensor, *,
                 tolerance: float = PARITY_TOLERANCE, reference: np.ndarray | None = None) -> dict:
    """Compare ONNX Runtime with PyTorch eager on held-out images.

    Parameters
    ----------
    ensemble : medlens.inference.Ensemble
        What was exported.
    sess : onnxruntime.InferenceSession
        The exported graph (:func:`session`).
    images : uint8 tensor of shape (N, C, S, S)
        Prepared from the raw image files by the run's :class:`medlens.data.preprocess.Preprocess`.
    tolerance : float, default=1e-4
        Largest allowed ``max |p_onnx - p_torch|`` (and ``|p_onnx - reference|``).
    reference : ndarray of shape (N, K), optional
        The evaluated probabilities of these images (``predictions.parquet``).

    Returns
    -------
    dict
        ``n_images``, ``max_abs_diff``, ``mean_abs_diff``, ``tolerance``, ``passed`` and,
        with a reference, ``max_abs_diff_vs_predictions``.

    Raises
    ------
    ParityError
        When the largest difference exceeds ``tolerance``.
    """
    p_onnx = onnx_proba(sess, images)
    p_torch = ensemble.run(images)[0]
    diff = np.abs(p_onnx - p_torch)
    out = {"n_images": int(len(images)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
           "tolerance": tolerance, "passed": bool(diff.max() <= tolerance)}
    if reference is not None:
        out["max_abs_diff_vs_predictions"] = float(np.abs(p_onnx - reference).max())
        out["passed"] = out["passed"] and out["max_abs_diff_vs_predictions"] <= tolerance
    if not out["passed"]:
        raise ParityError(f"ONNX parity failed: max |p_onnx - p_torch| = {out['max_abs_diff']:.2e}"
                          f" (vs predictions.parquet {out.get('max_abs_diff_vs_predictions', 0):.2e}) over "
                          f"{out['n_images']} images exceeds {tolerance:.0e}; do not deploy this export")
    return out


def time_calls(calls: dict[str, Callable[[], object]], *, rounds: int = 1, per_round: int = 50,
               warmup: int = 5) -> dict[str, np.ndarray]:
    """Seconds per call of each callable, timed side by side.

    Every callable is warmed up ``warmup`` times, then the callables take turns: each round
    times ``per_round`` calls of each, so drifting machine load affects all alike.

    Returns
    -------
    dict of str to ndarray of shape (rounds * per_round,)
    """
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - t0)
    return {name: np.asarray(t) for name, t in out.items()}


def latency_benchmark(ensemble: Ensemble, onnx_path: Path, image: torch.Tensor, *,
                      iterations: int = 50, threads: int = 1) -> dict:
    """Batch-1 latency (median ms) and throughput (images/s) of ONNX Runtime vs PyTorch eager.

    Both run on ``threads`` CPU threads on the same uint8 image ``1×C×S×S``.
    """
    sess = session(onnx_path, threads=threads)
    feed = {INPUT: image.numpy().astype(np.float32) / 255.0}
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = image.float() / 255.0

        def run_torch() -> None:
            with torch.no_grad():
                ensemble(x)

        samples = time_calls({"onnxruntime": lambda: sess.run(["probabilities"], feed), "torch_eager": run_torch},
                             per_round=iterations)
    finally:
        torch.set_num_threads(old)
    timings: dict = {name: {"p50_ms": float(np.median(t) * 1e3), "throughput_per_s": float(len(t) / t.sum())}
                     for name, t in samples.items()}
    timings["speedup"] = timings["onnxruntime"]["throughput_per_s"] / timings["torch_eager"]["throughput_per_s"]
    timings["threads"] = threads
    return timings


def quantize(onnx_path: Path, out: Path, mode: str) -> Path:
    """Write a quantised copy: ``int8`` (dynamic, weights int8) or ``fp16`` (weights and math, I/O kept float32)."""
    import onnx

    if mode == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = out.with_suffix(".prep.onnx")
        quiet = logging.getLogger()  # the quantiser logs every tensor at INFO on the root logger
        level = quiet.level
        quiet.setLevel(max(level, logging.WARNING))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # ORT graph optimisation first: folds BatchNorm and removes Identity nodes that
                # the exporter inserts for shared initialisers (the quantiser needs plain initialisers)
                quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
                quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        finally:
            quiet.setLevel(level)
            prepared.unlink(missing_ok=True)
    elif mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
        onnx.save(model, str(out))
    else:
        raise MedlensError(f"unknown quantisation {mode!r}; choose 'fp16' or 'int8'")
    return out


def read_metadata(onnx_path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file."""
    import onnx

    if not onnx_path.is_file():
        raise StageInputMissing(f"{onnx_path} not found; run `medlens export RUN` first")
    return {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}


def metadata_for(*, image_size: int, in_chans: int, class_names: list[str], folds: list[int], model_name: str,
                 threshold: float | None, version: str, preprocess: dict | None = None,
                 calibration: list[dict] | None = None) -> dict[str, str]:
    """Metadata written into the ONNX file: everything a client needs to prepare an input."""
    return {
        "medlens_version": version, "model_name": model_name, "folds": json.dumps(folds),
        "image_size": str(image_size), "in_chans": str(in_chans), "input_range": "[0, 1] (uint8 / 255)",
        "resize": "keep aspect ratio, INTER_AREA down / INTER_LINEAR up, zero-pad to square, round to uint8",
        "normalisation": json.dumps({"mean": MEAN, "std": STD, "in_graph": True}),
        "class_names": json.dumps(class_names), "opset": str(OPSET),
        "operating_threshold": "" if threshold is None else repr(float(threshold)),
        "preprocess": json.dumps(preprocess or {}), "calibration": json.dumps(calibration or []),
    }
