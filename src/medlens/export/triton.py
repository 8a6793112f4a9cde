"""Triton Inference Server model repository for an exported ONNX model.

Layout written under ``export/model_repository``::

    <name>/config.pbtxt        KIND_GPU instance group, dynamic batching
    <name>/1/model.onnx
    <name>_cpu/config.pbtxt    the same model on KIND_CPU (fallback for hosts without a GPU)
    <name>_cpu/1/model.onnx
    README.md                  the tritonserver command and the request format

No preprocessing model is needed: normalisation is inside the ONNX graph, and the client
sends the image resized to the declared square and scaled to [0, 1] (see the README).

:func:`validate_config` parses a ``config.pbtxt`` with Triton's own protobuf schema
(``model_config.proto`` as shipped in ``tritonclient``) when it is installed, and
otherwise with a small text-format parser checked against the documented fields.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

from medlens.errors import MedlensError


class TritonConfigError(MedlensError):
    """A ``config.pbtxt`` does not follow Triton's model configuration schema."""


def classifier_outputs(n_classes: int, n_members: int, n_features: int) -> list[tuple[str, list[int]]]:
    """The outputs of an exported classifier ensemble: names and dims (without the batch axis)."""
    return [("probabilities", [n_classes]), ("member_probabilities", [n_members, n_classes]),
            ("features", [n_features])]


def config_text(name: str, *, in_chans: int, image_size: int, outputs: list[tuple[str, list[int]]],
                max_batch_size: int = 32, kind: str = "KIND_GPU", count: int = 1) -> str:
    """The ``config.pbtxt`` of one model (dims exclude the batch axis, as Triton expects with max_batch_size > 0).

    ``outputs``: ``(name, dims)`` of each FP32 output, e.g. :func:`classifier_outputs`.
    """
    preferred = [b for b in (4, 8, 16) if b <= max_batch_size]
    out = ",\n".join(f"""  {{
    name: "{o}"
    data_type: TYPE_FP32
    dims: [ {", ".join(map(str, dims))} ]
  }}""" for o, dims in outputs)
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
  {{
    name: "image"
    data_type: TYPE_FP32
    dims: [ {in_chans}, {image_size}, {image_size} ]
  }}
]
output [
{out}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(map(str, preferred))} ]
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    count: {count}
    kind: {kind}
  }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


README = """# Triton model repository for `{name}` (exported by medlens {version})

Two models hold the same ONNX file: `{name}` runs on GPU (`KIND_GPU`), `{name}_cpu` on CPU
(`KIND_CPU`) for hosts without a GPU. Load one or both:

```
tritonserver --model-repository=$PWD/model_repository --model-control-mode=explicit --load-model={name}
# CPU-only host:
tritonserver --model-repository=$PWD/model_repository --model-control-mode=explicit --load-model={name}_cpu
# or in a container:
docker run --gpus=1 --rm -p8000:8000 -p8001:8001 -v $PWD/model_repository:/models \\
  nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
```

Input `image`: FP32 `[batch, {in_chans}, {size}, {size}]`, values in [0, 1]. Prepare it like training:
decode to RGB, keep the aspect ratio and resize the longer side to {size} px (area interpolation when
shrinking), zero-pad to a square, round to uint8, then divide by 255. Normalisation (mean {mean}, std
{std}) happens inside the graph. Outputs: `probabilities` `[batch, {k}]` (class order {classes}),
`member_probabilities` `[batch, {members}, {k}]` (one row per fold model: their spread is the
uncertainty), `features` `[batch, {feats}]` (penultimate features for the OOD gate in `../ood.safetensors` + `../ood.json`).
The operating point chosen on validation data is threshold {threshold} on `probabilities[:, 1]`.

KServe v2 request: `POST /v2/models/{name}/infer` with
`{{"inputs": [{{"name": "image", "shape": [1, {in_chans}, {size}, {size}], "datatype": "FP32", "data": [...]}}]}}`.
`medlens serve` on the export folder (`..`, on its own) offers the same endpoint plus the QC and OOD gates,
auth and an audit log.
"""


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``dst`` to ``src`` (no second copy of the weights on disk); copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_repository(root: Path, onnx_path: Path, name: str, *, in_chans: int, image_size: int,
                     outputs: list[tuple[str, list[int]]], readme: str, max_batch_size: int = 32) -> list[Path]:
    """Write the GPU and CPU model folders and ``readme`` (README.md); validate each config. Returns the config paths.

    Both folders hard-link ``onnx_path`` where the file system allows (``cp -r`` of the
    repository still copies real files).
    """
    if root.exists():
        shutil.rmtree(root)
    configs = []
    for model_name, kind in ((name, "KIND_GPU"), (f"{name}_cpu", "KIND_CPU")):
        folder = root / model_name
        (folder / "1").mkdir(parents=True)
        _link_or_copy(onnx_path, folder / "1" / "model.onnx")
        text = config_text(model_name, in_chans=in_chans, image_size=image_size, outputs=outputs,
                           max_batch_size=max_batch_size, kind=kind)
        validate_config(text)
        (folder / "config.pbtxt").write_text(text)
        configs.append(folder / "config.pbtxt")
    (root / "README.md").write_text(readme)
    return configs


