"""PS3.15 Annex E de-identification of one dataset: options, keyed pseudonyms, the walk.

One function, :func:`deidentify_dataset`, applies the packaged action table
(:mod:`medlens.dicom.table`) to a dataset and its sequences and returns one audit row per
change. Audit rows name the tag, where it sits and the action; they never hold a value.

Replacement values are keyed hashes (HMAC-SHA256 with the caller's secret), so the same
input UID, patient or date gives the same output in every file and every run, and nobody
without the secret can reverse or re-derive them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from medlens import __version__
from medlens.dicom.table import (
    CLEAN_PIXEL_CODE,
    OPTIONS,
    PROFILE_CODE,
    actions_for,
    is_curve_or_overlay,
)
from medlens.errors import DataError

TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
DUMMY = {
    "AE": "ANON", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000",
    "TM": "000000", "PN": "ANONYMIZED", "LO": "ANONYMIZED", "SH": "ANONYMIZED",
    "ST": "ANONYMIZED", "LT": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED",
    "UR": "http://anonymized.invalid", "IS": "0", "DS": "0",
}
_STRING_VRS = TEXT_VRS | {"DA", "DT", "TM", "DS", "IS", "UI"}
PSEUDONYM_PATTERN = re.compile(r"ML[0-9A-F]{12}")
_PATIENT_ID = BaseTag(0x00100020)
_ADDED = frozenset({BaseTag(0x00120062), BaseTag(0x00120063), BaseTag(0x00120064), BaseTag(0x00280303)})


class DeidOptions(BaseModel):
    """Options of the Basic Application Level Confidentiality Profile (PS3.15 E.3).

    Parameters
    ----------
    retain_safe_private, retain_uids, retain_device_identity, retain_institution_identity,
    retain_patient_characteristics, retain_long_full_dates, retain_long_modified_dates,
    clean_descriptors, clean_structured_content, clean_graphics : bool, default=False
        The options of Table E.1-1. Full and modified dates exclude each other; modified
        dates shift every date of a patient by the same keyed offset.
    safe_private : tuple of str, default=()
        Private attributes kept under ``retain_safe_private``, as ``"CREATOR:gggg,ee"``
        (``ee`` = element within the creator's block, hex). medlens ships no list of safe
        private attributes (PS3.15 Table E.3.10-1 is not in its data), so without entries
        every private attribute is removed even with the option on.
    mask_regions : tuple of (x0, y0, x1, y1), default=()
        Pixel rectangles blanked in images flagged for burned-in text; flagged images are
        then written to the output (Clean Pixel Data) instead of quarantine.
    burned_in_modalities : tuple of str, default=("US", "SC", "XA", "ES")
        Modalities presumed to carry burned-in text unless BurnedInAnnotation is "NO".
    date_shift_max_days : int, default=3650
        Modified dates move back by 1..``date_shift_max_days`` days per patient.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retain_safe_private: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    safe_private: tuple[str, ...] = ()
    mask_regions: tuple[tuple[int, int, int, int], ...] = ()
    burned_in_modalities: tuple[str, ...] = ("US", "SC", "XA", "ES")
    date_shift_max_days: int = 3650

    @field_validator("safe_private")
    @classmethod
    def _check_safe_private(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            if not re.fullmatch(r"[^:]+:[0-9A-Fa-f]{4},[0-9A-Fa-f]{2}", item):
                raise ValueError(f"safe_private entries look like 'CREATOR:0043,39', got {item!r}")
        return v

    @model_validator(mode="after")
    def _check_dates(self) -> "DeidOptions":
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise ValueError("choose one of retain_long_full_dates and retain_long_modified_dates")
        if self.date_shift_max_days < 1:
            raise ValueError("date_shift_max_days must be >= 1")
        return self

    @property
    def enabled(self) -> frozenset[str]:
        """Names of the Table E.1-1 options switched on."""
        return frozenset(name for name in OPTIONS if getattr(self, name))


@dataclass
class DeidContext:
    """Keyed hashing shared by all files of one run, and the pseudonym map it builds.

    Parameters
    ----------
    secret : bytes
        At least 16 bytes; keep it outside the output and the code repository.
    """

    secret: bytes
    pseudonyms: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise DataError(f"the de-identification secret must be at least 16 bytes, got {len(self.secret)}")

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def uid(self, value: str) -> str:
        """Replace a UID by ``2.25.<128-bit keyed hash>`` (at most 44 characters)."""
        return "2.25." + str(int.from_bytes(self._digest("uid", value.strip())[:16], "big"))

    def patient(self, key: str, max_days: int) -> tuple[str, int]:
        """Return ``(pseudonym, date shift in days)`` for a patient key and remember it."""
        digest = self._digest("patient", key)
        pseudonym = "ML" + digest[:6].hex().upper()
        shift = -(1 + int.from_bytes(digest[6:10], "big") % max_days)
        self.pseudonyms[key] = (pseudonym, shift)
        return pseudonym, shift


@dataclass
class _Walk:
    """State of one dataset's walk (internal)."""

    options: DeidOptions
    ctx: DeidContext
    actions: dict
    pseudonym: str
    shift: int
    identifiers: re.Pattern | None
    rows: list[dict] = field(default_factory=list)
    safe: frozenset[tuple[str, int, int]] = frozenset()


def _tag_str(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _patient_key(ds: Dataset) -> str:
    """Patient ID; else name and birth date; else the study (never merge unknown patients)."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return pid
    name = str(ds.get("PatientName", "") or "").strip()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    if name:
        return f"name:{name}|{birth}"
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    return f"study:{study}" if study else "unknown"


def _identifier_pattern(ds: Dataset) -> re.Pattern | None:
    """Regex of identifying strings found in the header, used by the Clean (C) action."""
    words: set[str] = set()
    for kw in ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
               "PatientAddress", "PatientTelephoneNumbers", "OtherPatientNames", "PatientMotherBirthName"):
        value = ds.get(kw)
        if value is None:
            continue
        for v in value if isinstance(value, MultiValue) else [value]:
            text = str(v)
            words.add(text)
            words.update(re.split(r"[\^\s,]+", text))
    words = {w.strip() for w in words if len(w.strip()) >= 3}
    if not words:
        return None
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)


def _shift_date(text: str, days: int, vr: str) -> str | None:
    """Shift a DA/DT value by ``days``; None when it cannot be parsed."""
    text = text.strip()
    if not text:
        return text
    if "-" in text and vr == "DA":
        parts = [_shift_date(p, days, vr) if p else "" for p in text.split("-")]
        return None if any(p is None for p in parts) else "-".join(parts)  # type: ignore[arg-type]
    head, tail = text[:8], text[8:]
    try:
        if len(head) == 8:
            return (_dt.datetime.strptime(head, "%Y%m%d").date() + _dt.timedelta(days=days)).strftime("%Y%m%d") + tail
        if len(head) in (4, 6):
            d = _dt.date(int(head[:4]), int(head[4:6] or 7), 15) + _dt.timedelta(days=days)
            return d.strftime("%Y%m")[: len(head)]
    except ValueError:
        return None
    return None


def _values(elem) -> list:
    if elem.VM == 0 or elem.value is None:
        return []
    return list(elem.value) if elem.VM > 1 else [elem.value]


def _set_values(elem, values: list) -> None:
    elem.value = values if len(values) > 1 else (values[0] if values else None)


def _dummy(elem) -> None:
    vr = elem.VR
    if vr in DUMMY:
        elem.value = DUMMY[vr]
    elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"):
        elem.value = 0
    else:  # OB, OW, UN ... : a short zero value
        elem.value = b"\x00\x00"


def _private_kept(ds: Dataset, tag: BaseTag, walk: _Walk) -> bool:
    if not (walk.options.retain_safe_private and walk.safe):
        return False
    if tag.element < 0x0100:  # a private creator: kept when its block holds a safe element
        creator = str(ds[tag].value).strip() if tag.element >= 0x10 else ""
        return any(c == creator and g == tag.group for c, g, _ in walk.safe)
    creator_tag = BaseTag((tag.group << 16) | (tag.element >> 8))
    if creator_tag not in ds:
        return False
    creator = str(ds[creator_tag].value).strip()
    return (creator, tag.group, tag.element & 0xFF) in walk.safe


def _walk(ds: Dataset, path: str, walk: _Walk) -> None:
    for elem in list(ds):
        tag = elem.tag
        where = f"{path}{_tag_str(tag)}"
        if tag.is_private:
            if _private_kept(ds, tag, walk):
                continue
            del ds[tag]
            walk.rows.append({"path": where, "tag": _tag_str(tag), "keyword": "", "action": "X", "rule": "private"})
            continue
        if is_curve_or_overlay(tag):
            del ds[tag]
            walk.rows.append({"path": where, "tag": _tag_str(tag), "keyword": "", "action": "X", "rule": "curve/overlay"})
            continue
        entry = walk.actions.get(tag)
        if entry is None or entry[0] == "K":
            if elem.VR == "SQ":
                _recurse(elem, where, walk)
            continue
        action, basic = entry
        row = {"path": where, "tag": _tag_str(tag), "keyword": elem.keyword, "action": action, "rule": basic}
        if action == "X":
            del ds[tag]
        elif elem.VR == "SQ":
            if action == "Z":
                elem.value = Sequence([])
            else:  # D, U, C on a sequence: keep the items, de-identify what they hold
                _recurse(elem, where, walk)
                row = None
        elif action == "Z":
            elem.value = "" if elem.VR in _STRING_VRS else None
        elif action == "U" or (action in ("D", "C") and elem.VR == "UI"):
            _set_values(elem, [walk.ctx.uid(str(v)) for v in _values(elem) if str(v).strip()])
        elif action == "D":
            if tag == _PATIENT_ID:
                elem.value = walk.pseudonym
            else:
                _dummy(elem)
        elif action == "C":
            row = _clean(elem, walk, row)
        if row is not None:
            walk.rows.append(row)


def _clean(elem, walk: _Walk, row: dict) -> dict | None:
    """The Clean action: shift dates (modified-dates option), scrub identifiers from text."""
    vr = elem.VR
    if vr in ("DA", "DT"):
        if not walk.options.retain_long_modified_dates:
            return None
        shifted = [_shift_date(str(v), walk.shift, vr) for v in _values(elem)]
        if any(s is None for s in shifted):
            _dummy(elem)
            row["action"] = "D"
        else:
            _set_values(elem, shifted)
            row["action"] = "C:shift"
        return row
    if vr == "TM":
        return None  # a whole-day shift leaves times of day as they are
    if vr in TEXT_VRS and walk.identifiers is not None:
        values = [str(v) for v in _values(elem)]
        cleaned = [walk.identifiers.sub("*", v) for v in values]
        if cleaned != values:
            _set_values(elem, cleaned)
            row["action"] = "C:scrub"
            return row
    return None


def _recurse(elem, where: str, walk: _Walk) -> None:
    for i, item in enumerate(elem.value):
        _walk(item, f"{where}[{i}].", walk)


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def deidentify_dataset(
    ds: Dataset, options: DeidOptions, secret: bytes, ctx: DeidContext | None = None, *, pixels_cleaned: bool = False
) -> tuple[Dataset, list[dict]]:
    """De-identify ``ds`` in place with PS3.15 Annex E Table E.1-1 and return it with its audit rows.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        Read with pydicom; its ``file_meta`` is de-identified too. Modified in place.
    options : DeidOptions
        Profile options.
    secret : bytes
        Key of the keyed hashes (UIDs, pseudonym, date shift); ignored when ``ctx`` is given.
    ctx : DeidContext, optional
        Shared across files so one run builds one pseudonym map.
    pixels_cleaned : bool, default=False
        Set by the caller after masking burned-in text; adds the Clean Pixel Data code.

    Returns
    -------
    ds : pydicom.dataset.Dataset
        The same object, de-identified.
    rows : list of dict
        One per change: ``path``, ``tag``, ``keyword``, ``action``, ``rule`` (never a value).
    """
    ctx = ctx or DeidContext(secret)
    pseudonym, shift = ctx.patient(_patient_key(ds), options.date_shift_max_days)
    safe = set()
    for item in options.safe_private:
        creator, rest = item.split(":", 1)
        group, elem = rest.split(",")
        safe.add((creator.strip(), int(group, 16), int(elem, 16)))
    walk = _Walk(
        options=options, ctx=ctx, actions=actions_for(options.enabled), pseudonym=pseudonym, shift=shift,
        identifiers=_identifier_pattern(ds) if options.enabled else None,
        safe=frozenset(safe),
    )
    for tag in _ADDED:  # replaced below; an old value must not survive
        if tag in ds:
            del ds[tag]
    _walk(ds, "", walk)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _walk(meta, "meta.", walk)
    if "PatientID" not in ds:
        ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    names = [meaning for name, (_, _, meaning) in OPTIONS.items() if name in options.enabled]
    ds.DeidentificationMethod = [f"medlens {__version__} PS3.15 E.1 Basic Profile"] + [n[:64] for n in names]
    codes = [_code_item(*PROFILE_CODE)]
    codes += [_code_item(code, meaning) for name, (_, code, meaning) in OPTIONS.items() if name in options.enabled]
    if pixels_cleaned:
        codes.append(_code_item(*CLEAN_PIXEL_CODE))
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    if options.retain_long_full_dates:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    elif options.retain_long_modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
    return ds, walk.rows


def burned_in_reason(ds: Dataset, options: DeidOptions) -> str | None:
    """Why ``ds`` may carry burned-in text (None when nothing suggests it).

    BurnedInAnnotation = YES, or a modality of ``options.burned_in_modalities`` whose
    BurnedInAnnotation is not an explicit NO.
    """
    if "PixelData" not in ds:
        return None
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        return "BurnedInAnnotation=YES"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if flag != "NO" and modality in options.burned_in_modalities:
        return f"modality {modality} often carries burned-in text"
    return None


def mask_pixels(ds: Dataset, regions: tuple[tuple[int, int, int, int], ...]) -> None:
    """Blank rectangles ``(x0, y0, x1, y1)`` in every frame of uncompressed pixel data, in place.

    Raises
    ------
    DataError
        If the pixel data is compressed or in a colour space medlens does not rewrite.
    """
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed:
        raise DataError("cannot mask compressed pixel data; decompress it first (e.g. gdcmconv --raw)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB"):
        raise DataError(f"cannot mask pixel data with PhotometricInterpretation {photometric or 'missing'}")
    arr = np.array(ds.pixel_array)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    view = arr if frames > 1 else arr[None]
    fill = (1 << int(ds.BitsStored)) - 1 if photometric == "MONOCHROME1" else 0
    for x0, y0, x1, y1 in regions:
        view[:, y0:y1, x0:x1, ...] = fill
    ds.PixelData = arr.tobytes()
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    ds.BurnedInAnnotation = "NO"
