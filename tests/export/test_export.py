"""ONNX export: parity with PyTorch, metadata, quantisation, OOD gate, CLI, stage hooks."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from medlens.export import OPSET, Ensemble, ParityError, parity_check, run_config
from medlens.export.onnx_export import export_onnx, latency_benchmark, read_metadata
from medlens.inference.onnx import session

pytestmark = pytest.mark.slow


@functools.lru_cache(maxsize=2)
def _phantom_tensor(n: int, size: int) -> torch.Tensor:
    """``n`` phantom images (both sites, positives and negatives) as uint8 N×3×size×size."""
    from medlens.data.arrays import resize
    from medlens.data.synthetic import ImageSpec, render_image

    rng = np.random.default_rng(0)
    out = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        img, _, _ = render_image(ImageSpec(48, "AB"[i % 2], int(i % 3 == 0) * 2), rng)
        small = resize(img.transpose(2, 0, 1).astype(np.float32) / 255, size)
        out[i] = np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_100"])
def test_parity_256_images(tmp_path, name, capsys):
    from medlens.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_chans=3).eval()
    path = export_onnx(Ensemble([model]), tmp_path / "m.onnx", image_size=32, in_chans=3, metadata={"k": "v"})
    images = _phantom_tensor(256, 32)
    res = parity_check(Ensemble([model]), session(path), images)
    assert res["n_images"] == 256 and res["passed"] and res["max_abs_diff"] <= 1e-4
    lat = latency_benchmark(Ensemble([model]), path, images[:1], iterations=20)
    with capsys.disabled():
        print(f"\n{name}: parity max |dp| {res['max_abs_diff']:.1e} on 256 images; batch 1 ONNX Runtime "
              f"{lat['onnxruntime']['p50_ms']:.2f} ms vs PyTorch eager {lat['torch_eager']['p50_ms']:.2f} ms "
              f"(throughput ratio {lat['speedup']:.1f}x)")


def test_parity_failure_raises(tmp_path):
    from medlens.models import create_model

    torch.manual_seed(0)
    a, b = (create_model("resnet18", num_classes=2, in_chans=3).eval() for _ in range(2))
    path = export_onnx(Ensemble([a]), tmp_path / "m.onnx", image_size=32, in_chans=3, metadata={})
    with pytest.raises(ParityError, match="parity failed"):
        parity_check(Ensemble([b]), session(path), _phantom_tensor(8, 32))


def test_export_run_outputs(exported):
    run, info = exported
    out = run / "export"
    for name in ("model.onnx", "model.int8.onnx", "ood.safetensors", "ood.json", "cam.safetensors", "export.json"):
        assert (out / name).is_file()
    # what the service needs instead of the run directory: the CAM's model and layer, the card's aggregates
    cfg = run_config(run)
    assert info["task"] == "classification" and info["qc"]["checks"]
    assert info["cam"] == {"weights": "cam.safetensors", "model_name": cfg.model.name, "in_chans": 3, "image_size": 32,
                           "fold": cfg.explain.fold, "layer": json.loads((run / "explain" / "summary.json").read_text())
                           ["layer"], "method": cfg.explain.method, "target_class": cfg.explain.target_class}
    assert (out / "cam.safetensors").read_bytes() == (run / f"fold_{cfg.explain.fold}" / "model.safetensors").read_bytes()
    assert set(info["card"]) == {"operating_point", "training_data", "metrics_95ci"}
    assert info["card"]["training_data"]["development_patients"] > 0
    assert info["parity"]["passed"] and info["parity"]["max_abs_diff"] <= 1e-4
    assert info["parity"]["max_abs_diff_vs_predictions"] <= 1e-4  # from the raw files to predictions.parquet
    assert info["folds"] == [0, 1] and info["opset"] == OPSET == 17
    assert set(info["ood"]["flagged"]) == {"test", "external"}  # what the served gate refuses, per held-out part
    assert all(0 <= v <= 1 for v in info["ood"]["flagged"].values())
    meta = read_metadata(out / "model.onnx")
    assert json.loads(meta["class_names"]) == info["class_names"]
    assert json.loads(meta["normalisation"]) == {"mean": 0.5, "std": 0.25, "in_graph": True}
    metrics = json.loads((run / "metrics.json").read_text())
    assert meta["image_size"] == "32"
    assert float(meta["operating_threshold"]) == metrics["operating_point"]["threshold"]
    assert json.loads(meta["preprocess"])["clahe"] == "lab" and json.loads(meta["calibration"])[0]["method"] == "platt"
    q = info["quantization"]
    assert q["mode"] == "int8" and "test_auc_change" in q and q["size_bytes"] < q["fp32_size_bytes"] / 2
    lat = info["latency_batch1"]
    assert lat["onnxruntime"]["throughput_per_s"] > 0 and lat["torch_eager"]["throughput_per_s"] > 0


def test_dynamic_batch_and_outputs(exported):
    run, info = exported
    sess = session(run / "export" / "model.onnx")
    for n in (1, 5):
        p, m, f = sess.run(None, {"image": np.random.default_rng(n).random((n, 3, 32, 32), dtype=np.float32)})
        assert p.shape == (n, 2) and m.shape == (n, 2, 2) and f.shape == (n, info["n_features"])
        assert np.allclose(p, m.mean(1), atol=1e-6)


def test_ood_gate_flags_texture_images(exported):
    from medlens.data.synthetic import ImageSpec, render_image
    from medlens.data.preprocess import Preprocess
    from medlens.inference.ood import load_detectors
    from medlens.serve.engine import preprocess

    run, info = exported
    contract = Preprocess.from_dict(info["preprocess"])
    gate = load_detectors(run / "export")
    sess = session(run / "export" / "model.onnx")
    rng = np.random.default_rng(1)

    def feats(**kw):
        imgs = [render_image(ImageSpec(64, "A", 0, **kw), rng)[0] for _ in range(6)]
        x = np.stack([preprocess(i.transpose(2, 0, 1).astype(np.float32) / 255, contract) for i in imgs])
        return sess.run(["features"], {"image": x})[0]

    assert gate.is_ood(feats(ood=True)).mean() >= 5 / 6
    assert gate.is_ood(feats()).mean() <= 1 / 6


def test_cli_export_and_errors(tmp_path, exported):
    from typer.testing import CliRunner

    from medlens.cli import app

    run, _ = exported
    res = CliRunner().invoke(app, ["export", str(run), "--fold", "1"])
    assert res.exit_code == 0, res.output
    assert "parity: max |p_onnx - p_torch|" in res.output and "ONNX Runtime" in res.output
    assert json.loads((run / "export" / "export.json").read_text())["folds"] == [1]
    from medlens.errors import ConfigError, StageInputMissing
    from medlens.export import export_run

    with pytest.raises(ConfigError, match="trained folds"):
        export_run(run, fold=7)
    with pytest.raises(StageInputMissing, match="medlens run"):
        export_run(tmp_path)


def test_report_section(exported, tmp_path):
    from medlens.export import write_export_section
    from medlens.sections import read_section, section_dir

    run, _ = exported
    assert write_export_section(tmp_path) is None
    sec = read_section(section_dir(run, "export") / "section.json")  # written by the export
    assert sec["title"] and "parity" in json.dumps(sec["tables"]).lower() and len(sec["summary"]) > 100


def test_ship_quantized(exported, tmp_path):
    """--ship-quantized: the int8 copy is what Triton holds, what serve runs and what the OOD gate was fitted on."""
    import shutil

    from medlens.errors import ConfigError
    from medlens.export import export_run
    from medlens.serve.engine import Engine

    run, info = exported
    fp32_repo = run / "export" / "model_repository" / info["triton_name"] / "1" / "model.onnx"
    assert info["shipped"] == "model.onnx" and fp32_repo.read_bytes() == (run / "export" / "model.onnx").read_bytes()
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export"))
    with pytest.raises(ConfigError, match="needs --quantize"):
        export_run(copy, ship_quantized=True, benchmark=False)
    q_info = export_run(copy, quantize="int8", ship_quantized=True, benchmark=False)
    out = copy / "export"
    assert q_info["shipped"] == "model.int8.onnx"
    for model in (q_info["triton_name"], q_info["triton_name"] + "_cpu"):
        assert (out / "model_repository" / model / "1" / "model.onnx").read_bytes() == (out / "model.int8.onnx").read_bytes()
    x = _phantom_tensor(4, 32).numpy().astype(np.float32) / 255
    engine = Engine(copy)
    served = engine.infer(x)[0]
    int8 = session(out / "model.int8.onnx", threads=1).run(["probabilities"], {"image": x})[0]
    fp32 = session(out / "model.onnx", threads=1).run(["probabilities"], {"image": x})[0]
    assert np.array_equal(served, int8) and not np.array_equal(served, fp32)
    # fitted on the int8 graph's features
    assert q_info["ood"]["member_thresholds"] != info["ood"]["member_thresholds"]


def test_deployment_summary_warns_when_the_gate_refuses_the_external_site(exported, tmp_path):
    from medlens.export.report import EXTERNAL_REFUSAL_WARNING, write_export_section
    from medlens.sections import read_section

    run, info = exported
    for refused, warned in ((EXTERNAL_REFUSAL_WARNING, True), (EXTERNAL_REFUSAL_WARNING - 0.01, False)):
        (tmp_path / "export").mkdir(exist_ok=True)
        changed = {**info, "ood": {**info["ood"], "flagged": {"test": 0.05, "external": refused}}}
        (tmp_path / "export" / "export.json").write_text(json.dumps(changed))
        summary = read_section(write_export_section(tmp_path))["summary"]
        assert ("Before deploying at another site" in summary) is warned
        if warned:
            assert f"refuses {refused:.0%} of the external site's images" in summary
