"""An independent scanner of de-identified DICOM: what it finds is reported, whatever produced the file.

It does not re-run the de-identifier. It reads every element at every depth, file meta
included, and reports:

- private attributes (unless kept as safe private under the run's options), curves and overlays;
- any free-text value (AE LO LT PN SH ST UC UT UR) of an attribute that is not on the safe
  list, not retained by the run's options and not an empty or dummy value; a CodeMeaning
  unless it is blank or the standard's meaning of its code;
- dates and times, unless the run kept or shifted them; UIDs outside the standard's root
  that are not keyed hashes (``2.25.``); elements of unknown VR;
- attributes Table E.1-1 removes (X) or empties (Z) that are still there;
- file meta beyond version, class, instance and syntax, or an instance UID that differs
  from the dataset's;
- burned-in text flags in the output folder (not in quarantine);
- with the run's secret and audit log: any string equal to an original identifying
  value of the input (compared as keyed hashes; the audit holds no value).

A file this passes holds none of the original identifying strings the audit recorded
and no free text outside the safe list.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.dataset import Dataset

from medlens.dicom.deid import _ADDED, DUMMY, PSEUDONYM_PATTERN, DeidContext, DeidOptions, _values, burned_in_reason
from medlens.dicom.reader import read_dicom_file
from medlens.dicom.safelist import CODE_MEANING, DATE_VRS, FREE_TEXT_VRS, is_standard_uid, safe_attributes, standard_meaning
from medlens.dicom.table import actions_for, is_curve_or_overlay
from medlens.errors import DataError

_META_ALLOWED = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})
_STRING_VRS = FREE_TEXT_VRS | DATE_VRS | {"UI", "CS"}  # numbers (DS, IS) are not compared


#: Direct identifiers of the patient and the visit whose values must never reappear (besides names, dates, UIDs).
DIRECT_IDENTIFIERS = frozenset({
    0x00100020, 0x00101000, 0x00080050, 0x00101040, 0x00102154, 0x00101090, 0x00380010, 0x00401001,
    0x00081010, 0x00181000,
})


def original_values(elem) -> list[str]:
    """Normalised identifying values of one element: what must not reappear in any output.

    Person names, the direct identifiers of :data:`DIRECT_IDENTIFIERS` (patient and
    other IDs, accession, address, telephone, record locator, admission, requested
    procedure, station, device serial), dates (DA/DT) and UIDs outside the standard's
    root; whole values, stripped and upper-cased, of at least four characters (dates
    eight). Descriptions, institution names and study IDs are not in the set: in the
    public corpora their values ("CHEST", "GE MEDICAL SYSTEMS", "1234") legitimately
    reappear as codes and manufacturers; the free-text check covers them.
    """
    vr = elem.VR
    if not (vr in ("PN", "DA", "DT", "UI") or (int(elem.tag) in DIRECT_IDENTIFIERS and vr in FREE_TEXT_VRS)):
        return []
    out = []
    for v in _values(elem):
        text = str(v).strip().upper()
        if not text or text == DUMMY.get(vr):
            continue
        if vr == "UI":
            if not is_standard_uid(text):
                out.append(text)
        elif len(text) >= (8 if vr in ("DA", "DT") else 4):
            out.append(text)
    return out


def identifying_values(ds: Dataset, options: DeidOptions) -> set[str]:
    """Every :func:`original_values` of an input dataset (nested and file meta included).

    Taken from the input before de-identification, independently of the action table, so
    the verifier also catches what a de-identifier forgot. Left out: attributes the safe
    list or the run's options keep (their values stay by design) and, with the full-dates
    option, dates.
    """
    actions, safe, retained = actions_for(options.enabled), safe_attributes(), options.retained
    out: set[str] = set()
    meta = getattr(ds, "file_meta", None)
    for elem in list(ds.iterall()) + (list(meta) if meta is not None else []):
        entry = actions.get(elem.tag)
        if elem.tag in safe or elem.tag in retained or (entry and entry[0] in ("K", "C")):
            continue
        if options.retain_long_full_dates and elem.VR in ("DA", "DT"):
            continue
        out.update(original_values(elem))
    return out


def _is_placeholder(elem, text: str) -> bool:
    """Empty, a dummy of medlens's, or the pseudonym in Patient ID."""
    text = text.strip()
    if not text or text == DUMMY.get(elem.VR):
        return True
    return elem.tag == 0x00100020 and bool(PSEUDONYM_PATTERN.fullmatch(text))


