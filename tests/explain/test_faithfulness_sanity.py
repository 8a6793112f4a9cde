"""Deletion/insertion on a model whose evidence is known; SSIM; the randomisation cascade."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from medlens.errors import DataError
from medlens.explain.faithfulness import curve_auc, deletion_insertion_curves
from medlens.inference.layers import resolve_target
from medlens.explain.sanity import cascade_blocks, cascading_randomisation, sanity_verdict, ssim_score


class PatchModel(torch.nn.Module):
    """Class-1 logit rises with the (normalised) brightness of the top-left 16×16 patch."""

    def forward(self, x):
        z = 8 * (x[:, :, :16, :16].mean((1, 2, 3)) - 1.0)
        return torch.stack([torch.zeros_like(z), z], 1)


def test_deletion_falls_and_insertion_rises_faster_for_the_true_evidence():
    images = torch.full((2, 3, 64, 64), 20, dtype=torch.uint8)
    images[:, :, :16, :16] = 230
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    good = np.repeat((1 - (yy + xx) / 126)[None], 2, 0)  # highest on the patch
    bad = 1 - good
    model = PatchModel()
    d_good, i_good = deletion_insertion_curves(model, images, good, steps=8)
    d_bad, i_bad = deletion_insertion_curves(model, images, bad, steps=8)
    assert d_good.shape == (2, 9) and d_good[0, 0] > 0.9 and i_good[0, 0] < 0.1
    assert (curve_auc(d_good) < curve_auc(d_bad) - 0.3).all()
    assert (curve_auc(i_good) > curve_auc(i_bad) + 0.3).all()
    assert curve_auc(np.ones((1, 5)))[0] == pytest.approx(1.0)
    with pytest.raises(DataError):
        deletion_insertion_curves(model, images, good[:1])


def test_ssim():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (32, 32))
    assert ssim_score(a, a) == pytest.approx(1.0)
    assert ssim_score(a, rng.uniform(0, 1, (32, 32))) < 0.2


def test_ssim_definition_is_pinned():
    """Wang et al.'s SSIM map with a 13-tap Gaussian (sigma 1.5, radius 4 sigma), mirrored borders, mean over the
    whole map. skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``
    fixes an 11-tap window (truncate 3.5), 'reflect' borders and crops 5 px before the mean; no setting reproduces
    this definition (its SSIM differs by up to 0.01 uncropped and 0.05-0.15 cropped on smooth random maps),
    so ssim_score keeps its own."""
    from scipy import ndimage

    def blur(z):
        return ndimage.gaussian_filter(z, 1.5, truncate=4.0, mode="mirror")

    rng = np.random.default_rng(0)
    for i in range(20):
        a = ndimage.gaussian_filter(rng.random((24 + i, 40)), i % 4)
        b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1) if i % 2 else rng.random(a.shape)
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        ref = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        assert ssim_score(a, b) == pytest.approx(ref.mean(), rel=1e-12, abs=1e-12)


def test_cascade_order_output_first():
    model = timm.create_model("test_resnet", num_classes=2)
    blocks = cascade_blocks(model)
    assert blocks[0] == "fc" and blocks[1].startswith("layer4") and blocks[-1].startswith("conv1")
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=2)
    vb = cascade_blocks(vit)
    assert vb[0] == "head" and "blocks.11" in vb and vb[-1] == "(embeddings)"


def test_cascading_randomisation_reports_and_flags(tiny_images):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = resolve_target(model, size=64)
    steps, verdict = cascading_randomisation(model, tiny_images[:2], target)
    assert list(steps.columns) == ["step", "randomised", "rank_correlation", "ssim"]
    assert len(steps) == len(cascade_blocks(model))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert verdict["passed"] == (verdict["final_rank_correlation"] < 0.5)
    strict = sanity_verdict(steps, "gradcam", max_rank_correlation=-2.0)
    assert not strict["passed"] and "FAILS" in strict["message"]


def test_faithfulness_sentence_follows_the_intervals():
    from medlens.explain.report import faithfulness_text

    def ci(v, lo, hi):
        return {"value": v, "low": lo, "high": hi}

    f = {"deletion_auc": ci(0.53, 0.47, 0.59), "deletion_auc_random": ci(0.64, 0.61, 0.66),
         "insertion_auc": ci(0.33, 0.14, 0.55), "insertion_auc_random": ci(0.41, 0.32, 0.51)}
    text = faithfulness_text(f)
    assert "deletion AUC 0.53, 95% CI 0.47–0.59, vs 0.64 for random maps): shown;" in text
    assert "insertion AUC 0.33, 95% CI 0.14–0.55, vs 0.41 for random maps): not shown, the intervals overlap." in text
    f["deletion_auc"] = ci(0.80, 0.75, 0.85)  # removing the map's pixels first hurts less than random ones
    assert "0.80, 95% CI 0.75–0.85, vs 0.64 for random maps): the opposite holds" in faithfulness_text(f)
    assert faithfulness_text(None) == "" and faithfulness_text({"deletion_auc": None}) == ""


def test_report_says_agreement_was_not_measured_without_an_expert_region(tmp_path):
    """MedMNIST and image folders have no expert box: no 'nan%' and no verdict on agreement."""
    import json

    import pandas as pd

    from medlens.explain.report import write_explain_section
    from medlens.sections import read_section

    nan = {"value": float("nan"), "low": float("nan"), "high": float("nan")}
    summary = {"agreement": {k: {"model": nan, "random": nan} for k in ("energy", "pointing", "iou", "dice")},
               "faithfulness": None, "flags": ["No positive image with an expert region among the explained images: "
                                               "agreement not measured."],
               "grid": [8, 8], "layer": "layer2", "method": "gradcam", "n_images": 12, "n_positive_with_roi": 0,
               "n_scored": 0, "scope": "all positives", "rationale_ok": False, "sanity": None, "threshold": 0.5}
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"sample_id": [], "score": [], "label": [], "energy": []}).to_parquet(
        tmp_path / "explain" / "agreement.parquet")
    text = read_section(write_explain_section(tmp_path))["summary"]
    assert "nan" not in text and "does NOT point" not in text
    assert text == ("Heat maps (gradcam, layer layer2, 8×8 cells) of 12 test images were drawn, but no positive image "
                    "has an expert region, so whether the model looks where the expert looks was not measured.")
