"""An adversarial DICOM corpus: real files of pydicom-data and deid-data with planted identifiers.

Every planted string holds a unique nonsense core (``QZ<case><nn>XJ``) so that a byte
search of the output can find it in any encoding. Places: person names in UTF-8 and
Latin-1, multi-valued IDs, an SR content tree three deep (TextValue, PersonName, dates,
concept-name and concept-code meanings), a graphic annotation, the file meta (AE titles,
Private Information), device and procedure text, a document title, a private sequence,
a retired and an unknown public attribute, dates and a UID outside Table E.1-1, a coded
string holding the patient's surname, overlays and curves. The files come as explicit
and implicit VR, deflated, and without file meta; one references another by UID.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

ENCODINGS = ("ascii", "utf-16-le", "utf-16-be")


@dataclass
class Corpus:
    """What was planted where."""

    folder: Path
    cores: list[str] = field(default_factory=list)  # ASCII cores of every planted string
    full: list[str] = field(default_factory=list)  # planted strings with non-ASCII letters
    references: dict[str, str] = field(default_factory=dict)  # file name -> SOP UID it references


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _content_tree(tok) -> Sequence:
    """An SR content tree: CONTAINER > CONTAINER > TEXT, plus CODE, PNAME, DATETIME items."""
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", tok("cm-finding"))])
    text.TextValue = f"Patient {tok('text3')} was seen by Dr {tok('text3b')}"
    code = Dataset()
    code.RelationshipType, code.ValueType = "CONTAINS", "CODE"
    code.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    code.ConceptCodeSequence = Sequence([_code("LOC77", "99HOSP", tok("cm-local"))])
    person = Dataset()
    person.RelationshipType, person.ValueType = "CONTAINS", "PNAME"
    person.ConceptNameCodeSequence = Sequence([_code("121008", "DCM", "Person Observer Name")])
    person.PersonName = f"{tok('pname3')}^Observer"
    when = Dataset()
    when.RelationshipType, when.ValueType = "CONTAINS", "DATETIME"
    when.ConceptNameCodeSequence = Sequence([_code("111536", "DCM", "Date of study")])
    when.DateTime = "18830405101010"
    inner = Dataset()
    inner.RelationshipType, inner.ValueType = "CONTAINS", "CONTAINER"
    inner.ContinuityOfContent = "SEPARATE"
    inner.ConceptNameCodeSequence = Sequence([_code("121070", "DCM", tok("cm-inner"))])
    inner.ContentSequence = Sequence([text, code, person, when])
    outer = Dataset()
    outer.RelationshipType, outer.ValueType = "CONTAINS", "CONTAINER"
    outer.ContinuityOfContent = "SEPARATE"
    outer.ConceptNameCodeSequence = Sequence([_code("121070", "DCM", "Findings")])
    outer.ContentSequence = Sequence([inner])
    return Sequence([outer])


def plant(ds: Dataset, case: str, corpus: Corpus, charset: str) -> None:
    """Plant identifiers of ``case`` in ``ds`` (in place); record every core in ``corpus``."""
    n = iter(range(100))

    def tok(_where: str) -> str:
        core = f"QZ{case}{next(n):02d}XJ"
        corpus.cores.append(core)
        return core

    surname = tok("surname")
    ds.SpecificCharacterSet = charset
    given = f"Jürgen{tok('given')}Łukasz" if charset == "ISO_IR 192" else f"Zoë{tok('given')}Müller"
    corpus.full.append(given)
    ds.PatientName = f"{surname}^{given}"
    ds.PatientID = tok("pid")
    ds.OtherPatientIDs = [tok("opid1"), tok("opid2")]
    ds.AccessionNumber = tok("acc")
    ds.PatientBirthDate = "18790101"
    ds.StudyDate = ds.SeriesDate = "18810203"
    ds.ReferringPhysicianName = f"{tok('ref')}^Ärztin"
    ds.InstitutionName = tok("inst")
    ds.StudyDescription = f"Chest of {surname}"
    ds.BodyPartExamined = surname  # a coded string holding the patient's surname
    ds.SecondaryCaptureDeviceID = tok("scdev")
    ds.ProcedureCodeSequence = Sequence([_code("P1", "99HOSP", tok("proc"))])
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", tok("title"))])  # document title
    ds.ContentSequence = _content_tree(tok)
    annotation = Dataset()
    text_object = Dataset()
    text_object.UnformattedTextValue = tok("annot")
    text_object.BoundingBoxAnnotationUnits = "PIXEL"
    annotation.TextObjectSequence = Sequence([text_object])
    annotation.GraphicLayer = "LAYER1"
    ds.GraphicAnnotationSequence = Sequence([annotation])
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D3000", "SRT", tok("region")
    modifier = Dataset()
    deep = Dataset()
    deep.CodeValue, deep.CodingSchemeDesignator, deep.CodeMeaning = "M1", "99HOSP", tok("deep-cm")
    deep.add_new(0x0040A123, "PN", f"{tok('deep-pn')}^Three")  # a name three sequences deep
    modifier.PrimaryAnatomicStructureSequence = Sequence([deep])
    region.AnatomicRegionModifierSequence = Sequence([modifier])
    ds.AnatomicRegionSequence = Sequence([region])
    ds.WindowCenterWidthExplanation = [tok("win1"), tok("win2")]
    ds.CompletionFlagDescription = tok("flag")
    ds.add_new(0x00081000, "AE", tok("retired-ae"))  # Network ID (retired)
    ds.add_new(0x00104321, "LO", tok("unknown"))  # not in the data dictionary
    ds.add_new(0x00143076, "DA", "18840506")  # Date of Gain Calibration, outside the table
    ds.add_new(0x00080416, "DT", "18850607080910")  # Expiration DateTime, outside the table
    ds.add_new(0x00209312, "UI", f"1.2.826.0.1.3680043.8.498.7{ord(case)}1")  # Volume Frame of Reference UID
    ds.add_new(0x00142006, "PN", f"{tok('evaluator')}^Eve")  # Evaluator Name, outside the table
    block = ds.private_block(0x0029, f"QZ PRIVATE {case}", create=True)
    inner = Dataset()
    inner.add_new(0x00100010, "PN", tok("priv-pn"))
    block.add_new(0x10, "SQ", Sequence([inner]))
    block.add_new(0x11, "LO", tok("priv-lo"))
    corpus.cores.append(f"QZ PRIVATE {case}")
    ds.add_new(0x60000022, "LO", tok("overlay"))  # Overlay Description
    ds.add_new(0x50000022, "LO", tok("curve"))  # Curve Description (retired group)
    meta = getattr(ds, "file_meta", None)
    if meta:
        meta.SourceApplicationEntityTitle = tok("ae-src")
        meta.SendingApplicationEntityTitle = tok("ae-send")
        meta.PrivateInformationCreatorUID = f"1.2.826.0.1.3680043.8.498.8{ord(case)}"
        meta.PrivateInformation = tok("meta-priv").encode() + b"\x00"
        meta.ImplementationVersionName = tok("impl")


def _base(name: str) -> Path:
    import deid_data
    from pydicom.data import get_testdata_file

    if "/" in name:
        return Path(deid_data.__file__).parent / "data" / name
    return Path(get_testdata_file(name))


#: (case, source file, how it is written, character set)
CASES = [
    ("A", "CT_small.dcm", "explicit", "ISO_IR 192"),
    ("B", "MR_small_implicit.dcm", "implicit", "ISO_IR 100"),
    ("C", "image_dfl.dcm", "deflated", "ISO_IR 100"),
    ("D", "no_meta.dcm", "no-meta", "ISO_IR 100"),
    ("E", "test-SR.dcm", "explicit", "ISO_IR 192"),
    ("F", "humans/ctbrain1.dcm", "explicit", "ISO_IR 100"),
    ("G", "dicom-cookies/image1.dcm", "explicit", "ISO_IR 192"),
]


def build(folder: Path) -> Corpus:
    """Write the adversarial corpus into ``folder`` (file names are neutral) and say what it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(folder)
    sops = {}
    for case, source, how, charset in CASES:
        ds = pydicom.dcmread(_base(source), force=True)
        if "SOPInstanceUID" not in ds:  # no_meta.dcm carries pixels and little else
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
            ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.9{ord(case)}"
            ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.10{ord(case)}"
        if how != "no-meta":
            ds.file_meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = {"explicit": ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian),
                                              "implicit": ImplicitVRLittleEndian,
                                              "deflated": DeflatedExplicitVRLittleEndian}[how]
        else:
            ds.file_meta = FileMetaDataset()  # written without it (enforce_file_format=False)
        plant(ds, case, corpus, charset)
        sops[case] = str(ds.SOPInstanceUID)
        if case == "B":  # references file A by UID
            ref = Dataset()
            ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            ref.ReferencedSOPInstanceUID = sops["A"]
            ds.ReferencedImageSequence = Sequence([ref])
            corpus.references[f"{case}.dcm"] = sops["A"]
        path = folder / f"{case}.dcm"
        if how == "no-meta":
            ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
        else:
            ds.save_as(path, enforce_file_format=True)
    return corpus


def readable_bytes(path: Path) -> bytes:
    """The file's bytes, with a deflated dataset inflated (so a byte search sees what a reader sees)."""
    data = path.read_bytes()
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    if str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
        data = data[:meta_end] + zlib.decompress(data[meta_end:], -zlib.MAX_WBITS)
    return data


def planted_hits(data: bytes, corpus: Corpus) -> list[str]:
    """Planted strings found in ``data`` in any encoding, case-insensitively."""
    low = data.lower()
    hits = [core for core in corpus.cores for enc in ENCODINGS if core.lower().encode(enc) in low]
    hits += [s for s in corpus.full for enc in ("utf-8", "latin-1", "cp1252", "utf-16-le")
             if _encodable(s, enc) and s.encode(enc) in data]
    return hits


def _encodable(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True
