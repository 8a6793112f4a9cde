"""The deployment section of ``report.html``: :func:`write_export_section`, written by every export
(:func:`medlens.export.export_run`) from ``run/export/export.json``."""

from __future__ import annotations

import json
from pathlib import Path

from medlens.sections import write_section

EXTERNAL_REFUSAL_WARNING = 0.5
"""The deployment summary warns when the served OOD gate refuses at least this share of external-site images."""


def write_export_section(run: Path) -> Path | None:
    """Write the report's deployment section (``run/sections/export/``) from ``run/export/export.json``.

    Returns the written ``section.json`` (title, one-paragraph summary, the table ``export``), or
    None when the run was not exported.
    """
    path = Path(run) / "export" / "export.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    p = info["parity"]
    rows = [{"item": "ONNX file", "value": f"export/model.onnx (opset {info['opset']}, sha256 {info['onnx_sha256'][:12]}…)"},
            {"item": "models", "value": f"{info['model_name']}, folds {info['folds']}"},
            {"item": "input", "value": f"{info['in_chans']}×{info['image_size']}×{info['image_size']} in [0, 1]"},
            {"item": "parity (max |p_onnx − p_torch|)", "value": f"{p['max_abs_diff']:.1e} on {p['n_images']} held-out images (limit {p['tolerance']:.0e})"},
            {"item": "parity from the raw image files (max |p_onnx − predictions.parquet|)",
             "value": f"{p['max_abs_diff_vs_predictions']:.1e}" if "max_abs_diff_vs_predictions" in p else "–"},
            {"item": "preprocessing (saved in the ONNX metadata)",
             "value": ", ".join(f"{k} {v}" for k, v in info.get("preprocess", {}).items() if k != "steps")},
            {"item": "model size", "value": f"{info['onnx_size_bytes'] / 2**20:.1f} MiB" if "onnx_size_bytes" in info else "–"},
            {"item": "OOD gate (fitted on the shipped graph's features, as the trust audit's)",
             "value": f"Mahalanobis, {info['ood']['pass_rate']:.0%} of each fold's validation images pass; refuses "
                      + ", ".join(f"{v:.1%} of {k} images" for k, v in info['ood'].get('flagged', {}).items())},
            {"item": "Triton", "value": f"export/model_repository/{info['triton_name']} (GPU) and _cpu, holding "
                                        f"{info.get('shipped', 'model.onnx')}"}]
    lat = info.get("latency_batch1")
    if lat:
        rows.append({"item": "batch-1 latency (CPU)", "value": f"ONNX Runtime {lat['onnxruntime']['p50_ms']:.1f} ms vs PyTorch "
                                                            f"{lat['torch_eager']['p50_ms']:.1f} ms ({lat['speedup']:.1f}×)"})
    q = info.get("quantization")
    if q and "test_auc_change" in q:
        rows.append({"item": f"{q['mode']} quantisation", "value": f"test AUC change {q['test_auc_change']:+.3f}"})
    summary = (f"The calibrated ensemble was exported to ONNX and checked from the raw image files: on {p['n_images']} "
               f"held-out images its probabilities differ from PyTorch by at most {p['max_abs_diff']:.1e} and from the "
               f"evaluated predictions by at most {p.get('max_abs_diff_vs_predictions', float('nan')):.1e}, so the deployed "
               f"model gives the answers this report evaluates. A Triton model repository and `medlens serve` (with authentication, an audit log, "
               f"and image-quality and out-of-distribution gates that refuse unsuitable images) are ready for IT.")
    ext = info["ood"].get("flagged", {}).get("external")
    if ext is not None and ext >= EXTERNAL_REFUSAL_WARNING:
        summary += (f" Before deploying at another site: the out-of-distribution gate refuses {ext:.0%} of the "
                    f"external site's images, so at a site like it the service would refuse about {ext:.0%} of requests. Validate "
                    "(and, if the model holds there, refit the gate) on that site's images first.")
    return write_section(run, "export", title="Deployment", summary=summary, tables={"export": rows})
