"""``medlens deid``: de-identify a DICOM folder, or verify one (registered in :mod:`medlens.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from medlens.errors import DataError, did_you_mean


def _options(names: list[str], masks: list[str], retain: list[str]):
    from medlens.dicom.deid import DeidOptions
    from medlens.dicom.table import OPTIONS

    fields = {}
    for name in names:
        key = name.strip().replace("-", "_")
        if key not in OPTIONS:
            raise DataError(f"unknown de-identification option {name!r}; choose from "
                            f"{[k.replace('_', '-') for k in OPTIONS]}.{did_you_mean(key, list(OPTIONS))}")
        fields[key] = True
    regions = []
    for text in masks:
        try:
            x0, y0, x1, y1 = (int(v) for v in text.split(","))
        except ValueError:
            raise DataError(f"--mask takes x0,y0,x1,y1 in pixels, got {text!r}") from None
        regions.append((x0, y0, x1, y1))
    try:
        return DeidOptions(**fields, mask_regions=tuple(regions), retain=tuple(retain))
    except ValueError as exc:
        raise DataError(f"invalid de-identification options: {exc}") from None


def deid(
    input_dir: Annotated[Path, typer.Argument(help="Folder of DICOM files (or, with --verify alone, the output to check).")],
    output_dir: Annotated[Optional[Path], typer.Argument(help="Folder for the de-identified files.")] = None,
    secret_file: Annotated[Optional[Path], typer.Option(help="File holding the hashing secret (>= 16 bytes). Same secret, same output.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", help="PS3.15 option, repeatable: retain-uids, retain-long-modified-dates, clean-descriptors, ...")] = None,
    mask: Annotated[Optional[list[str]], typer.Option(help="x0,y0,x1,y1 rectangle blanked in images flagged for burned-in text; repeatable.")] = None,
    map_file: Annotated[Optional[Path], typer.Option("--map", help="pseudonyms.csv (default: beside OUTPUT_DIR, mode 0600).")] = None,
    audit: Annotated[Optional[Path], typer.Option(help="Audit JSONL (default: deid_audit.jsonl beside OUTPUT_DIR).")] = None,
    retain: Annotated[Optional[list[str]], typer.Option(help="Attribute outside Table E.1-1 to keep as it is (keyword or (gggg,eeee)); repeatable. Everything else outside the safe list is removed.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Processes working in parallel (default: one per CPU). The output does not depend on it.")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Scan the output independently: free text outside the safe list, dates, UIDs, private tags, overlays, file meta; with --secret-file also every original value of the audit.")] = False,
) -> None:
    """De-identify DICOM files with the PS3.15 Annex E Basic Profile, or verify an output folder.

    `medlens deid IN OUT --secret-file S [--option ...]` writes OUT, the audit log and the
    pseudonym map; `medlens deid --verify OUT --secret-file S` checks an existing output
    with the options recorded in its audit log.

    Attributes the table does not name are handled in safe-list mode: free text, dates and
    unknown elements outside the packaged safe list are removed, UIDs replaced, code
    meanings re-derived from their codes. --retain keeps named ones.

    Exit status: 0 every DICOM file de-identified (or verification clean); 1 finished but
    needs attention: files skipped (non-DICOM or unreadable), quarantined for burned-in
    text, or verification problems found; 2 bad input (missing folder or secret, unknown
    option).
    """
    from medlens.dicom.tree import deidentify_tree
    from medlens.dicom.verify import verify_tree

    options = _options(option or [], mask or [], retain or [])
    if output_dir is None:
        if not verify:
            raise DataError("give an output folder (`medlens deid IN OUT`) or --verify OUT")
        out = input_dir
        audit_path = audit or out.parent / "deid_audit.jsonl"
        if not (option or retain) and audit_path.exists():  # verify with the options the run used
            first = audit_path.read_text(encoding="utf-8").splitlines()[:1]
            if first:
                from medlens.dicom.deid import DeidOptions

                options = DeidOptions(**json.loads(first[0])["options"])
        secret = _secret(secret_file) if secret_file is not None else None
        if secret is None:
            typer.echo("original-value check skipped: give --secret-file (the run's secret) to compare every string "
                       "with the audit's hashes of the input's identifying values")
        _report_problems(verify_tree(out, options, secret=secret, audit_path=audit_path))
        return
    if secret_file is None:
        raise DataError("--secret-file is required: a file with at least 16 random bytes, kept outside the output "
                        "(e.g. `python -c \"import secrets;print(secrets.token_hex(32))\" > secret`)")
    secret = _secret(secret_file)
    summary = deidentify_tree(
        input_dir, output_dir, options=options, secret=secret,
        map_path=map_file or output_dir.parent / "pseudonyms.csv",
        audit_path=audit or output_dir.parent / "deid_audit.jsonl", workers=workers,
    )
    typer.echo(f"de-identified {len(summary.written)} files into {summary.out_dir} "
               f"({len(summary.no_pixel_data)} without pixel data, {len(summary.masked)} masked)")
    for path, reason in summary.quarantined:
        typer.echo(f"quarantined {path}: {reason} -> {summary.quarantine_dir}")
    for path, reason in summary.skipped:
        typer.echo(f"skipped {path}: {reason}")
    typer.echo(f"audit: {summary.audit_path}; pseudonym map: {summary.map_path}")
    code = summary.exit_code
    if verify:
        problems = verify_tree(output_dir, options, secret=secret, audit_path=summary.audit_path)
        for line in problems:
            typer.echo(f"problem {line}")
        code = max(code, 1 if problems else 0)
    if code:
        raise typer.Exit(code)


def _secret(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"--secret-file {path} does not exist; give the file that holds the hashing secret")
    return path.read_bytes().strip()


def _report_problems(problems: list[str]) -> None:
    for line in problems:
        typer.echo(f"problem {line}")
    typer.echo(f"verification: {len(problems)} problem(s)")
    if problems:
        raise typer.Exit(1)
