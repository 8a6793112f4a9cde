"""De-identification throughput: 1,000 small DICOM files (target < 60 s on 2 cores).

Usage::

    python benchmarks/deid_speed.py [--files 1000]

Builds small CT-like files (64x64 uint16, a sequence with a UID reference, a private block,
50 patients) in a temporary folder, de-identifies them with default options and prints
files/s. Not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from medlens.dicom import DeidOptions, deidentify_tree


def make_file(i: int, path: Path) -> None:
    """Write one small CT-like file for patient ``i % 50``."""
    sop = f"1.2.826.0.1.3680043.8.498.{i + 1000}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.7.{i % 50}"
    ds.SeriesInstanceUID = ds.StudyInstanceUID + ".1"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"Patient^{i % 50}", f"MRN{i % 50:05d}", "19600101"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20210102"
    ds.InstitutionName, ds.StudyDescription, ds.Modality = "General Hospital", "CT chest", "CT"
    ref = Dataset()
    ref.ReferencedSOPClassUID = meta.MediaStorageSOPClassUID
    ref.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{max(i - 1, 0) + 1000}"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.private_block(0x0009, "BENCH 1.0", create=True).add_new(0x01, "LO", "vendor note")
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) + i).tobytes()
    ds.save_as(path, enforce_file_format=True)


def main() -> None:
    """Build the files, time the de-identification, print files/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        for i in range(args.files):
            make_file(i, root / "in" / f"{i:05d}.dcm")
        start = time.perf_counter()
        summary = deidentify_tree(root / "in", root / "run" / "out", options=DeidOptions(), secret=b"benchmark-secret-0123456789",
                                  map_path=root / "run" / "pseudonyms.csv", audit_path=root / "run" / "audit.jsonl")
        seconds = time.perf_counter() - start
    n = len(summary.written)
    print(f"de-identified {n} files in {seconds:.1f} s: {n / seconds:.0f} files/s (target: 1000 files < 60 s)")


if __name__ == "__main__":
    main()
