"""The preprocess-once cache: each image prepared once per contract, read by every stage from a memory map.

Layout in the run directory::

    cache/<size>px<chans>ch-<contract digest>/
        images.u8        uint8 rows of C×S×S, raw (a numpy memory map)
        index.parquet    digest -> row
        contract.json    the :class:`~medlens.data.preprocess.Preprocess` settings

A row is keyed by the image's digest (its file's bytes; for a reference into an array or
DICOM file, the reference with the file's size and modification time) and the folder by
the contract, so a changed setting prepares a new folder and a changed or added image
prepares only that image. Preparation runs in worker processes for large sets.

Readers get an :class:`ImageCache`, a ``torch.utils.data.Dataset`` whose memory is the
batch being read: the page cache of the map is the kernel's, not the process's, so a
training process holds no copy of the data set (nor does each DDP process).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medlens.data.preprocess import Preprocess

__all__ = ["ImageCache", "build_cache", "cache_folder", "image_digest"]

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
_PARALLEL_FROM = 1024
"""Images to prepare from which worker processes pay for their start (a second or two each)."""
_CHUNK = 256


def image_digest(ref: str) -> str:
    """Digest of an image reference: its file's bytes, or (reference, size, mtime) for ``file::key`` references."""
    h = hashlib.blake2b(digest_size=16)
    path, sep, _ = ref.partition("::")
    if sep:
        st = os.stat(path)
        h.update(f"{ref}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_folder(run: Path, pre: Preprocess) -> Path:
    """``run/cache/<size>px<chans>ch-<digest>`` of a contract."""
    key = hashlib.blake2b(json.dumps(pre.to_dict(), sort_keys=True).encode(), digest_size=6).hexdigest()
    return Path(run) / CACHE_DIR / f"{pre.size}px{pre.in_chans}ch-{key}"


class ImageCache(Dataset):
    """Prepared images of a list of references, read from the cache's memory map.

    ``cache[i]`` is one uint8 ``C×S×S`` tensor; ``cache[idx]`` with a slice, list, array
    or tensor of positions is a uint8 ``N×C×S×S`` batch (a copy of those rows only).
    The map is opened lazily in each process, so the object pickles cheaply into
    DataLoader workers.

    Parameters
    ----------
    folder : path
        A cache folder written by :func:`build_cache`.
    rows : array of int
        The map row of each position.
    shape : tuple
        ``(C, S, S)`` of one image.
    """

    def __init__(self, folder: Path, rows: np.ndarray, shape: tuple[int, int, int]) -> None:
        self.folder, self.rows, self.shape_one = Path(folder), np.asarray(rows, np.int64), tuple(shape)
        self._map: np.memmap | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None}

    @property
    def _mm(self) -> np.memmap:
        if self._map is None or len(self._map) <= int(self.rows.max(initial=-1)):
            n = (self.folder / "images.u8").stat().st_size // int(np.prod(self.shape_one))
            self._map = np.memmap(self.folder / "images.u8", np.uint8, "r", shape=(n, *self.shape_one))
        return self._map

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, C, S, S)``, as a tensor's."""
        return (len(self.rows), *self.shape_one)

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, (int, np.integer)):
            return torch.from_numpy(np.array(self._mm[self.rows[idx]]))
        if isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        return torch.from_numpy(self._mm[self.rows[idx]])

    def __getitems__(self, positions: list[int]) -> torch.Tensor:
        """One batch for a DataLoader's batch sampler (one read instead of one per image)."""
        return self[np.asarray(positions, np.int64)]

    def subset(self, positions: Sequence[int] | np.ndarray) -> ImageCache:
        """The images at ``positions``, still on the map."""
        return ImageCache(self.folder, self.rows[np.asarray(positions, np.int64)], self.shape_one)

    def digest(self) -> str:
        """Content digest of these images in this order (the contract folder and the map rows)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.folder.name.encode())
        h.update(np.ascontiguousarray(self.rows).data)
        return h.hexdigest()

    def to_tensor(self) -> torch.Tensor:
        """All images in memory (the small sets of the service and the reports)."""
        return self[np.arange(len(self.rows))].clone()


def _prepare_rows(folder: str, shape: tuple[int, ...], total: int, pre: dict, jobs: list[tuple[int, str]]) -> int:
    """Worker: prepare ``(row, reference)`` jobs straight into the map; return how many."""
    import cv2

    from medlens.data.images import load_image

    cv2.setNumThreads(1)
    prep = Preprocess.from_dict(pre)
    mm = np.memmap(Path(folder) / "images.u8", np.uint8, "r+", shape=(total, *shape))
    for row, ref in jobs:
        mm[row] = prep(load_image(ref))
    mm.flush()
    return len(jobs)


def build_cache(run: Path, refs: Sequence[str], pre: Preprocess, *, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> ImageCache:
    """Prepare the images of ``refs`` that the cache lacks and return them all as an :class:`ImageCache`.

    Parameters
    ----------
    run : path
        The run directory (the cache goes to ``run/cache``).
    refs : sequence of str
        Manifest ``image`` references.
    pre : Preprocess
        The contract.
    workers : int, optional
        Worker processes when many images are missing (default: the CPUs this process may use).
    progress : callable, optional
        Called with (images prepared so far, images to prepare).

    Notes
    -----
    A lock file serialises concurrent builders (two DDP ranks, two stages). The index is
    written last, so a killed build leaves the cache as it was: the rows it was writing
    are written again next time.
    """
    import fcntl

    folder = cache_folder(run, pre)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (pre.in_chans, pre.size, pre.size)
    with ThreadPoolExecutor(max_workers=4) as pool:
        digests = list(pool.map(image_digest, refs))
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        index_path = folder / "index.parquet"
        known = (pd.read_parquet(index_path).set_index("digest")["row"].to_dict() if index_path.is_file() else {})
        todo: dict[str, str] = {}
        for d, ref in zip(digests, refs):
            if d not in known and d not in todo:
                todo[d] = ref
        if todo:
            start = len(known)
            total = start + len(todo)
            data = folder / "images.u8"
            with open(data, "ab") as fh:  # size the file (sparse): rows past `start` are written below
                fh.truncate(total * int(np.prod(shape)))
            jobs = [(start + i, ref) for i, ref in enumerate(todo.values())]
            chunks = [jobs[i:i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
            n_workers = min(workers or len(os.sched_getaffinity(0)), len(chunks))
            done = 0
            if n_workers > 1 and len(jobs) >= _PARALLEL_FROM:
                with ProcessPoolExecutor(n_workers, mp_context=get_context("spawn")) as ex:
                    futures = [ex.submit(_prepare_rows, str(folder), shape, total, pre.to_dict(), c) for c in chunks]
                    for f in futures:
                        done += f.result()
                        if progress is not None:
                            progress(done, len(jobs))
            else:
                for c in chunks:
                    done += _prepare_rows(str(folder), shape, total, pre.to_dict(), c)
                    if progress is not None:
                        progress(done, len(jobs))
            known.update({d: start + i for i, d in enumerate(todo)})
            tmp = index_path.with_suffix(".tmp")
            pd.DataFrame({"digest": list(known), "row": list(known.values())}).to_parquet(tmp, index=False)
            tmp.replace(index_path)
            (folder / "contract.json").write_text(json.dumps(pre.to_dict(), indent=1))
            log.info("cache %s: %d image(s) prepared, %d reused", folder.name, len(todo), len(refs) - len(todo))
    return ImageCache(folder, np.array([known[d] for d in digests], np.int64), shape)

