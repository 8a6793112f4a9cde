"""Safe-list mode: what may stay outside Table E.1-1, and the standard meanings of codes.

The list itself is data (``safe_attributes.json``, one ``why`` per entry). The
de-identifier keeps those attributes and removes every other free-text, date/time,
unknown-VR attribute the table does not name; the verifier (:mod:`medlens.dicom.verify`)
reads the same list to decide what it may leave unreported.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from pydicom.tag import BaseTag

from medlens.dicom.table import parse_tag

#: Value representations that carry free text (PS3.5 6.2); CS is coded, kept.
FREE_TEXT_VRS = frozenset({"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
DATE_VRS = frozenset({"DA", "DT", "TM"})
#: Root of the UIDs the standard itself defines (SOP classes, transfer syntaxes, ...).
STANDARD_UID_ROOT = "1.2.840.10008."
CODE_MEANING = BaseTag(0x00080104)
_CODE_VALUES = ("CodeValue", "LongCodeValue", "URNCodeValue")


@lru_cache(maxsize=1)
def safe_attributes() -> dict[BaseTag, dict]:
    """Tag -> entry (``keyword``, ``why``) of the packaged safe list."""
    data = json.loads(resources.files("medlens.dicom").joinpath("safe_attributes.json").read_text(encoding="utf-8"))
    return {parse_tag(e["tag"]): e for e in data["attributes"]}


def is_standard_uid(value: str) -> bool:
    """True for UIDs under the DICOM root (classes, syntaxes, the standard's own codes)."""
    return str(value).startswith(STANDARD_UID_ROOT)


@lru_cache(maxsize=1)
def _meanings() -> dict[tuple[str, str], str]:
    from pydicom.sr._concepts_dict import concepts  # ~15,000 codes of the standard; loaded on first use

    return {(scheme, value): meaning
            for scheme, names in concepts.items() for codes in names.values()
            for value, (meaning, _) in codes.items()}


def standard_meaning(item) -> str:
    """The standard's meaning of the code in ``item`` (a code sequence item), or ``""``.

    Looked up by coding scheme designator and code value in the code dictionaries
    pydicom ships (DCM, SCT, LN, UCUM, ...); never taken from the item's own CodeMeaning.
    """
    scheme = str(item.get("CodingSchemeDesignator", "") or "").strip()
    for keyword in _CODE_VALUES:
        value = str(item.get(keyword, "") or "").strip()
        if value:
            return _meanings().get((scheme, value), "")
    return ""