# ---------------------------------------------------------------- validation
def triton_schema():
    """Triton's ``ModelConfig`` protobuf class from tritonclient, or None when not installed.

    ``tritonclient.grpc`` imports grpc on package import, so the generated module is loaded
    from its file (it needs only ``protobuf``).
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("medlens_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception:  # a protobuf runtime too old for the generated code
        return None
    return module.ModelConfig


# Documented fields (https://github.com/triton-inference-server/common/blob/main/protobuf/model_config.proto)
_FIELDS = {
    "": {"name", "platform", "backend", "runtime", "version_policy", "max_batch_size", "input", "output",
         "batch_input", "batch_output", "optimization", "dynamic_batching", "sequence_batching",
         "ensemble_scheduling", "instance_group", "default_model_filename", "cc_model_filenames", "metric_tags",
         "parameters", "model_warmup", "model_operations", "model_transaction_policy", "model_repository_agents",
         "response_cache"},
    "input": {"name", "data_type", "format", "dims", "reshape", "is_shape_tensor", "allow_ragged_batch", "optional"},
    "output": {"name", "data_type", "dims", "reshape", "label_filename", "is_shape_tensor"},
    "dynamic_batching": {"preferred_batch_size", "max_queue_delay_microseconds", "preserve_ordering",
                         "priority_levels", "default_priority_level", "default_queue_policy", "priority_queue_policy"},
    "instance_group": {"name", "kind", "count", "rate_limiter", "gpus", "secondary_devices", "profile", "passive",
                       "host_policy"},
    "version_policy": {"latest", "all", "specific"},
    "latest": {"num_versions"},
}
_KINDS = {"KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"}
_TYPES = {"TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16",
          "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"}
_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_]*)|(-?[0-9.]+)|([{}\[\]:,]))')


def _parse_text(text: str) -> dict:
    """Parse protobuf text format into ``{field: [values]}`` (messages as nested dicts)."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise TritonConfigError(f"config.pbtxt: cannot parse near {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.group(1) is None:
            tokens.append(next(g for g in m.groups()[1:] if g is not None))
    tokens.append(None)
    i = 0

    def value():
        nonlocal i
        tok = tokens[i]
        if tok == "{":
            i += 1
            return message("}")
        i += 1
        return tok

    def message(end):
        nonlocal i
        out: dict = {}
        while tokens[i] != end:
            key = tokens[i]
            if key is None or not re.fullmatch(r"[A-Za-z_]\w*", key):
                raise TritonConfigError(f"config.pbtxt: expected a field name, got {key!r}")
            i += 1
            if tokens[i] == ":":
                i += 1
            if tokens[i] == "[":
                i += 1
                while tokens[i] != "]":
                    out.setdefault(key, []).append(value())
                    if tokens[i] == ",":
                        i += 1
                i += 1
            else:
                out.setdefault(key, []).append(value())
            if tokens[i] in (",", ";"):
                i += 1
        i += 1
        return out

    return message(None)


def _check_fields(msg: dict, where: str) -> None:
    allowed = _FIELDS.get(where)
    for key, values in msg.items():
        if allowed is not None and key not in allowed:
            raise TritonConfigError(f"config.pbtxt: unknown field '{key}' in {where or 'ModelConfig'}")
        for v in values:
            if isinstance(v, dict):
                _check_fields(v, key)


def validate_config(text: str) -> dict:
    """Validate a ``config.pbtxt`` and return ``{"schema": ..., "name", "max_batch_size", "inputs", "outputs", "kinds"}``.

    Raises
    ------
    TritonConfigError
        Unknown field, wrong type, unknown enum value, or a missing required part.
    """
    schema = triton_schema()
    if schema is not None:
        from google.protobuf import text_format

        try:
            cfg = text_format.Parse(text, schema())
        except text_format.ParseError as err:
            raise TritonConfigError(f"config.pbtxt does not match Triton's model_config.proto: {err}") from None
        out = {"schema": "tritonclient model_config.proto", "name": cfg.name, "platform": cfg.platform,
               "max_batch_size": cfg.max_batch_size,
               "inputs": {t.name: list(t.dims) for t in cfg.input}, "outputs": {t.name: list(t.dims) for t in cfg.output},
               "kinds": [schema.DESCRIPTOR.fields_by_name["instance_group"].message_type.enum_types_by_name["Kind"]
                         .values_by_number[g.kind].name for g in cfg.instance_group],
               "dynamic_batching": cfg.HasField("dynamic_batching")}
    else:
        msg = _parse_text(text)
        _check_fields(msg, "")
        for part in ("input", "output"):
            for t in msg.get(part, []):
                if t.get("data_type", [None])[0] not in _TYPES:
                    raise TritonConfigError(f"config.pbtxt: {part} {t.get('name')} has data_type "
                                            f"{t.get('data_type')}, expected one of TYPE_*")
        kinds = [g.get("kind", ["KIND_AUTO"])[0] for g in msg.get("instance_group", [])]
        if any(k not in _KINDS for k in kinds):
            raise TritonConfigError(f"config.pbtxt: instance_group kind {kinds} not in {sorted(_KINDS)}")
        first = lambda m, k, d=None: m.get(k, [d])[0]  # noqa: E731
        out = {"schema": "documented fields (tritonclient not installed)",
               "name": (first(msg, "name") or "").strip('"'), "platform": (first(msg, "platform") or "").strip('"'),
               "max_batch_size": int(first(msg, "max_batch_size", 0)),
               "inputs": {first(t, "name").strip('"'): [int(d) for d in t.get("dims", [])] for t in msg.get("input", [])},
               "outputs": {first(t, "name").strip('"'): [int(d) for d in t.get("dims", [])] for t in msg.get("output", [])},
               "kinds": kinds, "dynamic_batching": "dynamic_batching" in msg}
    if out["platform"] != "onnxruntime_onnx":
        raise TritonConfigError(f"config.pbtxt: platform {out['platform']!r}, expected 'onnxruntime_onnx'")
    if not out["inputs"] or not out["outputs"]:
        raise TritonConfigError("config.pbtxt: needs at least one input and one output")
    return out
