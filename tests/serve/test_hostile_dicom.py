"""Hostile DICOM uploads (issue 32): each is refused with a 4xx JSON message before it can expand in memory.

The decode guards as functions (fast), then against the real uvicorn of conftest.py: every
hostile upload answered in under 2 s with a 4xx, the server's peak RSS growing by less than
200 MB over it, no PHI in its audit line, and a normal DICOM and PNG still served right after.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from helpers.serve import phantom_png
from medlens.serve import UploadError, decode_upload

PHI = {"PatientName": "Doe^Hostile", "PatientID": "HOSTILE-4711", "PatientBirthDate": "19590417",
       "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.47110", "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.47111",
       "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.47112"}
"""Planted in every upload below; none of it may reach a response or the audit log."""
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
BOMB_BYTES = 65535 * 65534
"""What the deflate bomb inflates to: a 65535×65534 8-bit frame, 4.29 GB."""
MAX_GROWTH = 200 * 1024 * 1024
MAX_SECONDS = 2.0


def _dataset(rows: int, cols: int, *, frames: int = 1, samples: int = 1, sop_class: str = SecondaryCaptureImageStorage,
             ts: str = ExplicitVRLittleEndian) -> Dataset:
    """A dataset with file meta, the planted PHI and an image header (no pixel data yet)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, PHI["SOPInstanceUID"]
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    return ds


def _file(ds: Dataset) -> bytes:
    """``ds`` as a DICOM file (preamble, ``DICM``, file meta, dataset in its transfer syntax)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def valid_dicom() -> bytes:
    """A 64×64 RGB phantom (the image test_service.py serves with 200)."""
    from medlens.data.synthetic import ImageSpec, render_image

    img, _, _ = render_image(ImageSpec(64, "A", 0), np.random.default_rng(3))
    ds = _dataset(64, 64, samples=3)
    ds.PixelData = np.ascontiguousarray(img).tobytes()
    return _file(ds)


def many_frames(pixel_bytes: int, side: int = 64) -> bytes:
    """NumberOfFrames = 10,000 of ``side``×``side`` px over ``pixel_bytes`` bytes of pixel data."""
    ds = _dataset(side, side, frames=10_000)
    ds.PixelData = bytes(pixel_bytes)
    return _file(ds)


def huge_dims() -> bytes:
    """Rows × Columns = 65,535² declared over a 4 kB pixel buffer."""
    ds = _dataset(65535, 65535)
    ds.PixelData = bytes(4096)
    return _file(ds)


def cut_in_pixel_element() -> bytes:
    """A valid file cut 5,000 bytes into its pixel data element's 12,288 bytes."""
    data = valid_dicom()
    return data[: len(data) - 64 * 64 * 3 + 5000]


def short_pixel_element() -> bytes:
    """A complete pixel data element of 1,000 bytes where 64×64 RGB needs 12,288."""
    ds = _dataset(64, 64, samples=3)
    ds.PixelData = bytes(1000)
    return _file(ds)


def dicomdir(tmp: Path) -> bytes:
    """A real DICOMDIR written by pydicom's FileSet, listing one image."""
    instance = _dataset(64, 64)
    instance.StudyDate, instance.StudyTime, instance.StudyID = "20240102", "101010", "S1"
    instance.SeriesNumber, instance.InstanceNumber = 1, 1
    instance.PixelData = bytes(64 * 64)
    fs = FileSet()
    fs.add(instance)
    fs.write(tmp)
    return (tmp / "DICOMDIR").read_bytes()


def structured_report() -> bytes:
    """A Basic Text SR: findings as text, no pixel data."""
    ds = _dataset(1, 1, sop_class=BASIC_TEXT_SR)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                    "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.Modality, ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "SR", "CONTAINER", "COMPLETE", "UNVERIFIED"
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", "No focal lesion."
    ds.ContentSequence = Sequence([item])
    return _file(ds)


