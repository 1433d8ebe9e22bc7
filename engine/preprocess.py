"""Person crops exactly as the official demo makes them.

Square box of side max(w, h) around the box centre, scale 1.0 (no enlargement),
bilinear affine warp to 224x224 with a black border, no half-pixel offset:
x' = 112 + (x - cx) * 224 / side. RGB in, RGB out (normalization: engine.model.inference).
"""
from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 224


def square_box(box_xywh: np.ndarray) -> np.ndarray:
    """(..., 4) boxes (x, y, w, h), top-left corner -> (..., 3) (cx, cy, side), side = max(w, h)."""
    box = np.asarray(box_xywh, np.float64)
    cx = box[..., 0] + box[..., 2] / 2
    cy = box[..., 1] + box[..., 3] / 2
    return np.stack([cx, cy, np.maximum(box[..., 2], box[..., 3])], axis=-1)


def crop_matrix(center: np.ndarray, side: float, out_size: int = CROP_SIZE) -> np.ndarray:
    """2x3 affine image -> crop: maps the box centre to the crop centre, side to out_size.

    Built exactly as the official demo builds it (``gen_trans_from_patch_cv``: three point
    pairs -- centre, centre + half a side down, centre + half a side right -- through
    ``cv2.getAffineTransform``), with the same roundings, so crops match it bit for bit for
    float boxes too: the centre stays float64, the half side is rounded to float32 first,
    and only their sum is rounded to float32 (``float32(c + float32(side / 2))``, not
    ``float32(float32(c) + side / 2)``). warpAffine rounds the sampling position to 1/32 px,
    so a matrix one float32 ulp off flips that rounding for some pixels."""
    c = np.asarray(center, np.float64)[:2]
    half = np.float32(float(side) * 0.5)            # the official ``src_downdir``/``src_rightdir``
    src = np.zeros((3, 2), np.float32)
    src[0] = c
    src[1] = c + np.array([0.0, half], np.float32)   # float64 + float32 -> float64, then rounded once
    src[2] = c + np.array([half, 0.0], np.float32)
    dst = np.zeros((3, 2), np.float32)
    dst[0] = [out_size * 0.5, out_size * 0.5]
    dst[1] = dst[0] + np.array([0.0, out_size * 0.5])
    dst[2] = dst[0] + np.array([out_size * 0.5, 0.0])
    return cv2.getAffineTransform(src, dst)


def crop_person(image: np.ndarray, center: np.ndarray, side: float, out_size: int = CROP_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 image -> (out_size, out_size, 3) uint8 crop (bilinear, black border)."""
    return cv2.warpAffine(image, crop_matrix(center, side, out_size), (out_size, out_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
