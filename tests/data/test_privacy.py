"""Issue 32: no original identifier in any run, from a table as from DICOM (image folders: tests/test_own_data.py).

A hospital's folder and file names carry names, record numbers and dates, and its tables
carry record numbers and free text. Each study below plants unique strings (Latin and
Hangul, with dates) in every such place, runs `medlens init` and `medlens run` as a user
would, and searches every file of the run directory (inside parquet, zip archives and PNG
text chunks too) and the commands' output: none may be found. The pseudonym map outside
the run directory maps every pseudonym back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.privacy import HANGUL, leaks, private_map
from PIL import Image

FAST = {"split": {"folds": 2, "external_site": None}, "train": {"epochs": 1, "image_size": 32},
        "evaluate": {"n_bootstrap": 100}, "explain": {"max_images": 8, "faithfulness_images": 2, "sanity_images": 2}}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> pd.DataFrame:
    """A small phantom (real PNG files with labels and patients) to rename as a hospital would."""
    from medlens.data.synthetic import generate

    folder = tmp_path_factory.mktemp("phantom")
    m = generate(folder, seed=0, n_patients=24, image_size=64)
    return m.assign(image=[str(folder / p) for p in m["image"]])


def _medlens(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medlens.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **(env or {})})


def _run(study: Path, cwd: Path, **overrides) -> subprocess.CompletedProcess:
    cfg = yaml.safe_load(study.read_text())
    for key, value in {**FAST, **overrides}.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    study.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    res = _medlens("run", study.name, cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _table_study(phantom: pd.DataFrame, root: Path, planted: bool) -> tuple[Path, list[str]]:
    """A CSV study of the phantom's images; with ``planted``, identifying names, IDs and free text everywhere."""
    rows, strings = [], []
    for i, r in enumerate(phantom.itertuples()):
        p = int(r.patient_id[1:])
        if planted:
            pid = f"HOSP-{7_700_000 + p * 13}-{HANGUL[p % len(HANGUL)]}"
            rel = Path(f"{HANGUL[p % len(HANGUL)]}_MRN{7_700_000 + p * 13}") / f"LEE_SY_{i:04d}_2023{(i % 12) + 1:02d}15.png"
            note = f"pt lives at {i}-gil Gangnam {HANGUL[i % len(HANGUL)]}어머니 TEL010{i:08d}"
            strings += [pid, rel.parent.name, rel.stem, note, f"TEL010{i:08d}"]
        else:
            pid, rel, note = f"p{p}", Path(f"img_{i:04d}.png"), ""
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(r.image).save(root / rel)
        rows.append({"image": str(rel), "label": r.label, "patient_id": pid, "site": r.site, "notes": note,
                     "exam_date": f"2023-{(p % 12) + 1:02d}-{(i % 27) + 1:02d}", "age": 20 + (p * 7) % 75})
    table = root / "clinic_export.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table, strings


def _evaluated(cwd: Path, table: Path, columns: dict, engine: dict) -> Path:
    """The neutral table's study trained and evaluated in-process (its predictions are what is compared).

    ``engine`` is what `medlens init` wrote for the planted table (the fundus preprocessing: phantom images).
    """
    from medlens.config import parse_config
    from medlens.evaluate.study import evaluate_run
    from medlens.stages.runner import prepare_study
    from medlens.train.fold import train_fold

    cfg = parse_config({"name": "plain", "run_dir": str(cwd / "runs"), **FAST, "engine": engine,
                        "data": {"source": "csv", "path": str(table), "csv_columns": columns}})
    manifest, splits = prepare_study(cfg)
    for k in range(len(splits["folds"])):
        train_fold(cfg, manifest, splits, k, None, resume="auto")
    evaluate_run(cfg.out, cfg)
    return cfg.out


def test_table_study_holds_no_original_id_and_keeps_its_figures(phantom, tmp_path):
    planted_root, plain_root = tmp_path / "planted", tmp_path / "plain"
    table, strings = _table_study(phantom, planted_root, planted=True)
    plain, _ = _table_study(phantom, plain_root, planted=False)
    res = _medlens("init", str(table), "--name", "planted", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    study = tmp_path / "planted.yaml"
    written = yaml.safe_load(study.read_text())
    columns = {**written["data"]["csv_columns"], "date": "exam_date", "metadata": ["age"]}
    assert written["engine"] == {"preprocess": {"roi_crop": True, "clahe": "lab"}}  # the phantom is fundus-like
    out = _run(study, tmp_path, data={"csv_columns": columns})
    runs = {"planted": (tmp_path / "runs" / "planted", res, out),
            "plain": (_evaluated(tmp_path, plain, columns, written["engine"]), None, None)}
    run, init, out = runs["planted"]
    assert not leaks(run, strings + [str(planted_root), "clinic_export"], init.stdout, init.stderr, out.stdout,
                      out.stderr)
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert "notes" not in manifest.columns  # undeclared free text never enters
    assert set(manifest["age"]) == {"<40", "40-59", "60-74", ">=75"}  # binned: the exact age never enters
    key = private_map(run).set_index("sample_id")
    original = pd.read_csv(table)
    assert set(key.loc[manifest["sample_id"], "original_patient_id"]) == set(original["patient_id"])
    # every date moved by its patient's offset (never 0), and the order of the original dates is kept
    by_path = original.assign(path=[str((table.parent / p).resolve()) for p in original["image"]]).set_index("path")
    first = by_path.loc[[str(Path(p).resolve()) for p in key.loc[manifest["sample_id"], "original_image"]]]
    true_date = pd.to_datetime(first["exam_date"]).to_numpy()
    shift = (pd.to_datetime(manifest["acquired"]).to_numpy() - true_date).astype("timedelta64[D]").astype(int)
    assert (shift < 0).all() and (shift == key.loc[manifest["sample_id"], "date_shift_days"].astype(int).to_numpy()).all()
    assert (pd.Series(true_date).rank(method="dense").to_numpy() == manifest["acquired_order"].to_numpy()).all()
    # the same images in the same order give the same probabilities, whatever the IDs are called
    probs = []
    for (r, _, _), path in ((runs["planted"], table), (runs["plain"], plain)):
        row_of = {str((path.parent / p).resolve()): i for i, p in enumerate(pd.read_csv(path)["image"])}
        back = private_map(r).set_index("sample_id")["original_image"]
        pred = pd.read_parquet(r / "predictions.parquet")
        pred["row"] = [row_of[str(Path(p).resolve())] for p in back.loc[pred["sample_id"]]]
        probs.append(pred.set_index(["part", "row"]).sort_index())
    a, b = probs
    assert len(a) == len(b) > 0 and (a.index == b.index).all()
    assert np.abs(a["p1"].to_numpy() - b["p1"].to_numpy()).max() <= 1e-6