class _Scanner:
    def __init__(self, options: DeidOptions, secret: bytes | None, hashes: frozenset[str]):
        self.options = options
        self.actions = actions_for(options.enabled)
        self.safe = safe_attributes()
        self.retained = options.retained
        self.ctx = DeidContext(secret) if secret is not None and hashes else None
        self.hashes = hashes
        self.safe_creators = ({s.split(":", 1)[0] for s in options.safe_private}
                              if options.retain_safe_private else set())
        self.dates_kept = options.retain_long_full_dates or options.retain_long_modified_dates

    def dataset(self, ds: Dataset, where: str, *, output_folder: bool) -> list[str]:
        problems: list[str] = []
        self._visit(ds, "", False, problems)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            for elem in meta:
                name = f"meta.({elem.tag.group:04X},{elem.tag.element:04X})"
                if int(elem.tag) not in _META_ALLOWED:
                    problems.append(f"{name}: file meta attribute remains")
                if int(elem.tag) not in (0x00020012, 0x00020013):  # the writer's own implementation UID and name
                    self._match_originals(elem, name, problems)
            sop = str(ds.get("SOPInstanceUID", "") or "")
            if sop and str(meta.get("MediaStorageSOPInstanceUID", sop)) != sop:
                problems.append("meta.(0002,0003): Media Storage SOP Instance UID differs from SOP Instance UID")
        if str(ds.get("PatientIdentityRemoved", "")) != "YES":
            problems.append("(0012,0062): Patient Identity Removed is not YES")
        if output_folder:
            reason = burned_in_reason(ds, self.options)
            if reason:
                problems.append(f"(0028,0301): may carry burned-in text ({reason}) but is not in quarantine")
        return [f"{where}{p}" for p in problems]

    def _visit(self, d: Dataset, path: str, cleaned: bool, problems: list[str]) -> None:
        for elem in d:
            tag = elem.tag
            name = f"{path}({tag.group:04X},{tag.element:04X})"
            if tag.is_private:
                creator_tag = (tag.group << 16) | (tag.element >> 8 if tag.element >= 0x100 else tag.element)
                creator = str(d[creator_tag].value).strip() if creator_tag in d else ""
                if creator not in self.safe_creators:
                    problems.append(f"{name}: private attribute remains")
                continue
            if is_curve_or_overlay(tag):
                problems.append(f"{name}: curve/overlay attribute remains")
                continue
            entry = self.actions.get(tag)
            action = entry[0] if entry else None
            if elem.VR == "SQ":
                if action == "X":
                    problems.append(f"{name}: must be removed ({entry[1]})")
                elif action == "Z" and len(elem.value):
                    problems.append(f"{name}: must be empty ({entry[1]})")
                for i, item in enumerate(elem.value):
                    self._visit(item, f"{name}[{i}].", cleaned or action == "C", problems)
                continue
            self._match_originals(elem, name, problems)
            problem = self._element(d, elem, action, entry, cleaned)
            if problem:
                problems.append(f"{name}: {problem}")

    def _element(self, d: Dataset, elem, action: str | None, entry, cleaned: bool) -> str | None:
        tag, vr = elem.tag, elem.VR
        texts = [str(v) for v in _values(elem)]
        live = [t for t in texts if not _is_placeholder(elem, t)]
        if action == "X" and tag not in _ADDED:
            return f"must be removed ({entry[1]})"
        if action == "Z" and live:
            return f"must be empty ({entry[1]})"
        if action in ("K", "C") or tag in self.retained:
            return None  # kept or cleaned by the run's options; the original-value check still applies
        if vr == "UI":
            bad = [t for t in live if not (t.startswith("2.25.") or is_standard_uid(t))]
            return "UID not replaced" if bad and tag not in self.safe else None
        if tag in _ADDED:
            return None
        if vr in DATE_VRS:
            return None if not live or self.dates_kept else "date or time remains"
        if vr == "UN":
            return None if tag in self.safe else "element of unknown VR remains"
        if vr not in FREE_TEXT_VRS or not live:
            return None
        if tag == CODE_MEANING:
            return None if live == [standard_meaning(d)] else "code meaning is not the standard's meaning of its code"
        if tag in self.safe or cleaned:
            return None
        return ("must hold a dummy value" if action == "D" else "free text not on the safe list") + f" ({elem.keyword or 'unknown attribute'})"

    def _match_originals(self, elem, name: str, problems: list[str]) -> None:
        if self.ctx is None or elem.VR not in _STRING_VRS or (elem.VR == "UI" and elem.tag in self.safe):
            return
        for value in {str(v).strip().upper() for v in _values(elem)}:
            if self.ctx.value_hash(value) in self.hashes:
                problems.append(f"{name}: holds an original identifying value of the input")
                return


