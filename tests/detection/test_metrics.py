"""Detection metrics: boxes from masks, FROC/CPM against a hand-computed case, COCO mAP through pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medlens.evaluate.boxes import box_iou, boxes_from_mask
from medlens.evaluate.froc import FP_RATES, cpm, froc, froc_with_ci, match, sensitivity_at


def test_boxes_from_mask_by_hand_and_on_the_phantom(tmp_path):
    m = np.zeros((8, 10), np.uint8)
    m[1:3, 1:4] = 1          # 2 x 3 block
    m[3, 4] = 1              # touches it diagonally only
    m[6, 8] = 1              # a single pixel
    assert boxes_from_mask(m).tolist() == [[1, 1, 5, 4], [8, 6, 9, 7]]
    assert boxes_from_mask(m, connectivity=4).tolist() == [[1, 1, 4, 3], [4, 3, 5, 4], [8, 6, 9, 7]]
    assert boxes_from_mask(m, min_pixels=2).tolist() == [[1, 1, 5, 4]]
    assert boxes_from_mask(np.zeros((4, 4))).shape == (0, 4)

    from medlens.data.images import load_mask
    from medlens.data.synthetic import generate

    man = generate(tmp_path, n_patients=12, image_size=64)
    for ref in man["mask"]:
        mask = load_mask(str(tmp_path / ref))
        boxes = boxes_from_mask(mask)
        assert len(boxes) == ndimage.label(mask, np.ones((3, 3)))[1]
        for x0, y0, x1, y1 in boxes.astype(int):  # every box is tight around lesion pixels
            crop = mask[y0:y1, x0:x1]
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def test_box_iou_by_hand():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]))
    assert iou.tolist() == [[50 / 150, 0.0, 1.0]]


# two images, three lesions; image 1: A hit twice (the 0.8 duplicate counts for nothing), one FP, B hit late;
# image 2: lesion C missed, two FPs
GT = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[5, 5, 15, 15]])]
PRED = [(np.array([[2, 2, 6, 6], [1, 1, 9, 9], [40, 40, 44, 44], [22, 22, 28, 28]]), np.array([0.9, 0.8, 0.7, 0.4])),
        (np.array([[40, 40, 44, 44], [50, 0, 54, 4]]), np.array([0.6, 0.3]))]


def test_froc_and_cpm_by_hand():
    lesions, fps = match(GT, PRED)
    assert [x.tolist() for x in lesions] == [[0.9, 0.4], [0.0]]
    assert [x.tolist() for x in fps] == [[0.7], [0.6, 0.3]]
    c = froc(GT, PRED)
    assert c.thresholds.tolist() == [np.inf, 0.9, 0.7, 0.6, 0.4, 0.3]
    assert np.allclose(c.sensitivity, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert np.allclose(c.fp_per_image, [0, 0, 0.5, 1.0, 1.0, 1.5])
    # 1/8, 1/4, 1/2 FP/image: 1/3; at 1 the higher point of the vertical step, 2/3; beyond the end, 2/3
    assert np.allclose(sensitivity_at(c), [1 / 3] * 3 + [2 / 3] * 4)
    assert cpm(c) == pytest.approx(11 / 21, abs=1e-12)
    assert sensitivity_at(c, [0.75])[0] == pytest.approx(0.5)  # halfway between (0.5, 1/3) and (1, 2/3)


def test_iou_rule_is_stricter_than_the_centre_rule():
    gt = [np.array([[0, 0, 10, 10]])]
    pred = [(np.array([[4, 4, 30, 30]]), np.array([0.9]))]  # centre (17, 17) outside; IoU 36/716
    assert match(gt, pred)[0][0].tolist() == [0.0]
    pred = [(np.array([[2, 2, 7, 7]]), np.array([0.9]))]    # centre inside; IoU 0.25
    assert match(gt, pred)[0][0].tolist() == [0.9]
    assert match(gt, pred, criterion="iou", iou=0.3)[0][0].tolist() == [0.0]
    assert match(gt, pred, criterion="iou", iou=0.2)[0][0].tolist() == [0.9]


def test_froc_ci_resamples_patients():
    out = froc_with_ci(GT * 5, PRED * 5, patients=[f"p{i // 2}" for i in range(10)], n_boot=300, seed=1)
    assert out["cpm"]["value"] == pytest.approx(11 / 21)
    assert out["cpm"]["low"] <= out["cpm"]["value"] <= out["cpm"]["high"]
    assert out["n_patients"] == 5 and out["n_lesions"] == 15 and out["n_boot_used"] == 300
    assert list(out["sensitivity_at"]) == [str(r) for r in FP_RATES]
    assert out == froc_with_ci(GT * 5, PRED * 5, patients=[f"p{i // 2}" for i in range(10)], n_boot=300, seed=1)


def test_coco_map_by_hand():
    """pycocotools' 101-point AP on boxes whose matches are worked out by hand (xyxy -> xywh checked)."""
    from medlens.evaluate.coco import coco_map

    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]])]
    # exact hit (0.9); a false positive (0.8); a hit of IoU 80/120 = 0.667 (0.7): a match at IoU 0.50-0.65 only
    pred = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [22, 20, 32, 30]]), np.array([0.9, 0.8, 0.7]))]
    out = coco_map(gt, pred)
    # IoU <= 0.65: precision envelope 1 up to recall 0.5 (51 points), 2/3 after (50 points)
    ap_low = (51 + 50 * 2 / 3) / 101
    ap_high = 51 / 101  # IoU >= 0.70: recall stops at 0.5
    assert out["map_50"] == pytest.approx(ap_low, abs=1e-9)
    assert out["map"] == pytest.approx((4 * ap_low + 6 * ap_high) / 10, abs=1e-9)
    assert coco_map(gt, [(np.zeros((0, 4)), np.zeros(0))])["map"] == 0.0


def test_boxes_from_probability_scores_each_component_by_its_maximum():
    from medlens.evaluate.boxes import boxes_from_probability

    p = np.zeros((10, 12))
    p[1:3, 1:3] = [[0.6, 0.7], [0.9, 0.55]]
    p[6, 8:11] = [0.5, 0.8, 0.51]
    p[8, 0] = 0.49  # below the threshold
    boxes, scores = boxes_from_probability(p, 0.5)
    assert boxes.tolist() == [[1, 1, 3, 3], [8, 6, 11, 7]] and scores.tolist() == [0.9, 0.8]
    assert boxes_from_probability(p, 0.95)[0].shape == (0, 4)
