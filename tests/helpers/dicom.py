"""Helpers for the DICOM tests: small datasets built in code, the public test corpora."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECRET = b"test-secret-0123456789abcdef"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def make_ds(
    *,
    patient_id: str = "PID-4711",
    patient_name: str = "Doe^Jane",
    study_date: str = "20200315",
    sop_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    series_uid: str = "1.2.826.0.1.3680043.8.498.2",
    modality: str = "CT",
    pixels: np.ndarray | None = None,
    photometric: str = "MONOCHROME2",
    **extra,
) -> Dataset:
    """A small, valid CT-like dataset holding planted identifiers."""
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".9"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = "101010"
    ds.AccessionNumber = "ACC998877"
    ds.InstitutionName = "St Example Hospital"
    ds.ReferringPhysicianName = "Smith^John"
    ds.StudyDescription = "Chest for Doe^Jane"
    ds.Modality = modality
    ds.InstanceNumber = 1
    if pixels is None:
        pixels = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 10)
    frames = pixels.shape[0] if pixels.ndim == 3 and photometric != "RGB" else 1
    ds.Rows, ds.Columns = pixels.shape[-2:] if photometric != "RGB" else pixels.shape[:2]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def with_reference(ds: Dataset, target_sop: str) -> Dataset:
    """Add a Referenced Image Sequence pointing at ``target_sop`` and a private block."""
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = target_sop
    ds.ReferencedImageSequence = Sequence([item])
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "private note about Doe^Jane")
    ds.add_new(0x60000010, "US", 8)  # overlay rows
    return ds


def corpus_files() -> list[Path]:
    """Every file of pydicom's test data (pydicom-data included) and of deid-data."""
    import deid_data
    import pydicom.data

    files = [Path(f) for f in pydicom.data.get_testdata_files() if Path(f).is_file()]
    root = Path(deid_data.__file__).parent / "data"
    files += sorted(p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc"))
    return files
