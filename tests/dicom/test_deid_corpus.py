"""De-identify every file of pydicom-data and deid-data, then check the result independently."""

from __future__ import annotations

import hashlib
import json
import re
import stat
from pathlib import Path

import pydicom
import pytest

from medlens.dicom import DeidOptions, deidentify_tree, verify_tree
from medlens.dicom.reader import quiet_pydicom

from helpers.dicom import SECRET, SHARED


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]


def _output_path(run: Path, rec: dict) -> Path:
    return run / ("quarantine" if rec["status"] == "quarantined" else "out") / rec["output"]


def test_every_file_accounted_for(corpus):
    s = corpus["summary"]
    n_in = len(list(corpus["in"].iterdir()))
    assert len(s.written) + len(s.quarantined) + len(s.skipped) == n_in
    assert len(s.written) > 150  # most of the corpus is real DICOM
    assert s.quarantined, "ultrasound / secondary-capture files must be quarantined for burned-in text"
    reasons = {Path(p).name.split("_", 1)[1]: r for p, r in s.skipped}
    assert all(r.startswith(("not DICOM", "truncated", "unreadable")) for r in reasons.values())
    assert reasons["README.txt"].startswith("not DICOM") and reasons["MR_truncated.dcm"].startswith("truncated")
    assert len(s.skipped) < 20, sorted(reasons)
    assert s.exit_code == 1


def test_verify_finds_no_problem(corpus):
    """With the secret too: no output string equals an original identifying value (DICOMDIR file IDs included)."""
    assert verify_tree(corpus["run"] / "out", DeidOptions(), secret=SECRET, audit_path=corpus["run"] / "audit.jsonl") == []


def test_no_table_tag_survives_against_reference(corpus):
    """Independent of medlens's table: pure X/Z rows of the reference, private tags, overlays."""
    ref = SHARED / "reference" / "dicom" / "confidentiality_profile_attributes.json"
    if not ref.is_file():
        pytest.skip(f"reference table not found at {ref}")
    rows = [r for r in json.loads(ref.read_text()) if re.fullmatch(r"\([0-9A-F]{4},[0-9A-F]{4}\)", r["tag"])]
    must_go = {int(r["tag"][1:5] + r["tag"][6:10], 16) for r in rows if r["basicProfile"] == "X"}
    must_empty = {int(r["tag"][1:5] + r["tag"][6:10], 16) for r in rows if r["basicProfile"] == "Z"}
    assert len(must_go) > 300 and len(must_empty) > 30
    bad = []
    files = [p for root in ("out", "quarantine") for p in (corpus["run"] / root).rglob("*.dcm")]
    assert len(files) > 150
    for path in files:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            elems = list(ds.iterall())
        for elem in elems:
            t = int(elem.tag)
            empty = elem.VM == 0 or elem.value in (None, "", b"") or (elem.VR == "SQ" and len(elem.value) == 0)
            if elem.tag.is_private or 0x5000 <= elem.tag.group <= 0x60FF and elem.tag.group & 0xFF00 in (0x5000, 0x6000):
                bad.append((path.name, elem.tag, "private/overlay"))
            elif t in must_go and t not in (0x00120063, 0x00120064):
                bad.append((path.name, elem.tag, "X"))
            elif t in must_empty and not empty:
                bad.append((path.name, elem.tag, "Z"))
    assert bad == []


def test_pixels_unchanged_and_patient_values_gone(corpus):
    by_hash = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in corpus["in"].iterdir()}
    checked = 0
    for rec in _records(corpus["run"]):
        if rec["status"] == "skipped":
            continue
        src = by_hash[rec["input_sha256"]]
        out = _output_path(corpus["run"], rec)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == rec["output_sha256"]
        with quiet_pydicom():
            before = pydicom.dcmread(src, force=True)
            after = pydicom.dcmread(out, force=True)
        if "PixelData" in before:
            assert after["PixelData"].value == before["PixelData"].value, src.name
            checked += 1
        data = out.read_bytes()
        for kw in ("PatientName", "PatientID"):
            value = str(before.get(kw, "") or "").strip()
            if len(value) >= 6 and value.upper() != "ANONYMIZED":
                assert value.encode() not in data, (src.name, kw)
        assert str(after.PatientIdentityRemoved) == "YES"
        assert after.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert checked > 100


def test_second_run_is_byte_identical(corpus, tmp_path):
    """Same secret, same bytes; here in one process, the first run in a pool of one per CPU."""
    run2 = tmp_path / "run2"
    deidentify_tree(corpus["in"], run2 / "out", options=DeidOptions(), secret=SECRET,
                    map_path=run2 / "pseudonyms.csv", audit_path=run2 / "audit.jsonl", workers=1)
    first = {p.relative_to(corpus["run"]): p.read_bytes() for p in corpus["run"].rglob("*") if p.is_file()}
    second = {p.relative_to(run2): p.read_bytes() for p in run2.rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)


def test_map_is_private_and_outside_output(corpus):
    map_path = corpus["run"] / "pseudonyms.csv"
    assert stat.S_IMODE(map_path.stat().st_mode) == 0o600
    lines = map_path.read_text().splitlines()
    assert lines[0] == "patient_id,pseudonym,date_shift_days" and len(lines) > 5
    assert not list((corpus["run"] / "out").rglob("*.csv"))
