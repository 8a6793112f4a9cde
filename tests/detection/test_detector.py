"""The detector's pieces: targets and decoding invert each other, augmentation moves boxes with the image,
box tables give the mask's boxes and name the bad row, and the crop/scale mapping inverts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medlens.data.preprocess import Preprocess
from medlens.evaluate.boxes import boxes_from_mask
from medlens.detection.data import load_box_table, load_det_arrays
from medlens.detection.model import DetNet, Detector, decode
from medlens.evaluate.lesions import best_f1_threshold
from medlens.detection.train import _augment, targets
from medlens.errors import DataError


def _random_boxes(rng, size: int, n: int) -> np.ndarray:
    """Boxes whose centre pixels are at least 3 px apart (one heat-map peak each)."""
    out, centres = [], []
    while len(out) < n:
        w, h = rng.uniform(1.5, 9, 2)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        c = np.array([np.floor(x0 + w / 2), np.floor(y0 + h / 2)])
        if all(np.abs(c - o).max() >= 3 for o in centres):
            centres.append(c)
            out.append([x0, y0, x0 + w, y0 + h])
    return np.asarray(out)


def test_decoding_the_targets_gives_back_the_boxes():
    rng = np.random.default_rng(0)
    boxes = [_random_boxes(rng, 32, 5), _random_boxes(rng, 32, 3)]
    heat, reg, mask = targets(boxes, 32, sigma_scale=0.25)
    assert mask.sum() == 8 and heat.max() == 1.0
    out, scores = decode(heat.clamp(max=1.0), reg, k=5)
    for i, b in enumerate(boxes):
        got = out[i, :len(b)].numpy()
        order = [int(np.argmin(np.abs(got - t).sum(1))) for t in b]
        np.testing.assert_allclose(got[order], b, atol=1e-4)
        assert (scores[i, :len(b)] == 1).all()
    assert (scores[1, 3:] < 1).all()  # no third image's peaks beyond the lesions


def test_augmentation_moves_boxes_with_the_image():
    rng = np.random.default_rng(1)
    boxes = []  # whole pixels (the painted mask is exact), one box in each of 3 random cells of a 3x3 grid of 10 px
    for _ in range(16):
        cells = rng.choice(9, 3, replace=False)
        x0, y0 = 10 * (cells % 3) + rng.integers(0, 4, 3), 10 * (cells // 3) + rng.integers(0, 4, 3)
        boxes.append(np.stack([x0, y0, x0 + rng.integers(1, 6, 3), y0 + rng.integers(1, 6, 3)], 1).astype(float))
    x = torch.zeros(16, 3, 32, 32)
    for i, bs in enumerate(boxes):
        for x0, y0, x1, y1 in bs.astype(int):
            x[i, :, y0:y1, x0:x1] = 1.0
    gen = torch.Generator().manual_seed(0)
    xa, ba = _augment(x, boxes, gen)
    moved = 0
    for i in range(16):
        lit = xa[i, 0].numpy() > xa[i, 0].numpy().min() + 0.4  # gain/bias jitter keeps boxes above background
        got = boxes_from_mask(lit)
        assert sorted(map(tuple, got)) == sorted(map(tuple, ba[i].round(6))), i
        moved += not np.array_equal(np.sort(ba[i], 0), np.sort(boxes[i], 0))
    assert moved >= 10  # most images were flipped or transposed


def _image_folder(tmp_path, n: int = 2):
    rows = []
    for i in range(n):
        img = np.full((40, 48, 3), 120, np.uint8)
        mask = np.zeros((40, 48), np.uint8)
        mask[5:9, 10:13] = 255
        mask[20 + i:30, 30:33] = 255
        Image.fromarray(img).save(tmp_path / f"img{i}.png")
        Image.fromarray(mask).save(tmp_path / f"mask{i}.png")
        rows.append({"sample_id": f"s{i}", "patient_id": f"p{i}", "image": str(tmp_path / f"img{i}.png"),
                     "mask": str(tmp_path / f"mask{i}.png")})
    return pd.DataFrame(rows)


def test_box_table_gives_the_same_boxes_as_mask_components(tmp_path):
    manifest = _image_folder(tmp_path)
    rows = [{"image": f"img{i}.png", "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3], "class": "lesion"}
            for i in range(2) for b in boxes_from_mask(np.asarray(Image.open(tmp_path / f"mask{i}.png")) > 0)]
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)
    prep = Preprocess(size=32, in_chans=3)
    from_mask = load_det_arrays(manifest, prep, None)
    from_table = load_det_arrays(manifest, prep, load_box_table(tmp_path / "boxes.csv", manifest))
    for a, b in zip(from_mask.boxes, from_table.boxes):
        np.testing.assert_allclose(np.sort(a, 0), np.sort(b, 0))
    assert from_mask.boxes[0].shape == (2, 4) and from_mask.boxes[0].max() <= 32
    # 48x40 -> 32 px: the longer side scales by 2/3, and the image is padded vertically by (32 - 27) // 2
    np.testing.assert_allclose(from_mask.boxes[0][0], [10 * 2 / 3, 5 * 2 / 3 + 2, 13 * 2 / 3, 9 * 2 / 3 + 2])


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.drop(columns=["y1"]), "lacks column(s) y1"),
    (lambda t: t.assign(x1=t["x0"]), "row 2: x0, y0, x1, y1 must be numbers with x1 > x0"),
    (lambda t: t.assign(image=["img0.png", "nope.png"]), "row 3: image 'nope.png' is not in the study's manifest"),
    (lambda t: t.assign(**{"class": ["a", "b"]}), "has 2 classes"),
])
def test_bad_box_tables_name_the_problem(tmp_path, edit, message):
    manifest = _image_folder(tmp_path)
    table = pd.DataFrame({"image": ["img0.png", "img1.png"], "x0": [1, 2], "y0": [1, 2], "x1": [4, 5], "y1": [4, 5]})
    edit(table).to_csv(tmp_path / "boxes.csv", index=False)
    with pytest.raises(DataError) as err:
        load_box_table(tmp_path / "boxes.csv", manifest)
    assert message in str(err.value) and "boxes.csv" in str(err.value)


def test_a_manifest_without_boxes_or_masks_is_one_clear_error(tmp_path):
    manifest = _image_folder(tmp_path).drop(columns=["mask"])
    with pytest.raises(DataError, match="detection.boxes"):
        load_det_arrays(manifest, Preprocess(size=32, in_chans=3), None)


def test_box_mapping_inverts_through_roi_crop():
    prep = Preprocess(size=32, in_chans=3, roi_crop=True)
    img = np.zeros((3, 50, 80), np.float32)
    img[:, 5:45, 10:70] = 0.8
    crop = prep.crop(img)
    box = (20.0, 12.5, 31.0, 20.0)
    out = prep.box_to_output(box, img.shape[1:], crop)
    np.testing.assert_allclose(prep.box_to_input(out, crop), box, atol=1e-9)


def test_ensemble_detector_shapes_and_tie_free_peaks():
    torch.manual_seed(0)
    det = Detector([DetNet(3, (4, 8, 16, 32, 64, 8)).eval(), DetNet(3, (4, 8, 16, 32, 64, 8)).eval()], k=7)
    boxes, scores, feats = det(torch.rand(2, 3, 32, 32))
    assert boxes.shape == (2, 7, 4) and scores.shape == (2, 7) and feats.shape == (2, 128)
    assert (boxes[..., 2] > boxes[..., 0]).all() and (scores[:, :-1] >= scores[:, 1:]).all()
    flat = torch.full((1, 8, 8), 0.5)  # a plateau: one peak per 3x3 neighbourhood pattern, chosen by position
    _, s = decode(flat, torch.zeros(1, 4, 8, 8), k=64)
    assert 0 < int((s > 0).sum()) < 64


def test_operating_point_maximises_lesion_f1():
    gt = [np.array([[0, 0, 4, 4]]), np.array([[10, 10, 14, 14]])]
    pred = [(np.array([[1, 1, 3, 3], [20, 20, 22, 22]]), np.array([0.9, 0.8])),
            (np.array([[11, 11, 13, 13]]), np.array([0.6]))]
    # t = 0.9: TP 1, FN 1 -> 2/3; t = 0.8: TP 1, FP 1, FN 1 -> 1/2; t = 0.6: TP 2, FP 1 -> 4/5
    assert best_f1_threshold(gt, pred) == 0.6