def verify_dataset(ds: Dataset, options: DeidOptions, where: str = "", *, secret: bytes | None = None,
                   hashes: frozenset[str] = frozenset(), output_folder: bool = False) -> list[str]:
    """Problems left in one de-identified dataset, as ``<where><tag path>: <what>`` (never a value).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A de-identified dataset, with its ``file_meta`` when it has one.
    options : DeidOptions
        The options it was made with: they decide only what the run chose to keep.
    secret, hashes : optional
        The run's secret and the keyed hashes of original values from its audit log;
        with both, any output string equal to an original value is reported.
    output_folder : bool, default=False
        True for files meant for use (not quarantine): burned-in text flags are reported.
    """
    return _Scanner(options, secret, hashes).dataset(ds, where, output_folder=output_folder)


def audit_hashes(audit_path: Path | str) -> frozenset[str]:
    """The keyed hashes of original values recorded by ``medlens deid`` (empty if no audit)."""
    path = Path(audit_path)
    if not path.is_file():
        return frozenset()
    out: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.update(json.loads(line).get("value_hashes", []))
    return frozenset(out)


def verify_tree(out_dir: Path | str, options: DeidOptions, *, secret: bytes | None = None,
                audit_path: Path | str | None = None) -> list[str]:
    """Scan a de-identified folder (and its quarantine) and list what must not be there.

    Parameters
    ----------
    out_dir : path
        Output of :func:`~medlens.dicom.tree.deidentify_tree`; every file is read, whatever its name.
    options : DeidOptions
        The options it ran with (what the run chose to keep).
    secret : bytes, optional
        The run's secret. With it and the audit log, every string of every file is checked
        against the original identifying values; without it, that check is skipped.
    audit_path : path, optional
        Default ``<out_dir>/../deid_audit.jsonl``.

    Returns
    -------
    list of str
        One line per problem, ``<file>: <tag path>: <what>``; empty when the folder is clean.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DataError(f"{out_dir} is not a folder; pass the output of `medlens deid IN OUT`")
    hashes = audit_hashes(audit_path or out_dir.parent / "deid_audit.jsonl") if secret is not None else frozenset()
    scanner = _Scanner(options, secret, hashes)
    problems: list[str] = []
    quarantine = out_dir.parent / "quarantine"
    for root in [out_dir] + ([quarantine] if quarantine.is_dir() else []):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = f"{path.relative_to(root.parent).as_posix()}: "
            try:
                ds = read_dicom_file(path)
            except DataError as exc:
                problems.append(f"{rel}{exc}")
                continue
            problems += scanner.dataset(ds, rel, output_folder=root == out_dir)
    return problems


def value_check_possible(secret: bytes | None, audit_path: Path | str) -> bool:
    """Whether :func:`verify_tree` can compare against original values (secret and audit both there)."""
    return secret is not None and bool(audit_hashes(audit_path))

