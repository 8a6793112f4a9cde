"""Triton model repository: config.pbtxt against Triton's schema; the ONNX inside runs with the declared shapes."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.export import TritonConfigError, validate_config
from medlens.export import triton as tr
from medlens.inference.onnx import session

pytestmark = pytest.mark.slow
_DTYPES = {"TYPE_FP32": np.float32}


def test_repository_layout_and_schema(exported):
    run, info = exported
    repo = run / "export" / "model_repository"
    name = info["triton_name"]
    assert "tritonserver --model-repository" in (repo / "README.md").read_text()
    kinds = {}
    for model in (name, f"{name}_cpu"):
        text = (repo / model / "config.pbtxt").read_text()
        cfg = validate_config(text)
        assert cfg["name"] == model and cfg["platform"] == "onnxruntime_onnx" and cfg["dynamic_batching"]
        assert cfg["max_batch_size"] == 32
        kinds[model] = cfg["kinds"]
        # the ONNX file inside runs in ONNX Runtime with the declared shapes (batch 1 and max_batch_size)
        sess = session(repo / model / "1" / "model.onnx")
        assert [i.name for i in sess.get_inputs()] == list(cfg["inputs"])
        for batch in (1, cfg["max_batch_size"]):
            feed = {k: np.random.default_rng(0).random([batch, *dims], dtype=np.float32) for k, dims in cfg["inputs"].items()}
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
            assert set(outs) == set(cfg["outputs"])
            for k, dims in cfg["outputs"].items():
                assert list(outs[k].shape) == [batch, *dims]
    assert kinds == {name: ["KIND_GPU"], f"{name}_cpu": ["KIND_CPU"]}


def test_triton_protobuf_schema_is_used():
    pytest.importorskip("tritonclient")
    assert tr.triton_schema() is not None
    text = tr.config_text("m", in_chans=3, image_size=32, outputs=tr.classifier_outputs(2, 1, 8))
    assert validate_config(text)["schema"].startswith("tritonclient")


@pytest.mark.parametrize("use_proto", [True, False])
def test_invalid_configs_rejected(monkeypatch, use_proto):
    if not use_proto:
        monkeypatch.setattr(tr, "triton_schema", lambda: None)
    elif tr.triton_schema() is None:
        pytest.skip("tritonclient not installed")
    good = tr.config_text("m", in_chans=3, image_size=32, outputs=tr.classifier_outputs(2, 1, 8))
    assert validate_config(good)["inputs"] == {"image": [3, 32, 32]}
    for bad in (good.replace("max_batch_size", "max_batchsize"), good.replace("KIND_GPU", "KIND_TPU"),
                good.replace("TYPE_FP32", "TYPE_FLOAT"), good.replace("onnxruntime_onnx", "tensorflow_savedmodel")):
        with pytest.raises(TritonConfigError):
            validate_config(bad)
