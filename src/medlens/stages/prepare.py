"""``prepare``: every split image through the preprocessing contract once, into the run's image cache.

Train, evaluate, explain, trust and ssl then read prepared images from the memory map
(:mod:`medlens.data.cache`) instead of decoding files again. Preparation runs in worker
processes when many images are missing; an image already in the cache is not prepared
again, so a changed split or an added image costs only the new ones.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from medlens.config import StudyConfig
from medlens.data.cache import build_cache
from medlens.data.manifest import load_manifest
from medlens.data.preprocess import Preprocess
from medlens.data.splits import load_splits
from medlens.progress import progress_bar
from medlens.stages.protocol import Stage

log = logging.getLogger(__name__)

OUTPUT = "cache/prepared.json"


def split_ids(splits: dict) -> list[str]:
    """Every sample id of ``splits.json`` once: the folds' training and validation images, test, external."""
    ids = [s for fold in splits["folds"] for part in ("train", "val") for s in fold[part]]
    return list(dict.fromkeys([*ids, *splits["test"], *splits["external"]]))


def run(run_dir: Path, cfg: StudyConfig) -> None:
    """Prepare the split's images at the study's contract; write ``cache/prepared.json``."""
    manifest = load_manifest(run_dir / "manifest.parquet").set_index("sample_id")
    refs = manifest.loc[split_ids(load_splits(run_dir / "splits.json")), "image"].tolist()
    pre = Preprocess.from_config(cfg)
    t0, logged = time.perf_counter(), [0]
    with progress_bar() as bar:
        task = bar.add_task("prepare images", total=len(refs))

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            if done * 4 // total > logged[0]:  # a line per quarter in a pipe or log file
                logged[0] = done * 4 // total
                log.info("stage prepare: %d of %d images prepared", done, total)

        cache = build_cache(run_dir, refs, pre, progress=step)
    (run_dir / OUTPUT).write_text(json.dumps({"folder": cache.folder.name, "images": len(refs),
                                              "contract": pre.to_dict(),
                                              "seconds": round(time.perf_counter() - t0, 2)}, indent=1))


STAGE = Stage("prepare", run, sections=("train.image_size", "model.in_chans", "engine.preprocess"),
              reads=("manifest.parquet", "splits.json"), writes=(OUTPUT,))
