"""Segmentation metrics: agreement with MONAI, the empty-mask convention, lesion matching."""

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from medlens.errors import DataError
from medlens.seg.metrics import (
    average_surface_distance,
    dice_score,
    hd95_distance,
    iou_score,
    lesion_match,
)


def _random_pairs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        h, w = rng.integers(8, 48, 2)
        t = rng.random((h, w)) < rng.uniform(0.02, 0.5)
        p = rng.random((h, w)) < rng.uniform(0.02, 0.5)
        if i % 2:  # blob-like masks, as lesions are
            t, p = ndimage.binary_dilation(t & (rng.random((h, w)) < 0.1)), ndimage.binary_dilation(p & (rng.random((h, w)) < 0.1))
        if t.any() and p.any():
            pairs.append((t.astype(np.uint8), p.astype(np.uint8)))
    return pairs


def _monai(t, p):
    from monai.metrics import (compute_average_surface_distance, compute_dice, compute_hausdorff_distance,
                               compute_iou)

    T, P = (torch.tensor(a[None, None].astype(np.float32)) for a in (t, p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [compute_dice(P, T, include_background=True, ignore_empty=False).item(),
                compute_iou(P, T, include_background=True, ignore_empty=False).item(),
                compute_hausdorff_distance(P, T, include_background=True, percentile=95).item(),
                compute_average_surface_distance(P, T, include_background=True, symmetric=True).item()]


def test_agree_with_monai_on_random_masks():
    pairs = _random_pairs()
    assert len(pairs) > 25
    for t, p in pairs:
        ours = [dice_score(t, p), iou_score(t, p), hd95_distance(t, p), average_surface_distance(t, p)]
        # MONAI computes in float32: agreement to 1e-6 relative (and 1e-6 absolute near 0)
        np.testing.assert_allclose(ours, _monai(t, p), rtol=1e-6, atol=1e-6)


def _varied_pairs(n=600, seed=0):
    """Random and blob masks of 1..63 px sides, with empty, full and single-pixel masks, in mixed dtypes."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(x) for x in rng.integers(1, 64, 2))
        t = rng.random((h, w)) < rng.uniform(0, 0.6)
        p = rng.random((h, w)) < rng.uniform(0, 0.6)
        if i % 3 == 1:
            t = ndimage.binary_dilation(t & (rng.random((h, w)) < 0.1))
            p = ndimage.binary_dilation(p & (rng.random((h, w)) < 0.1))
        kind = i % 10
        if kind in (0, 2):
            t[:] = False
        if kind in (1, 2):
            p[:] = False
        if kind == 3:
            p[:] = True
        if kind == 4:
            t[:] = False
            t[rng.integers(h), rng.integers(w)] = True
        if kind == 5:
            p[:] = False
            p[rng.integers(h), rng.integers(w)] = True
        yield t.astype([np.uint8, bool, np.int64][i % 3]), p.astype([bool, np.uint8, np.float32][i % 3])
    yield np.ones((1, 300000), np.uint8), rng.random((1, 300000)) < 0.4  # seg/train.py pools a fold into one row


def test_dice_and_iou_are_the_exact_ratios():
    # MONAI with a float64 one-hot input computes in float64: equal bit for bit to the ratios of the counts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t, p in _varied_pairs():
            t, p = t != 0, p != 0
            inter, n_t, n_p, union = int((t & p).sum()), int(t.sum()), int(p.sum()), int((t | p).sum())
            assert dice_score(t, p) == (2.0 * inter / (n_t + n_p) if n_t + n_p else 1.0)
            assert iou_score(t, p) == (inter / union if union else 1.0)
    t = np.zeros((5, 7), np.uint8)
    t[1:4, 1:4] = 1
    p = np.zeros_like(t)
    p[2:4, 2:6] = 1
    assert (dice_score(t, p), iou_score(t, p)) == (8 / 17, 4 / 13)  # |T| = 9, |P| = 8, |T∩P| = 4, |T∪P| = 13
    assert type(dice_score(t, p)) is float and type(iou_score(t, p)) is float


EMPTY = np.zeros((16, 16), np.uint8)
BLOB = EMPTY.copy()
BLOB[4:8, 5:9] = 1


@pytest.mark.parametrize("t, p, dice, hd", [
    (EMPTY, EMPTY, 1.0, 0.0),          # no lesion, none predicted: perfect
    (EMPTY, BLOB, 0.0, np.nan),        # false positive image: Dice 0, distance undefined
    (BLOB, EMPTY, 0.0, np.nan),        # missed lesion image: Dice 0, distance undefined
    (BLOB, BLOB, 1.0, 0.0),
])
def test_empty_mask_convention(t, p, dice, hd):
    assert dice_score(t, p) == dice and iou_score(t, p) == dice
    for fn in (hd95_distance, average_surface_distance):
        assert (np.isnan(fn(t, p)) and np.isnan(hd)) or fn(t, p) == hd


def test_empty_convention_differs_from_monai_only_where_documented():
    # MONAI: ignore_empty=False gives the same Dice/IoU; surface distances are nan/inf where ours are nan
    m = _monai(EMPTY, BLOB)
    assert m[:2] == [0.0, 0.0] and not np.isfinite(m[3])
    m = _monai(BLOB, EMPTY)
    assert m[:2] == [0.0, 0.0] and not np.isfinite(m[3])


def test_lesion_match_counts_components():
    t = np.zeros((20, 20), np.uint8)
    t[1:4, 1:4] = 1          # found
    t[10:12, 10:12] = 1      # missed
    t[15, 15] = 1            # found, 1 px
    p = np.zeros_like(t)
    p[2:5, 2:5] = 1          # overlaps the first
    p[15:17, 15:17] = 1      # overlaps the third
    p[1:3, 15:18] = 1        # false positive
    m = lesion_match(t, p)
    assert sorted(m.true_areas.tolist()) == [1, 4, 9]
    assert m.true_detected.tolist() == [True, False, True]
    assert (m.n_pred, m.pred_correct) == (3, 2)
    e = lesion_match(EMPTY, EMPTY)
    assert e.true_areas.size == 0 and e.n_pred == 0 and e.pred_correct == 0


def test_diagonal_pixels_are_one_lesion():
    t = np.eye(5, dtype=np.uint8)
    assert len(lesion_match(t, t).true_areas) == 1


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="same shape"):
        dice_score(np.zeros((4, 4)), np.zeros((4, 5)))
