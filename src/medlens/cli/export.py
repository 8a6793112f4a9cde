"""``medlens export RUN``: ONNX + parity check + OOD gate + Triton repository (registered in :mod:`medlens.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export(
    run: Annotated[Path, typer.Argument(help="A finished run directory (`runs/<name>`).")],
    fold: Annotated[str, typer.Option(help="'ensemble' (all fold models averaged) or a fold number.")] = "ensemble",
    quantize: Annotated[str, typer.Option(help="Also write a quantised copy: none | fp16 | int8.")] = "none",
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size.")] = 32,
    tolerance: Annotated[float, typer.Option(help="Largest allowed |p_onnx - p_torch|.")] = 1e-4,
    ship_quantized: Annotated[bool, typer.Option(help="Ship the quantised copy (Triton repository, medlens serve, "
                                                      "OOD gate) instead of the fp32 graph.")] = False,
) -> None:
    """Export for deployment: run/export/model.onnx (parity-checked), the OOD gate, model_repository/ for Triton.

    A detection run (task: detection) is exported to run/det/export/ instead: ONNX with the box
    decoding in the graph, parity against the evaluated boxes, the OOD gate and the Triton repository
    (`medlens run` already does this; --fold and --quantize do not apply).
    """
    from medlens.export.core import export_run, run_config

    cfg = run_config(run)
    if cfg.task == "detection":
        from medlens.detection.export import export_detector

        p = export_detector(run, cfg, max_batch_size=max_batch_size)["parity"]
        typer.echo(f"wrote {run / 'det' / 'export' / 'model.onnx'}; parity on {p['n_images']} held-out images: "
                   f"min box IoU {p['min_iou']:.4f}, max score difference {p['max_score_diff']:.1e} -> ok")
        typer.echo(f"Triton repository: {run / 'det' / 'export' / 'model_repository'} (see its README.md)")
        typer.echo(f"the service runs from {run / 'det' / 'export'} alone: medlens serve {run / 'det' / 'export'}")
        return

    info = export_run(run, fold=fold, quantize=quantize, max_batch_size=max_batch_size, tolerance=tolerance,
                      ship_quantized=ship_quantized)
    p = info["parity"]
    typer.echo(f"wrote {run / 'export' / 'model.onnx'} (opset {info['opset']}, folds {info['folds']})")
    typer.echo(f"parity: max |p_onnx - p_torch| = {p['max_abs_diff']:.2e} on {p['n_images']} held-out images "
               f"(limit {p['tolerance']:.0e}) -> ok")
    lat = info.get("latency_batch1")
    if lat:
        typer.echo(f"batch 1, {lat['threads']} thread: ONNX Runtime {lat['onnxruntime']['p50_ms']:.2f} ms "
                   f"({lat['onnxruntime']['throughput_per_s']:.0f}/s) vs PyTorch eager {lat['torch_eager']['p50_ms']:.2f} ms "
                   f"({lat['torch_eager']['throughput_per_s']:.0f}/s): {lat['speedup']:.1f}x")
    q = info.get("quantization")
    if q:
        if "test_auc_change" in q:
            typer.echo(f"{q['mode']}: test AUC {q['test_auc_fp32']:.3f} -> {q[f'test_auc_' + q['mode']]:.3f} "
                       f"(change {q['test_auc_change']:+.4f}), max |dp| {q['max_abs_diff_vs_fp32']:.2e}")
        elif "error" in q:
            typer.echo(f"{q['mode']}: written but not runnable here ({q['error']})")
    typer.echo(f"Triton repository: {run / 'export' / 'model_repository'} (see its README.md), shipping "
               f"{info['shipped']}")
    typer.echo(f"the service runs from {run / 'export'} alone: medlens serve {run / 'export'}")
