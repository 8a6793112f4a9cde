"""Issue 16: real DICOM files with planted identifiers, de-identified as a user runs it, then attacked.

The corpus (``helpers.adversarial``) plants unique strings in SR trees three deep, code
meanings, graphic annotations, file meta, device and procedure text, private sequences,
retired and unknown attributes, dates and UIDs outside Table E.1-1, in UTF-8 and Latin-1,
in explicit, implicit, deflated and meta-less files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pydicom
import pytest
from helpers.adversarial import build, planted_hits, readable_bytes
from helpers.dicom import SECRET
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from typer.testing import CliRunner

from medlens.dicom import DeidOptions, deidentify_tree, verify_tree
from medlens.dicom.safelist import is_standard_uid, safe_attributes
from medlens.dicom.reader import quiet_pydicom

pytest.importorskip("deid_data", reason="deid-data (a test dependency) provides part of the corpus")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """The corpus de-identified by ``medlens deid IN OUT --secret-file S --verify``."""
    from medlens.cli import app

    base = tmp_path_factory.mktemp("adversarial")
    corpus = build(base / "in")
    secret = base / "secret"
    secret.write_bytes(SECRET)
    result = CliRunner().invoke(app, ["deid", str(base / "in"), str(base / "run" / "out"), "--secret-file", str(secret),
                                      "--verify"])
    records = [json.loads(line) for line in (base / "run" / "deid_audit.jsonl").read_text().splitlines()]
    by_input = {}
    for rec in records:
        name = next(p.name for p in corpus.folder.iterdir() if hashlib.sha256(p.read_bytes()).hexdigest() == rec["input_sha256"])
        by_input[name] = base / "run" / "out" / rec["output"]
    return {"base": base, "corpus": corpus, "result": result, "records": records, "out": by_input, "secret": secret}


def _read(path: Path):
    with quiet_pydicom():
        return pydicom.dcmread(path, force=True)


def _strings(ds) -> list[str]:
    elems = list(ds.iterall()) + (list(ds.file_meta) if getattr(ds, "file_meta", None) else [])
    out = []
    for e in elems:
        if e.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN") or e.value is None:
            continue
        out += [str(v) for v in (e.value if e.VM > 1 else [e.value])]
    return out


def test_cli_wrote_every_file_and_verify_passed(run):
    res = run["result"]
    assert res.exit_code == 0, res.output
    assert "problem" not in res.output
    assert [r["status"] for r in run["records"]] == ["ok"] * len(list(run["corpus"].folder.glob("*.dcm")))
    outputs = list(run["out"].values())
    assert len(set(outputs)) == len(outputs) == 7 and all(p.is_file() for p in outputs)  # none lost or overwritten


def test_no_planted_string_in_any_output_byte(run):
    corpus = run["corpus"]
    assert len(corpus.cores) > 200
    for path in (run["base"] / "run").rglob("*"):
        if path.is_file() and path.name != "pseudonyms.csv":  # the map is the key, kept apart by design
            data = readable_bytes(path) if path.suffix == ".dcm" else path.read_bytes()
            assert planted_hits(data, corpus) == [], path.name


def test_the_inputs_do_hold_what_was_planted(run):
    corpus = run["corpus"]
    for path in corpus.folder.iterdir():
        assert len(set(planted_hits(readable_bytes(path), corpus))) > 30, path.name


def test_no_private_overlay_or_curve_and_code_meanings_rederived(run):
    for name, path in run["out"].items():
        ds = _read(path)
        tags = [e.tag for e in ds.iterall()]
        assert not [t for t in tags if t.is_private], name
        assert not [t for t in tags if 0x5000 <= t.group <= 0x50FF or 0x6000 <= t.group <= 0x60FF], name
        assert ds.ConceptNameCodeSequence[0].CodeMeaning == "Diagnostic Imaging Report"  # LOINC 18748-4, from the standard
        assert ds.ProcedureCodeSequence[0].CodeMeaning == ""  # a local code: blanked
        assert ds.BodyPartExamined == "ANONYMIZED"  # held the patient's surname
        deep = ds.ContentSequence[0].ContentSequence[0].ContentSequence[0]
        assert deep.TextValue == "ANONYMIZED" and deep.ConceptNameCodeSequence[0].CodeValue == "121071"
        if ds.get("file_meta"):
            assert set(ds.file_meta.keys()) <= {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012,
                                                0x00020013}
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_no_original_date_or_uid(run):
    dates, uids = set(), set()
    safe = safe_attributes()
    for path in run["corpus"].folder.iterdir():
        ds = _read(path)
        for e in list(ds.iterall()) + (list(ds.file_meta) if getattr(ds, "file_meta", None) else []):
            values = [str(v).strip() for v in (e.value if e.VM > 1 else [e.value])] if e.value is not None else []
            if e.VR in ("DA", "DT"):
                dates.update(v for v in values if len(v) >= 8)
            elif e.VR == "UI" and e.tag not in safe:
                uids.update(v for v in values if v and not is_standard_uid(v) and v != PYDICOM_IMPLEMENTATION_UID)
    assert len(dates) > 10 and len(uids) > 20
    for name, path in run["out"].items():
        strings = set(_strings(_read(path)))
        assert not dates & strings, name
        data = readable_bytes(path)
        assert [u for u in uids if u.encode() in data] == [], name


def test_uid_references_follow_the_new_uids(run):
    a, b = _read(run["out"]["A.dcm"]), _read(run["out"]["B.dcm"])
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert str(a.SOPInstanceUID).startswith("2.25.")


def _attack(run, tmp_path: Path, case: str, change) -> tuple[str, list[str]]:
    out = tmp_path / "run" / "out"
    shutil.copytree(run["base"] / "run", tmp_path / "run")
    target = out / run["out"][case].relative_to(run["base"] / "run" / "out")
    ds = _read(target)
    change(ds)
    ds.save_as(target, enforce_file_format=True)
    rel = target.relative_to(tmp_path / "run").as_posix()
    return rel, verify_tree(out, DeidOptions(), secret=SECRET)


def _set_deep_text(ds) -> None:
    ds.ContentSequence[0].ContentSequence[0].ContentSequence[0].TextValue = "Seen: QZE03XJ"


def _set_meaning(ds) -> None:
    ds.ConceptNameCodeSequence[0].CodeMeaning = "QZE04XJ"


def _set_ae(ds) -> None:
    ds.file_meta.SourceApplicationEntityTitle = "QZE05XJ"


def _set_private(ds) -> None:
    ds.private_block(0x0009, "QZ ATTACK", create=True).add_new(0x01, "LO", "QZE06XJ")


@pytest.mark.parametrize(("change", "tag_path"), [
    (_set_deep_text, "(0040,A730)[0].(0040,A730)[0].(0040,A730)[0].(0040,A160)"),
    (_set_meaning, "(0040,A043)[0].(0008,0104)"),
    (_set_ae, "meta.(0002,0016)"),
    (_set_private, "(0009,0010)"),
], ids=["text-value-three-deep", "code-meaning", "file-meta-ae-title", "private-tag"])
def test_verify_names_file_and_tag_path_of_each_leak(run, tmp_path, change, tag_path):
    rel, problems = _attack(run, tmp_path, "E.dcm", change)
    assert [p for p in problems if p.startswith(f"{rel}: {tag_path}:")], problems
    assert all(p.startswith(rel) for p in problems)  # nothing else reported


def test_verify_finds_an_original_value_moved_into_a_kept_attribute(run, tmp_path):
    def move(ds):
        ds.Manufacturer = "QZA03XJ"  # the input's Patient ID, now in a safe-listed attribute

    rel, problems = _attack(run, tmp_path, "A.dcm", move)
    assert problems == [f"{rel}: (0008,0070): holds an original identifying value of the input"]


def test_verify_cli_names_problem_and_exits_1(run, tmp_path):
    from medlens.cli import app

    rel, _ = _attack(run, tmp_path, "E.dcm", _set_deep_text)
    res = CliRunner().invoke(app, ["deid", "--verify", str(tmp_path / "run" / "out"), "--secret-file", str(run["secret"])])
    assert res.exit_code == 1 and f"problem {rel}: (0040,A730)[0]" in res.output, res.output


def test_table_only_mode_leaks_and_the_verifier_catches_it(run, tmp_path):
    """Without safe-list mode (what medlens did before issue 16) the planted text stays; --verify says so."""
    opts = DeidOptions(safe_list=False)
    deidentify_tree(run["corpus"].folder, tmp_path / "out", options=opts, secret=SECRET,
                    map_path=tmp_path / "p.csv", audit_path=tmp_path / "deid_audit.jsonl")
    leaks = sum(len(planted_hits(readable_bytes(p), run["corpus"])) for p in (tmp_path / "out").rglob("*.dcm"))
    problems = verify_tree(tmp_path / "out", opts, secret=SECRET)
    assert leaks > 50
    for tag_path in ("(0040,A730)[0].(0040,A730)[0].(0040,A730)[0].(0040,A160)", "(0018,1010)", "(0008,1032)[0].(0008,0104)",
                     "(0070,0001)[0].(0070,0008)[0].(0070,0006)"):
        assert any(f": {tag_path}:" in p for p in problems), tag_path


def test_retain_keeps_a_named_attribute_and_refuses_table_ones(run, tmp_path):
    opts = DeidOptions(retain=("WindowCenterWidthExplanation",))
    deidentify_tree(run["corpus"].folder, tmp_path / "out", options=opts, secret=SECRET,
                    map_path=tmp_path / "p.csv", audit_path=tmp_path / "deid_audit.jsonl")
    kept = [_read(p).get("WindowCenterWidthExplanation") for p in (tmp_path / "out").rglob("*.dcm")]
    assert all(list(v)[0].startswith("QZ") for v in kept)
    assert verify_tree(tmp_path / "out", opts, secret=SECRET) == []
    with pytest.raises(ValueError, match="Table E.1-1"):
        DeidOptions(retain=("PatientName",))
