"""Commands that need no model start without importing torch (issue 16: they must start in < 1 s).

Each command runs in a fresh interpreter; at exit it reports which heavy packages were
imported. Wall time is not asserted (CI machines are shared); docs/benchmarks.md reports it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.dicom import SECRET, make_ds, save

HEAVY = ("torch", "timm", "monai", "sklearn", "onnxruntime", "fastapi")
PROBE = """
import atexit, json, sys
atexit.register(lambda: print("HEAVY=" + json.dumps([m for m in {heavy} if m in sys.modules]), file=sys.stderr))
sys.argv = ["medlens"] + {args}
from medlens.cli import main
main()
"""


def _imported(args: list[str], cwd: Path) -> list[str]:
    code = PROBE.format(heavy=repr(HEAVY), args=repr(args))
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("HEAVY=")][-1]
    return json.loads(line[len("HEAVY="):])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from medlens.data.synthetic import generate

    base = tmp_path_factory.mktemp("startup")
    generate(base / "ph", n_patients=30, seed=0, image_size=32)
    save(make_ds(), base / "dicom" / "a.dcm")
    (base / "secret").write_bytes(SECRET)
    return base


@pytest.mark.parametrize("args", [
    ["--help"],
    ["deid", "--help"],
    ["deid", "dicom", "run/out", "--secret-file", "secret", "--verify"],
    ["ingest", "ph", "--out", "m.parquet"],
    ["split", "m.parquet", "--out", "s.json"],
    ["qc", "ph/images", "--out", "qc.parquet"],
], ids=lambda a: " ".join(a[:2]))
def test_light_commands_do_not_import_torch(work, args):
    assert _imported(args, work) == []
