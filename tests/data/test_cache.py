"""The preprocess-once image cache: the contract's exact bytes, prepared once, read in batches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medlens.data import cache as cache_mod
from medlens.data.cache import build_cache, cache_folder
from medlens.data.preprocess import Preprocess
from medlens.models import create_model
from medlens.config import TrainConfig
from medlens.config.engine import EngineConfig
from medlens.train.loop import fit

PRE = Preprocess(size=24, in_chans=3, roi_crop=True, clahe="lab")


def _folder(tmp_path, n: int = 12, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    refs = []
    for i in range(n):
        img = (rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)
        img[:4] = 0  # a dark border for the field-of-view crop to find
        path = tmp_path / "images" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path)
        refs.append(str(path))
    return refs


def test_the_cache_holds_the_contracts_exact_bytes(tmp_path):
    refs = _folder(tmp_path)
    cached = build_cache(tmp_path / "run", refs, PRE)
    assert cached.shape == (12, 3, 24, 24)
    assert torch.equal(cached.to_tensor(), PRE.load(refs))
    assert torch.equal(cached[3], PRE.load(refs[3:4])[0])
    assert torch.equal(cached[torch.tensor([5, 1])], PRE.load([refs[5], refs[1]]))


def test_worker_processes_write_the_same_bytes(tmp_path, monkeypatch):
    refs = _folder(tmp_path, n=10)
    monkeypatch.setattr(cache_mod, "_PARALLEL_FROM", 2)
    monkeypatch.setattr(cache_mod, "_CHUNK", 3)
    cached = build_cache(tmp_path / "run", refs, PRE, workers=2)
    assert torch.equal(cached.to_tensor(), PRE.load(refs))


def test_only_changed_images_and_changed_contracts_are_prepared(tmp_path, monkeypatch):
    refs = _folder(tmp_path)
    run = tmp_path / "run"
    build_cache(run, refs, PRE)
    calls = []
    real = cache_mod._prepare_rows
    monkeypatch.setattr(cache_mod, "_prepare_rows", lambda *a: calls.append(len(a[-1])) or real(*a))
    assert torch.equal(build_cache(run, refs[::-1], PRE).to_tensor(), PRE.load(refs[::-1]))
    assert calls == []  # nothing new: every image is read from the map
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(refs[4])  # one image changes on disk
    again = build_cache(run, refs, PRE)
    assert calls == [1] and torch.equal(again.to_tensor(), PRE.load(refs))
    other = Preprocess(size=16, in_chans=1)
    assert cache_folder(run, other) != cache_folder(run, PRE)
    assert build_cache(run, refs, other).shape == (12, 1, 16, 16) and calls == [1, 12]


def test_a_killed_build_leaves_the_cache_usable(tmp_path):
    refs = _folder(tmp_path)
    run = tmp_path / "run"
    build_cache(run, refs[:4], PRE)

    def kill(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(run, refs, PRE, progress=kill)
    assert torch.equal(build_cache(run, refs, PRE).to_tensor(), PRE.load(refs))


def test_it_pickles_without_the_map_and_loads_in_worker_processes(tmp_path):
    refs = _folder(tmp_path)
    cached = build_cache(tmp_path / "run", refs, PRE)
    cached[0]  # opens the map
    assert len(pickle.dumps(cached)) < 2000
    sub = cached.subset([7, 2, 9])
    loader = DataLoader(sub, batch_sampler=[[0, 1], [2]], num_workers=2, collate_fn=lambda b: b)
    assert torch.equal(torch.cat(list(loader)), PRE.load([refs[7], refs[2], refs[9]]))


@pytest.mark.slow
def test_training_from_the_cache_equals_training_in_memory(tmp_path):
    refs = _folder(tmp_path, n=24)
    cached = build_cache(tmp_path / "run", refs, PRE)
    y = np.arange(24) % 2
    cfg = TrainConfig(epochs=2, batch_size=8, image_size=24)
    weights = []
    for i, (x, workers) in enumerate(((cached.to_tensor(), 0), (cached, 0), (cached, 2))):
        torch.manual_seed(0)
        model = create_model("test_efficientnet", num_classes=2, in_chans=3)
        engine = EngineConfig(loader_workers=workers, checkpoint=False)
        (tmp_path / f"fit{i}").mkdir()
        fit(model, (x[:16] if i == 0 else x.subset(range(16)), y[:16]),
            (x[16:] if i == 0 else x.subset(range(16, 24)), y[16:]),
            cfg, num_classes=2, seed=0, out_dir=tmp_path / f"fit{i}", engine=engine)
        weights.append(model.state_dict())
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
