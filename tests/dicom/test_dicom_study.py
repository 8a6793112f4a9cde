"""Issue 17: real DICOM files plus a labels table keyed by accession number through `medlens run`.

The files come from pydicom-data and deid-data; each gets a planted patient ID, name and
accession number (the labels are made up here). After the run, no byte of any file
under the run directory, nor of the command's output, holds an original identifier.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from helpers.dicom import SECRET, corpus_files

from medlens.dicom.safelist import is_standard_uid, safe_attributes
from medlens.dicom.reader import quiet_pydicom, read_dicom_file

pytest.importorskip("deid_data", reason="deid-data (a test dependency) provides part of the corpus")


def _images(n: int) -> list:
    """``n`` distinct, decodable, single-image files of pydicom-data and deid-data (no burned-in modalities)."""
    from medlens.dicom.ingest import dataset_to_image

    out, seen = [], set()
    for path in corpus_files():
        try:
            ds = read_dicom_file(path)
            if "PixelData" not in ds or str(ds.get("Modality", "")) in ("US", "SC", "XA", "ES", "SEG"):
                continue
            if int(ds.get("NumberOfFrames", 1) or 1) > 1 or max(int(ds.Rows), int(ds.Columns)) > 2100:
                continue
            with quiet_pydicom():
                image = dataset_to_image(ds, 0)
        except Exception:  # noqa: BLE001 - a file pydicom cannot read or decode here is not used
            continue
        digest = hashlib.sha1(image.tobytes()).hexdigest()
        if min(image.shape[1:]) >= 32 and digest not in seen:
            seen.add(digest)
            out.append(ds)
        if len(out) == n:
            break
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("dicomstudy")
    src = base / "hospital" / "Doe_Jane_exports"  # a folder name a user might really have
    src.mkdir(parents=True)
    originals: set[str] = set()
    rows = ["AccessionNumber,label"]
    datasets = _images(40)
    assert len(datasets) >= 30
    for i, ds in enumerate(datasets):
        ds.PatientID, ds.PatientName, ds.AccessionNumber = f"QZPID{i:03d}XJ", f"QZNAME{i:03d}^Jane", f"QZACC{i:03d}XJ"
        originals |= {str(ds.PatientID), str(ds.PatientName), str(ds.AccessionNumber)}
        originals |= {str(e.value) for e in ds.iterall() if e.VR == "UI" and e.VM == 1 and e.value
                      and not is_standard_uid(str(e.value)) and e.tag not in safe_attributes()}
        if i < len(datasets) - 2:  # two images without a label
            rows.append(f"{ds.AccessionNumber},{'pneumonia' if i % 2 else 'normal'}")
        with quiet_pydicom():
            ds.save_as(src / f"{ds.PatientName}.dcm".replace("^", "_"), enforce_file_format=False)
    rows.append("QZACC999XJ,normal")  # a key with no image
    labels = base / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    (base / "secret").write_bytes(SECRET)
    config = {"name": "dcm", "data": {"source": "dicom", "path": str(src), "labels": str(labels),
                                      "join_on": "AccessionNumber", "secret_file": str(base / "secret")},
              "split": {"folds": 2, "test_fraction": 0.3}, "train": {"epochs": 1, "image_size": 32},
              "evaluate": {"n_bootstrap": 200}, "explain": {"faithfulness_images": 4, "sanity_images": 4}}
    (base / "study.yaml").write_text(yaml.safe_dump(config))
    res = subprocess.run([sys.executable, "-m", "medlens.cli", "run", "study.yaml"], cwd=base, capture_output=True,
                         text=True, timeout=900)
    return {"base": base, "res": res, "run": base / "runs" / "dcm", "originals": originals, "n": len(datasets),
            "config": config}


def test_run_goes_end_to_end(study):
    res = study["res"]
    assert res.returncode == 0, res.stderr[-3000:]
    assert (study["run"] / "report.html").is_file()


def test_every_labelled_image_gets_its_label(study):
    manifest = pd.read_parquet(study["run"] / "manifest.parquet")
    assert len(manifest) == study["n"]
    assert manifest["label"].notna().sum() == study["n"] - 2
    assert set(manifest["label_name"].dropna()) == {"normal", "pneumonia"}
    assert (manifest["label"].dropna().value_counts() >= 14).all()


def test_no_original_identifier_anywhere_in_the_run_or_its_output(study):
    needles = {o.encode() for o in study["originals"]} | {b"Doe_Jane"}
    assert len(needles) > 100
    hits = []
    for path in study["base"].joinpath("runs").rglob("*"):
        if path.is_file():
            hits += [(path.name, n) for n in _found(path.read_bytes(), needles)]
    for stream in (study["res"].stdout, study["res"].stderr):
        hits += [("output", n) for n in _found(stream.encode(), needles)]
    assert hits == []


def _found(data: bytes, needles: set[bytes]) -> list[bytes]:
    """Needles occurring in ``data``: each 3-byte prefix is found with bytes.find (fast on 100 MB of weights)."""
    by_prefix: dict[bytes, list[bytes]] = {}
    for n in needles:
        by_prefix.setdefault(n[:3], []).append(n)
    out = []
    for prefix, group in by_prefix.items():
        i = data.find(prefix)
        while i != -1 and group:
            out += [n for n in group if data.startswith(n, i)]
            group = [n for n in group if n not in out]
            i = data.find(prefix, i + 1)
    return out


def test_the_labels_table_is_not_copied(study):
    table = (study["base"] / "labels.csv").read_bytes()
    for path in study["run"].rglob("*"):
        assert not (path.is_file() and path.read_bytes() == table)


def test_refuses_to_start_without_a_secret(study, tmp_path, monkeypatch):
    config = {**study["config"], "name": "nosecret", "data": {**study["config"]["data"], "secret_file": None}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.delenv("MEDLENS_DEID_SECRET", raising=False)
    res = subprocess.run([sys.executable, "-m", "medlens.cli", "run", "s.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and "needs a secret" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_labels_table_without_matching_key_stops(study, tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("AccessionNumber,label\nNOPE1,0\nNOPE2,1\n")
    config = {**study["config"], "name": "badlabels", "data": {**study["config"]["data"], "labels": str(bad)}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    res = subprocess.run([sys.executable, "-m", "medlens.cli", "run", "s.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "none of its 2 AccessionNumber values matches any of the" in " ".join(res.stderr.split())
