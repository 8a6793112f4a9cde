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
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

from medlens import __version__
from medlens.dicom.table import (
    CLEAN_PIXEL_CODE,
    OPTIONS,
    PROFILE_CODE,
    actions_for,
    is_curve_or_overlay,
)
from medlens.dicom.safelist import (
    CODE_MEANING,
    DATE_VRS,
    FREE_TEXT_VRS,
    is_standard_uid,
    safe_attributes,
    standard_meaning,
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
_META_KEPT = frozenset({BaseTag(0x00020000), BaseTag(0x00020001), BaseTag(0x00020002), BaseTag(0x00020003),
                        BaseTag(0x00020010)})
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
    safe_list : bool, default=True
        Safe-list mode for attributes Table E.1-1 does not name: free-text, date/time and
        unknown-VR attributes not on the packaged safe list (``safe_attributes.json``) are
        removed (replaced by dummies inside a replaced sequence), UIDs outside the
        standard's root are replaced, CodeMeaning is re-derived from the code or blanked.
        Off: only the table acts (not recommended; ``--verify`` will report what stays).
    retain : tuple of str, default=()
        Attributes outside the table kept as they are, by keyword (``"SegmentLabel"``) or
        tag (``"(0062,0005)"``). Table attributes are governed by the profile options.
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
    safe_list: bool = True
    retain: tuple[str, ...] = ()

    @field_validator("retain")
    @classmethod
    def _check_retain(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        table = actions_for(frozenset())
        for item in v:
            tag = _attribute_tag(item)
            if tag is None:
                raise ValueError(f"retain takes a DICOM keyword or a tag like '(0062,0005)', got {item!r}")
            if tag.is_private:
                raise ValueError(f"retain {item!r}: private attributes are kept with retain_safe_private/safe_private")
            if tag in table:
                raise ValueError(f"retain {item!r}: the attribute is in Table E.1-1; use the profile options instead")
        return v

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

    @property
    def retained(self) -> frozenset[BaseTag]:
        """Tags of :attr:`retain`."""
        return frozenset(_attribute_tag(item) for item in self.retain)  # type: ignore[misc]


def _attribute_tag(text: str) -> BaseTag | None:
    """Tag of a keyword or of ``"(gggg,eeee)"``; None when it is neither."""
    text = text.strip()
    m = re.fullmatch(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?", text)
    if m:
        return Tag(int(m.group(1) + m.group(2), 16))
    value = tag_for_keyword(text)
    return None if value is None else Tag(value)


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

    def join_key(self, keyword: str, value: str) -> str:
        """Keyed hash (32 hex digits) of an identifier such as an accession number, for joining labels.

        Computed from the original value on both sides (the DICOM header and the label
        table) so labels follow images while the identifier itself is never stored.
        """
        return self._digest("join", f"{keyword}\x00{value.strip()}").hex()[:32]

    def value_hash(self, value: str) -> str:
        """Keyed hash (16 hex digits) of a normalised original value, for the verifier's audit check."""
        return self._digest("value", value).hex()[:16]

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
    tokens: frozenset[str] = frozenset()
    rows: list[dict] = field(default_factory=list)
    safe: frozenset[tuple[str, int, int]] = frozenset()

    def change(self, elem, where: str, action: str, rule: str) -> None:
        """Record an audit row for ``elem`` (never its value)."""
        self.rows.append({"path": where, "tag": _tag_str(elem.tag), "keyword": elem.keyword, "action": action,
                          "rule": rule})


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


def _identifier_words(ds: Dataset) -> frozenset[str]:
    """Identifying strings of the header (name, IDs, birth date, address ...) and their words, >= 3 characters."""
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
    return frozenset(w.strip() for w in words if len(w.strip()) >= 3)


def _identifier_pattern(words: frozenset[str]) -> re.Pattern | None:
    """Regex of the identifying words, used by the Clean (C) action."""
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


def _walk(ds: Dataset, path: str, walk: _Walk, mode: str = "keep") -> None:
    """Apply the table to every element of ``ds``; ``mode`` is how the enclosing sequence is treated.

    ``"keep"``: a kept sequence (or the top level); ``"dummy"``: inside a sequence whose
    action is D, where free text outside the table becomes a dummy; ``"clean"``: inside a
    sequence whose action is C (a Clean option), where such text is scrubbed of identifiers.
    """
    for elem in list(ds):
        tag = elem.tag
        where = f"{path}{_tag_str(tag)}"
        if tag.is_private:
            if not _private_kept(ds, tag, walk):
                walk.change(elem, where, "X", "private")
                del ds[tag]
            continue
        if is_curve_or_overlay(tag):
            walk.change(elem, where, "X", "curve/overlay")
            del ds[tag]
            continue
        entry = walk.actions.get(tag)
        if entry is None:
            _outside_table(ds, elem, where, walk, mode)
            continue
        action, basic = entry
        if action == "K":
            if elem.VR == "SQ":  # kept, but what its items hold is still de-identified
                _recurse(elem, where, walk, mode)
            continue
        if action == "X":
            walk.change(elem, where, "X", basic)
            del ds[tag]
        elif elem.VR == "SQ":
            if action == "Z":
                walk.change(elem, where, "Z", basic)
                elem.value = Sequence([])
            else:  # D: a dummy sequence (items keep structure and codes, no original text); C/U: cleaned
                _recurse(elem, where, walk, "dummy" if action == "D" else ("clean" if action == "C" else mode))
        elif action == "Z":
            walk.change(elem, where, "Z", basic)
            elem.value = "" if elem.VR in _STRING_VRS else None
        elif action == "U" or (action in ("D", "C") and elem.VR == "UI"):
            walk.change(elem, where, action, basic)
            _set_values(elem, [walk.ctx.uid(str(v)) for v in _values(elem) if str(v).strip()])
        elif action == "D":
            walk.change(elem, where, "D", basic)
            if tag == _PATIENT_ID:
                elem.value = walk.pseudonym
            else:
                _dummy(elem)
        elif action == "C":
            _clean(elem, where, walk, basic)


def _outside_table(ds: Dataset, elem, where: str, walk: _Walk, mode: str) -> None:
    """Safe-list mode for an attribute Table E.1-1 does not name (see :class:`DeidOptions`)."""
    tag, vr = elem.tag, elem.VR
    if tag in walk.options.retained:
        return
    if vr == "SQ":
        _recurse(elem, where, walk, mode)
        return
    if not walk.options.safe_list:
        return
    if tag == CODE_MEANING:
        meaning = standard_meaning(ds)
        if str(elem.value or "") != meaning:
            walk.change(elem, where, "C:code-meaning", "re-derived from the code" if meaning else "blanked")
            elem.value = meaning
        return
    if tag in safe_attributes() or vr not in FREE_TEXT_VRS | DATE_VRS | {"UI", "UN"}:
        if vr in FREE_TEXT_VRS or vr == "CS":  # kept: still never a copy of this header's identifiers
            values = [str(v) for v in _values(elem)]
            if any(walk.tokens & set(re.split(r"[^0-9A-Z]+", v.upper())) for v in values):
                walk.change(elem, where, "D", "kept attribute holds an identifier")
                _dummy(elem)
        return
    if vr == "UI":
        values = [str(v) for v in _values(elem) if str(v).strip()]
        if any(not is_standard_uid(v) for v in values):
            walk.change(elem, where, "U", "UID outside the table")
            _set_values(elem, [v if is_standard_uid(v) else walk.ctx.uid(v) for v in values])
        return
    if vr in ("DA", "DT") and walk.options.retain_long_modified_dates:
        _clean(elem, where, walk, "date outside the table")
        return
    if vr in DATE_VRS and (walk.options.retain_long_full_dates or walk.options.retain_long_modified_dates):
        return
    if mode == "dummy" and vr != "UN":
        walk.change(elem, where, "D", "not on the safe list")
        _dummy(elem)
    elif mode == "clean" and vr in FREE_TEXT_VRS:
        _clean(elem, where, walk, "not on the safe list")
    else:
        walk.change(elem, where, "X", "not on the safe list")
        del ds[tag]


def _clean(elem, where: str, walk: _Walk, rule: str) -> None:
    """The Clean action: shift dates (modified-dates option), scrub identifiers from text."""
    vr = elem.VR
    if vr in ("DA", "DT"):
        if not walk.options.retain_long_modified_dates:
            return
        shifted = [_shift_date(str(v), walk.shift, vr) for v in _values(elem)]
        if any(s is None for s in shifted):
            walk.change(elem, where, "D", rule)
            _dummy(elem)
        else:
            walk.change(elem, where, "C:shift", rule)
            _set_values(elem, shifted)
        return
    if vr in TEXT_VRS and walk.identifiers is not None:
        values = [str(v) for v in _values(elem)]
        cleaned = [walk.identifiers.sub("*", v) for v in values]
        if cleaned != values:
            walk.change(elem, where, "C:scrub", rule)
            _set_values(elem, cleaned)


def _recurse(elem, where: str, walk: _Walk, mode: str) -> None:
    for i, item in enumerate(elem.value):
        _walk(item, f"{where}[{i}].", walk, mode)


def _meta(meta: Dataset, sop_uid: str, walk: _Walk) -> None:
    """File meta: keep version, class and syntax; the instance UID follows the dataset's; the rest goes.

    Source/sending/receiving AE titles, Private Information and anything else the file
    meta holds are removed; the implementation UID and name become medlens's own.
    """
    for elem in list(meta):
        if elem.tag not in _META_KEPT:
            walk.change(elem, f"meta.{_tag_str(elem.tag)}", "X", "file meta")
            del meta[elem.tag]
    if "MediaStorageSOPInstanceUID" in meta or sop_uid:
        old = meta.get("MediaStorageSOPInstanceUID")
        if old is not None and str(old) != sop_uid:
            walk.change(meta["MediaStorageSOPInstanceUID"], "meta.(0002,0003)", "U", "follows SOP Instance UID")
        meta.MediaStorageSOPInstanceUID = sop_uid or walk.ctx.uid(str(old))
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDLENS_{__version__}"[:16]


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
    words = _identifier_words(ds)
    walk = _Walk(
        options=options, ctx=ctx, actions=actions_for(options.enabled), pseudonym=pseudonym, shift=shift,
        identifiers=_identifier_pattern(words), tokens=frozenset(w.upper() for w in words), safe=frozenset(safe),
    )
    for tag in _ADDED:  # replaced below; an old value must not survive
        if tag in ds:
            del ds[tag]
    meta = getattr(ds, "file_meta", None)
    _walk(ds, "", walk)
    if meta is not None:
        _meta(meta, str(ds.get("SOPInstanceUID", "") or ""), walk)
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