def write_deflate_bomb(path: Path) -> Path:
    """A Deflated Explicit VR Little Endian file whose dataset inflates to 4.29 GB (a 65535×65534 frame of zeros).

    The dataset header and the pixel element's tag are deflated, then the zeros, streamed
    through one ``zlib.compressobj`` 64 MiB at a time, each chunk ended by a full flush.
    After a full flush the compressor starts afresh, so every further 64 MiB of zeros
    deflates to the same bytes: the second chunk's output is checked against the first and
    then written again instead of compressing 4 GB. The file is about 4.2 MB.
    """
    chunk = 64 << 20
    ds = _dataset(65535, 65534, ts=DeflatedExplicitVRLittleEndian)
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_dataset(header, ds)
    pixel_tag = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, BOMB_BYTES)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(chunk)
    with open(path, "wb") as fh:
        meta = DicomBytesIO()
        write_file_meta_info(meta, ds.file_meta)
        fh.write(bytes(128) + b"DICM" + meta.getvalue())
        fh.write(deflate.compress(header.getvalue() + pixel_tag) + deflate.flush(zlib.Z_FULL_FLUSH))
        block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
        assert deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH) == block
        full, rest = divmod(BOMB_BYTES, chunk)
        for _ in range(full):
            fh.write(block)
        fh.write(deflate.compress(zeros[:rest]) + deflate.flush())
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, tuple[bytes, int, str]]:
    """name -> (upload, expected status, a phrase of the expected message)."""
    tmp = tmp_path_factory.mktemp("hostile_dicom")
    bomb = write_deflate_bomb(tmp / "bomb.dcm").read_bytes()
    (tmp / "fileset").mkdir()
    return {
        "10000_frames_small_buffer": (many_frames(64 * 64), 413, "10,000 frame(s)"),
        "10000_frames_plausible_buffer": (many_frames(9 << 20), 413, "10,000 frame(s)"),
        "10000_small_frames_short_buffer": (many_frames(16 * 16 * 10, side=16), 422, "truncated"),
        "deflate_to_4gb": (bomb, 413, "decompression bomb"),
        "65535x65535_header": (huge_dims(), 413, "65535×65535"),
        "cut_in_pixel_element": (cut_in_pixel_element(), 422, "truncated"),
        "short_pixel_element": (short_pixel_element(), 422, "truncated"),
        "dicomdir": (dicomdir(tmp / "fileset"), 422, "DICOMDIR"),
        "structured_report": (structured_report(), 422, "no pixel data"),
    }


HOSTILE = ["10000_frames_small_buffer", "10000_frames_plausible_buffer", "10000_small_frames_short_buffer",
           "deflate_to_4gb", "65535x65535_header", "cut_in_pixel_element", "short_pixel_element", "dicomdir",
           "structured_report"]


def test_bomb_is_a_deflated_dataset_of_a_few_megabytes(hostile):
    data = hostile["deflate_to_4gb"][0]
    meta_end = 144 + struct.unpack("<I", data[140:144])[0]
    assert data[128:132] == b"DICM" and DeflatedExplicitVRLittleEndian.encode() in data[132:meta_end]
    assert len(data) < 5_000_000 and BOMB_BYTES / len(data) > 1000
    head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[meta_end:], 4096)
    assert PHI["PatientName"].encode() in head  # the deflated part is the dataset


@pytest.mark.parametrize("name", HOSTILE)
def test_decode_refuses_hostile_dicom(hostile, name):
    data, status, phrase = hostile[name]
    t0 = time.perf_counter()
    with pytest.raises(UploadError) as err:
        decode_upload(data, "application/dicom")
    assert time.perf_counter() - t0 < MAX_SECONDS
    assert err.value.status == status and phrase in str(err.value), str(err.value)
    assert not any(value in str(err.value) for value in PHI.values())


