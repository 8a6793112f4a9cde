"""Each QC check on small constructed images; registry, config and CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medlens.errors import DataError
from medlens.config import QCConfig
from medlens.qc import list_checks, phash, run_qc


def fundus(size: int = 96, cx: float = 0.5, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    r = np.hypot(xx - cx, yy - 0.5) / 0.45
    base = np.clip(1 - 0.4 * r**2, 0, 1) * (r <= 1)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.5)
    img = np.stack([0.8 * base, 0.4 * base, 0.2 * base]) * (1 + 0.3 * texture) * scale
    return np.clip(img, 0, 1).astype(np.float32)


def test_registry_and_config():
    assert list_checks() == ["blur", "contrast", "exposure", "fov", "near_duplicate"]
    with pytest.raises(ValueError, match="Did you mean 'blur'"):
        QCConfig(checks=("blurr",))
    with pytest.raises(ValueError):
        QCConfig(dark_threshold=0.1)
    with pytest.raises(ValueError, match="min_sharpness is retired.*max_blur"):  # an old study or export
        QCConfig(min_sharpness=0.01)


def test_checks_flag_their_defect():
    images = {
        "ok": fundus(seed=1),
        "dark": fundus(seed=2, scale=0.1),
        "bright": np.clip(fundus(seed=3) * 2 + 0.4, 0, 1),
        "blur": np.stack([cv2.GaussianBlur(c, (0, 0), 4) for c in fundus(seed=4)]),
        "off": fundus(seed=5, cx=0.85),
    }
    df = run_qc(images.values(), list(images)).set_index("sample_id")
    assert df.loc["ok", "passed"]
    assert df.loc["dark", "is_exposure"] and "too dark" in df.loc["dark", "reason"]
    assert df.loc["bright", "is_exposure"] and "too bright" in df.loc["bright", "reason"]
    assert df.loc["blur", "is_blur"] and not df.loc["blur", "is_exposure"]
    assert "blurred (blur effect" in df.loc["blur", "reason"] and not df.loc["ok", "is_blur"]
    assert df.loc["off", "is_fov"] and "off-centre" in df.loc["off", "reason"]
    assert list(df.columns[:2]) == ["passed", "reason"]


def test_near_duplicate_names_the_first_copy():
    a, b = fundus(seed=1), fundus(seed=2)
    copy = np.clip(a * 1.05, 0, 1)
    df = run_qc([a, b, copy], ["a", "b", "a_copy"])
    assert df["is_near_duplicate"].tolist() == [False, False, True]
    assert "of a " in df.loc[2, "reason"]
    assert (phash(a[0]) != phash(b[0])).sum() > 20


def test_grey_collimation_and_bad_input():
    grey = np.random.default_rng(0).uniform(0.2, 0.8, (1, 64, 64)).astype(np.float32)
    collimated = np.zeros_like(grey)
    collimated[:, 40:60, 40:60] = grey[:, 40:60, 40:60]
    df = run_qc([grey, collimated], ["full", "small"], QCConfig(checks=("fov",)))
    assert df["is_fov"].tolist() == [False, True]
    with pytest.raises(DataError, match="C×H×W"):
        run_qc([np.zeros((64, 64), np.float32)], ["x"])
    with pytest.raises(DataError, match="sample ids"):
        run_qc([grey], ["a", "b"])


def test_fail_on_limits_what_fails():
    df = run_qc([fundus(scale=0.1)], ["d"], QCConfig(fail_on=("blur",)))
    assert bool(df.loc[0, "is_exposure"]) and bool(df.loc[0, "passed"])


def test_cli_writes_parquet(tmp_path):
    import typer
    from typer.testing import CliRunner

    from medlens.cli.qc import qc

    for i, img in enumerate([fundus(seed=1), fundus(seed=2, scale=0.1)]):
        Image.fromarray((img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(tmp_path / f"im{i}.png")
    app = typer.Typer()
    app.command("qc")(qc)
    app.command("other")(lambda: None)
    out = tmp_path / "qc.parquet"
    res = CliRunner().invoke(app, ["qc", str(tmp_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert df["passed"].tolist() == [True, False] and "1 of 2" in res.output
    bad = CliRunner().invoke(app, ["qc", str(tmp_path / "none.csv")])
    assert isinstance(bad.exception, DataError)


def test_config_knows_every_registered_check():
    from medlens.config.qc import CHECKS
    from medlens.qc.checks import REGISTRY

    assert set(CHECKS) == set(REGISTRY)
