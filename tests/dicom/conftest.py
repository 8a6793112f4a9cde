"""Session fixture: the public corpora de-identified once with default options."""

from __future__ import annotations

import shutil

import pytest
from helpers.dicom import SECRET, corpus_files


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    """The corpora copied under neutral names, de-identified once with default options."""
    from medlens.dicom import DeidOptions, deidentify_tree

    base = tmp_path_factory.mktemp("corpus")
    src = base / "in"
    src.mkdir()
    for i, f in enumerate(corpus_files()):
        shutil.copy(f, src / f"{i:04d}_{f.name}")
    summary = deidentify_tree(src, base / "run1" / "out", options=DeidOptions(), secret=SECRET,
                              map_path=base / "run1" / "pseudonyms.csv", audit_path=base / "run1" / "audit.jsonl")
    return {"base": base, "in": src, "summary": summary, "run": base / "run1"}
