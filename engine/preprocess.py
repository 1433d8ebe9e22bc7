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

    Built as the official demo builds it (three point pairs in float32 -- centre, centre +
    half a side down, centre + half a side right -- through ``cv2.getAffineTransform``), so
    crops match it bit for bit: warpAffine rounds the sampling position to 1/32 px, and a
    float64 matrix differs from the float32-rounded one enough to flip that rounding."""
    half = float(side) * 0.5
    src = np.zeros((3, 2), np.float32)
    src[0] = np.array([center[0], center[1]], np.float32)
    src[1] = src[0] + np.array([0.0, half])
    src[2] = src[0] + np.array([half, 0.0])
    dst = np.zeros((3, 2), np.float32)
    dst[0] = [out_size * 0.5, out_size * 0.5]
    dst[1] = dst[0] + np.array([0.0, out_size * 0.5])
    dst[2] = dst[0] + np.array([out_size * 0.5, 0.0])
    return cv2.getAffineTransform(src, dst)


def crop_person(image: np.ndarray, center: np.ndarray, side: float, out_size: int = CROP_SIZE) -> np.ndarray:
    """(H, W, 3) uint8 image -> (out_size, out_size, 3) uint8 crop (bilinear, black border)."""
    return cv2.warpAffine(image, crop_matrix(center, side, out_size), (out_size, out_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
