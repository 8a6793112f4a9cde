"""De-identification of datasets built in code: consistency, options, audit, edge inputs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pydicom
import pytest
from helpers.dicom import SECRET, make_ds, save, with_reference
from typer.testing import CliRunner

from medlens.dicom import DeidContext, DeidOptions, deidentify_dataset, deidentify_tree, verify_dataset, verify_tree
from medlens.errors import DataError, MedlensError


def _run(tmp_path, files: dict, options: DeidOptions = DeidOptions(), name: str = "run"):
    src = tmp_path / "in"
    for rel, ds in files.items():
        if isinstance(ds, bytes):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(ds)
        else:
            save(ds, src / rel)
    run = tmp_path / name
    summary = deidentify_tree(src, run / "out", options=options, secret=SECRET, map_path=run / "pseudonyms.csv",
                              audit_path=run / "audit.jsonl")
    outs = {p.name: pydicom.dcmread(p) for p in sorted((run / "out").rglob("*.dcm"))}
    return summary, run, outs


def test_same_patient_same_pseudonym_shift_and_uid_references(tmp_path):
    a = make_ds(sop_uid="1.2.3.100", study_date="20200315")
    b = with_reference(make_ds(sop_uid="1.2.3.101", study_date="20200320"), target_sop="1.2.3.100")
    other = make_ds(patient_id="PID-9", patient_name="Roe^Rick", sop_uid="1.2.3.102", study_uid="1.2.3.7")
    opts = DeidOptions(retain_long_modified_dates=True)
    _, run, outs = _run(tmp_path, {"x/a.dcm": a, "y/b.dcm": b, "c.dcm": other}, opts)
    by_sop = {str(ds.SOPInstanceUID): ds for ds in outs.values()}
    ctx = DeidContext(SECRET)
    da, db = by_sop[ctx.uid("1.2.3.100")], by_sop[ctx.uid("1.2.3.101")]
    assert da.PatientID == db.PatientID != by_sop[ctx.uid("1.2.3.102")].PatientID
    assert da.PatientID != "PID-4711" and da.PatientName == ""
    assert da.StudyInstanceUID == db.StudyInstanceUID and da.StudyInstanceUID.startswith("2.25.")
    assert all(len(str(ds.SOPInstanceUID)) <= 64 for ds in outs.values())
    assert DeidContext(b"another-secret-0123456789").uid("1.2.3.100") != da.SOPInstanceUID
    assert db.ReferencedImageSequence[0].ReferencedSOPInstanceUID == da.SOPInstanceUID
    assert da.file_meta.MediaStorageSOPInstanceUID == da.SOPInstanceUID
    # one shift per patient: the 5-day gap survives, the dates themselves do not
    shift_a = (np.datetime64("2020-03-15") - np.datetime64(f"{da.StudyDate[:4]}-{da.StudyDate[4:6]}-{da.StudyDate[6:]}"))
    shift_b = (np.datetime64("2020-03-20") - np.datetime64(f"{db.StudyDate[:4]}-{db.StudyDate[4:6]}-{db.StudyDate[6:]}"))
    assert shift_a == shift_b and shift_a != np.timedelta64(0, "D")
    assert da.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "PatientBirthDate" in da and da.PatientBirthDate == ""  # Z in the basic profile
    codes = {item.CodeValue for item in da.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107"}
    rows = [line.split(",") for line in (run / "pseudonyms.csv").read_text().splitlines()[1:]]
    assert {r[0] for r in rows} == {"PID-4711", "PID-9"}
    assert {r[1] for r in rows} == {da.PatientID, by_sop[ctx.uid("1.2.3.102")].PatientID}


def test_private_overlay_and_descriptions_removed(tmp_path):
    ds = with_reference(make_ds(sop_uid="1.2.3.5"), target_sop="1.2.3.4")
    ds, rows = deidentify_dataset(ds, DeidOptions(), SECRET)
    assert not [e for e in ds if e.tag.is_private]
    assert 0x60000010 not in ds and "StudyDescription" not in ds
    assert ds.InstitutionName == "ANONYMIZED"  # X/Z/D -> D (dummy), see COMBINED_RESOLUTION
    assert ds.AccessionNumber == "" and ds.ContentDate == "19000101"  # Z and the Z/D -> D dummy
    actions = {(r["tag"], r["action"]) for r in rows}
    assert ("(0010,0010)", "Z") in actions and ("(0008,1030)", "X") in actions and ("(0020,000D)", "U") in actions
    assert verify_dataset(ds, DeidOptions()) == []


def test_options_retain_uids_and_safe_private(tmp_path):
    ds = with_reference(make_ds(sop_uid="1.2.3.5"), target_sop="1.2.3.4")
    opts = DeidOptions(retain_uids=True, retain_safe_private=True, safe_private=("ACME 1.0:0009,01",),
                       retain_institution_identity=True, retain_long_full_dates=True)
    ds, _ = deidentify_dataset(ds, opts, SECRET)
    assert ds.SOPInstanceUID == "1.2.3.5" and ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert ds.InstitutionName == "St Example Hospital" and ds.StudyDate == "20200315"
    assert ds[0x00091001].value.startswith("private note")
    assert ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert verify_dataset(ds, opts) == []
    assert verify_dataset(ds, DeidOptions()) != []  # the same file fails under stricter options


def test_clean_descriptors_scrubs_known_identifiers():
    ds = make_ds()
    ds, _ = deidentify_dataset(ds, DeidOptions(clean_descriptors=True), SECRET)
    assert "Doe" not in ds.StudyDescription and "Chest" in ds.StudyDescription


def test_options_reject_unknown_and_conflicting():
    with pytest.raises(ValueError):
        DeidOptions(retain_everything=True)
    with pytest.raises(ValueError):
        DeidOptions(retain_long_full_dates=True, retain_long_modified_dates=True)
    with pytest.raises(DataError):
        DeidContext(b"short")


def test_verify_catches_leftovers(tmp_path):
    _, run, _ = _run(tmp_path, {"a.dcm": make_ds()})
    assert verify_tree(run / "out", DeidOptions()) == []
    path = next((run / "out").rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.PatientName = "Doe^Jane"
    ds.InstitutionName = "St Example Hospital"
    ds.add_new(0x00291010, "LO", "x")
    ds.save_as(path)
    problems = verify_tree(run / "out", DeidOptions())
    assert len(problems) == 3
    assert not any("Doe" in p or "Example" in p for p in problems)  # problems never quote values


def test_audit_never_holds_phi(tmp_path):
    planted = "Zyxwvut^Planted"
    ds = with_reference(make_ds(patient_name=planted, patient_id="MRN-55501"), target_sop="1.2.3.4")
    _, run, _ = _run(tmp_path, {"a.dcm": ds}, DeidOptions(clean_descriptors=True))
    text = (run / "audit.jsonl").read_text()
    for value in ("Zyxwvut", "MRN-55501", "St Example", "20200315", "19700101", "ACC998877", "1.2.3.4"):
        assert value not in text
    record = json.loads(text.splitlines()[0])
    assert record["status"] == "ok" and len(record["changes"]) > 10
    assert {"path", "tag", "keyword", "action", "rule"} <= set(record["changes"][0])


def test_bad_files_reported_others_unaffected(tmp_path):
    good = make_ds(sop_uid="1.2.3.1")
    no_pixels = make_ds(sop_uid="1.2.3.2")
    del no_pixels.PixelData
    no_pixels.SOPClassUID = no_pixels.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    raw = save(make_ds(sop_uid="1.2.3.3"), tmp_path / "tmp.dcm").read_bytes()
    files = {"good.dcm": good, "sr.dcm": no_pixels, "corrupt.dcm": raw[:400], "notes.txt": b"patient Doe, see scan",
             "garbage.dcm": b"\x00" * 128 + b"DICM" + bytes(range(256)) * 3}
    summary, run, outs = _run(tmp_path, files)
    reasons = dict((p.split("/")[-1], r) for p, r in summary.skipped)
    assert set(reasons) == {"corrupt.dcm", "notes.txt", "garbage.dcm"}
    assert "not DICOM" in reasons["notes.txt"] and "truncated" in reasons["corrupt.dcm"]
    assert "unreadable" in reasons["garbage.dcm"] or "truncated" in reasons["garbage.dcm"]
    assert len(outs) == 2 and [p.endswith("sr.dcm") for p in summary.no_pixel_data] == [True]
    assert summary.exit_code == 1
    solo, _, _ = _run(tmp_path / "solo", {"good.dcm": make_ds(sop_uid="1.2.3.1")})
    assert solo.exit_code == 0
    good_out = [ds for ds in outs.values() if "PixelData" in ds][0]
    assert good_out.PixelData == good.PixelData


def test_burned_in_quarantined_or_masked(tmp_path):
    us = make_ds(modality="US", sop_uid="1.2.3.9", pixels=np.full((8, 8), 500, np.uint16))
    summary, run, outs = _run(tmp_path, {"us.dcm": us})
    assert outs == {} and len(summary.quarantined) == 1 and "US" in summary.quarantined[0][1]
    assert list((run / "quarantine").rglob("*.dcm"))
    opts = DeidOptions(mask_regions=((0, 0, 4, 2),))
    summary, run, outs = _run(tmp_path, {"us.dcm": us}, opts, name="masked")
    ds = next(iter(outs.values()))
    arr = ds.pixel_array
    assert (arr[:2, :4] == 0).all() and (arr[2:, :] == 500).all() and summary.masked
    assert ds.BurnedInAnnotation == "NO"
    assert "113101" in {i.CodeValue for i in ds.DeidentificationMethodCodeSequence}


def test_map_inside_output_rejected(tmp_path):
    save(make_ds(), tmp_path / "in" / "a.dcm")
    with pytest.raises(DataError, match="outside"):
        deidentify_tree(tmp_path / "in", tmp_path / "out", options=DeidOptions(), secret=SECRET,
                        map_path=tmp_path / "out" / "map.csv", audit_path=tmp_path / "audit.jsonl")


def test_cli_exit_codes(tmp_path, monkeypatch):
    from medlens.cli.dicom import deid
    import typer

    app = typer.Typer()
    app.command("deid")(deid)
    app.command("other")(lambda: None)
    save(make_ds(), tmp_path / "in" / "a.dcm")
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    runner = CliRunner()
    ok = runner.invoke(app, ["deid", str(tmp_path / "in"), str(tmp_path / "r" / "out"), "--secret-file", str(secret), "--verify"])
    assert ok.exit_code == 0, ok.output
    assert runner.invoke(app, ["deid", "--verify", str(tmp_path / "r" / "out")]).exit_code == 0
    (tmp_path / "in" / "junk.bin").write_bytes(b"\x00" * 10)
    warn = runner.invoke(app, ["deid", str(tmp_path / "in"), str(tmp_path / "r2" / "out"), "--secret-file", str(secret)])
    assert warn.exit_code == 1 and "skipped" in warn.output
    bad = runner.invoke(app, ["deid", str(tmp_path / "in"), str(tmp_path / "r3" / "out"), "--secret-file",
                              str(secret), "--option", "retain-uid"])
    assert isinstance(bad.exception, MedlensError) and "retain-uids" in str(bad.exception)
    # the project CLI turns a MedlensError into exit status 2
    from medlens import cli

    monkeypatch.setattr(sys, "argv", ["medlens", "deid", str(tmp_path / "missing"), str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
