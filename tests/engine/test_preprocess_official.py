"""engine.preprocess equals the official demo crop bit for bit, for float boxes too."""
from __future__ import annotations

import numpy as np

from engine.preprocess import crop_matrix, crop_person
from tests.engine.official_crop import official_crop, official_matrix


def _boxes(n, seed):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-50, 690, n), rng.uniform(-50, 530, n), rng.uniform(8, 700, n)])


def test_float_boxes_give_the_official_matrix_and_crop():
    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), np.uint8)
    boxes = _boxes(400, 0)
    bad_m = [i for i, (cx, cy, s) in enumerate(boxes)
             if not np.array_equal(crop_matrix(np.array([cx, cy]), s), official_matrix(cx, cy, s))]
    bad_c = [i for i, (cx, cy, s) in enumerate(boxes)
             if not np.array_equal(crop_person(image, np.array([cx, cy]), s), official_crop(image, cx, cy, s))]
    assert bad_m == [] and bad_c == [], (len(bad_m), len(bad_c))


def test_float32_centres_and_integer_boxes_too():
    image = np.random.default_rng(2).integers(0, 256, (240, 320, 3), np.uint8)
    for cx, cy, s in _boxes(100, 3):
        c32 = np.array([cx, cy], np.float32)       # a float32 centre is used as its exact value
        assert np.array_equal(crop_matrix(c32, s), official_matrix(c32[0], c32[1], s))
        ci, si = np.round([cx, cy]), float(round(s))
        assert np.array_equal(crop_person(image, ci, si), official_crop(image, ci[0], ci[1], si))


def test_the_restated_official_formula_is_not_the_float32_centre_variant():
    """Guard against a vacuous test: rounding the centre to float32 first gives other matrices."""
    import cv2

    def variant(cx, cy, side):
        src = np.zeros((3, 2), np.float32)
        src[0] = np.array([cx, cy], np.float32)
        src[1] = src[0] + np.array([0, side * 0.5])
        src[2] = src[0] + np.array([side * 0.5, 0])
        dst = np.float32([[112, 112], [112, 224], [224, 112]])
        return cv2.getAffineTransform(src, dst)

    differ = sum(not np.array_equal(variant(*b), official_matrix(*b)) for b in _boxes(400, 0))
    assert differ > 50
