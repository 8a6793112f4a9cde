"""De-identification speed, whole process as a user runs it: medlens vs dicognito vs pydicom/deid.

Builds small CT-like files (64x64 uint16, a sequence with a UID reference, a private
block, 50 patients), then times each tool as a command on the same files, from start
to exit (interpreter start and imports included), and prints seconds and the ratio to
medlens. Not a test.

The other tools are never project dependencies. Install them into a throwaway venv::

    python -m venv /tmp/deid-bench && /tmp/deid-bench/bin/pip install dicognito deid

and run::

    python benchmarks/deid_speed.py [--files 2000] [--venv /tmp/deid-bench]

A tool missing from that venv is reported as skipped. The commands timed:
``medlens deid IN OUT --secret-file S`` (default options: Basic Profile, safe-list
mode, one process per CPU), the same with ``--workers 1``, ``python -m dicognito -o OUT IN``, and
``deid --outfolder OUT identifiers --input IN --action all`` (its default recipe).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian


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


def _time(cmd: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)  # pydicom/deid writes only into an existing folder
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    """Build the files, time each tool as a whole process, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/deid-bench"), help="throwaway venv with dicognito and deid")
    args = parser.parse_args()
    medlens = Path(sys.executable).with_name("medlens")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        for i in range(args.files):
            make_file(i, root / "in" / f"{i:05d}.dcm")
        (root / "secret").write_text("benchmark-secret-0123456789")
        src, secret = str(root / "in"), str(root / "secret")
        tools = {  # name -> (output folder, command)
            "medlens deid": (root / "m", [str(medlens), "deid", src, str(root / "m"), "--secret-file", secret]),
            "medlens deid --workers 1": (root / "w", [str(medlens), "deid", src, str(root / "w"), "--secret-file", secret,
                                                      "--workers", "1"]),
            "dicognito": (root / "d", [str(args.venv / "bin" / "python"), "-m", "dicognito", "--quiet", "-o",
                                       str(root / "d"), src]),
            "pydicom/deid": (root / "p", [str(args.venv / "bin" / "deid"), "--quiet", "--outfolder", str(root / "p"),
                                          "--overwrite", "identifiers", "--input", src, "--action", "all"]),
        }
        seconds = {}
        for name, (out, cmd) in tools.items():
            if not Path(cmd[0]).exists():
                print(f"{name:25s} skipped: {cmd[0]} not found (see the docstring for the throwaway venv)")
                continue
            seconds[name] = _time(cmd, out)
            written = sum(1 for p in out.rglob("*") if p.is_file())
            print(f"{name:25s} {seconds[name]:6.2f} s  {args.files / seconds[name]:6.0f} files/s  "
                  f"{seconds[name] / seconds['medlens deid']:5.2f}x medlens  ({written} files written)")
        start = time.perf_counter()
        subprocess.run([str(medlens), "--help"], check=True, stdout=subprocess.DEVNULL)
        print(f"{'medlens --help':25s} {time.perf_counter() - start:6.2f} s")


if __name__ == "__main__":
    main()