def test_decode_reads_the_first_frame_only_and_deflated_files():
    frames = np.stack([np.full((32, 32), 10 * (k + 1), np.uint8) for k in range(3)])
    frames[0, :16] = 200
    ds = _dataset(32, 32, frames=3)
    ds.PixelData = frames.tobytes()
    plain = decode_upload(_file(ds), "application/dicom")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated = _file(ds)
    assert DeflatedExplicitVRLittleEndian.encode() in deflated[132:400]
    inflated = decode_upload(deflated, "application/dicom")
    assert plain.image.shape == (1, 32, 32) and np.array_equal(plain.image, inflated.image)
    np.testing.assert_allclose(plain.image[0, :, 0], [1.0] * 16 + [0.0] * 16)  # frame 0, min-max scaled
    with pytest.raises(UploadError, match="ends early") as err:
        decode_upload(deflated[:-40], "application/dicom")
    assert err.value.status == 422


def _upload(client, data: bytes, ctype: str):
    return client.post("/v1/predict", files={"file": ("upload", data, ctype)})


def _server_pid(url: str) -> int:
    """The ``medlens serve`` child of this test process listening on ``url``'s port."""
    port, me = url.rsplit(":", 1)[1].encode(), os.getpid()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text, argv = status.read_text(), (status.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"\nPPid:\t{me}\n" in text and b"serve" in argv and port in argv:
            return int(status.parent.name)
    raise AssertionError(f"no server process of pid {me} on port {port.decode()}")


def _kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of ``pid``, in KiB."""
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1])


def _peak_growth(pid: int, request) -> tuple[object, int]:
    """Run ``request()``; return its answer and how far the process's peak RSS rose above its RSS before, in bytes.

    The peak is reset first (``clear_refs`` 5), so earlier requests' peaks do not count.
    """
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _kib(pid, "VmRSS")
    answer = request()
    return answer, (_kib(pid, "VmHWM") - before) * 1024


@pytest.fixture(scope="module")
def warm_client(client):
    """The served client after one DICOM and one PNG (pydicom and the de-identifier imported)."""
    assert _upload(client, valid_dicom(), "application/dicom").status_code == 200
    assert _upload(client, phantom_png(seed=5), "image/png").status_code == 200
    return client


@pytest.mark.slow
@pytest.mark.parametrize("name", HOSTILE)
def test_served_hostile_dicom_is_4xx_fast_and_bounded(warm_client, server, hostile, name):
    data, status, phrase = hostile[name]
    pid = _server_pid(server[0])
    t0 = time.perf_counter()
    r, growth = _peak_growth(pid, lambda: _upload(warm_client, data, "application/dicom"))
    seconds = time.perf_counter() - t0
    message = r.json()["error"]["message"]
    print(f"{name}: {r.status_code} in {seconds:.3f} s, peak RSS +{growth / 2**20:.1f} MiB: {message}")
    assert r.status_code == status and phrase in message, r.text
    assert seconds < MAX_SECONDS and growth < MAX_GROWTH
    assert _upload(warm_client, valid_dicom(), "application/dicom").status_code == 200
    assert _upload(warm_client, phantom_png(seed=6), "image/png").status_code == 200


@pytest.mark.slow
def test_hostile_dicom_audit_lines_name_the_refusal_without_phi(warm_client, server, hostile):
    _, audit = server
    for name in ("deflate_to_4gb", "structured_report"):
        data, status, _ = hostile[name]
        r = _upload(warm_client, data, "application/dicom")
        assert r.status_code == status
    time.sleep(0.3)
    rows = [json.loads(line) for line in audit.read_text().splitlines()][-2:]
    assert [row["status"] for row in rows] == [413, 422]
    assert "decompression bomb" in rows[0]["error"] and "no pixel data" in rows[1]["error"]
    assert all(row["request_id"] and row["latency_ms"] >= 0 for row in rows)
    text = audit.read_text()
    assert not any(value in text for value in PHI.values())
