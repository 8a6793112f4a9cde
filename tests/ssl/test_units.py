"""SSL building blocks against independent definitions: MICLe pairs, NT-Xent, MAE, patient draws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from medlens.config import parse_config
from medlens.errors import ConfigError
from medlens.ssl import MAE, labels_saved, micle_partners, nt_xent, random_views, sample_patients


@pytest.mark.parametrize("seed", range(25))
def test_micle_partner_is_another_image_of_the_same_patient(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    patients = rng.choice([f"P{i}" for i in range(int(rng.integers(1, 20)))], size=n)
    partner = micle_partners(patients, np.random.default_rng(seed + 1000))
    counts = pd.Series(patients).value_counts()
    for i, j in enumerate(partner):
        assert patients[j] == patients[i]
        if counts[patients[i]] >= 2:
            assert j != i
        else:
            assert j == i


def test_micle_partners_cover_every_other_image():
    patients = np.array(["a"] * 4 + ["b"])
    seen = {tuple(micle_partners(patients, np.random.default_rng(s))[:4]) for s in range(200)}
    firsts = {p[0] for p in seen}
    assert firsts == {1, 2, 3}  # uniform over the patient's other images, never itself


def _nt_xent_loop(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """The SimCLR paper's definition, written out pair by pair."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = np.array([z[i] @ z[k] / t for k in range(2 * n)])
        denom = sum(math.exp(sims[k]) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sims[j]) / denom)
    return total / (2 * n)


def test_nt_xent_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    ours = float(nt_xent(z1, z2, 0.3))
    assert ours == pytest.approx(_nt_xent_loop(z1.numpy(), z2.numpy(), 0.3), rel=1e-10)
    assert float(nt_xent(z1, z1 + 1e-3, 0.1)) < ours  # matching views give a lower loss


def test_views_differ_and_are_normalised():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = random_views(x, torch.Generator().manual_seed(1), crop_scale=0.4)
    b = random_views(x, torch.Generator().manual_seed(2), crop_scale=0.4)
    again = random_views(x, torch.Generator().manual_seed(1), crop_scale=0.4)
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, again) and not torch.allclose(a, b)
    assert a.min() >= -2 - 1e-6 and a.max() <= 2 + 1e-6  # (0..1 - 0.5) / 0.25


def test_mae_masks_and_patchifies():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=0)
    mae = MAE(vit, mask_ratio=0.75, decoder_dim=32, decoder_depth=1)
    x = torch.randn(2, 3, 64, 64)
    p = mae.patchify(x)
    assert p.shape == (2, 16, 16 * 16 * 3)
    assert torch.equal(p[0, 1].reshape(16, 16, 3).permute(2, 0, 1), x[0, :, :16, 16:32])  # row-major patch order
    loss = mae(x, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0 and vit.blocks[0].attn.qkv.weight.grad is not None
    with pytest.raises(ConfigError, match="VisionTransformer"):
        MAE(timm.create_model("resnet18", num_classes=0), mask_ratio=0.75, decoder_dim=32, decoder_depth=1)


def test_sample_patients_takes_whole_patients_stratified():
    rows = pd.DataFrame({"sample_id": [f"s{i}" for i in range(200)],
                         "patient_id": [f"p{i // 4}" for i in range(200)],
                         "label": [int((i // 4) % 5 == 0) for i in range(200)]})
    for frac in (0.01, 0.1, 0.5, 1.0):
        ids = sample_patients(rows, frac, seed=3)
        chosen = rows[rows["sample_id"].isin(ids)]
        patients = chosen.groupby("patient_id").size()
        assert (patients == 4).all()  # every image of a drawn patient
        assert set(chosen["label"]) == {0, 1}  # at least one patient of each class
        assert abs(len(patients) - max(2, round(frac * 50))) <= 1
    assert sample_patients(rows, 0.1, seed=3) == sample_patients(rows, 0.1, seed=3)
    assert sample_patients(rows, 0.1, seed=3) != sample_patients(rows, 0.1, seed=4)


def test_labels_saved():
    assert labels_saved({0.1: 0.7, 0.25: 0.81, 1.0: 0.9}, 0.8) == pytest.approx(0.75)
    assert labels_saved({0.1: 0.7, 1.0: 0.75}, 0.8) is None


def test_path_pool_needs_a_path():
    with pytest.raises(ConfigError, match="unlabeled_path"):
        parse_config({"ssl": {"unlabeled": "path"}})
    with pytest.raises(ConfigError, match="fraction"):
        parse_config({"ssl": {"fractions": [0.0, 0.5]}})
