"""The official PyMAF demo crop, restated from its source for tests (not imported by the engine).

PyMAF's demo (``datasets/inference.py`` -> ``utils/imutils.py:get_single_image_crop_demo``,
VIBE's ``generate_patch_image_cv`` / ``gen_trans_from_patch_cv``) with scale 1.0 and no
rotation, keeping every dtype of the original: the centre is a float64 array, the two
direction vectors are float32 arrays (``rotate_2d`` returns float32), their sum is float64
and is rounded to float32 once when stored in ``src``.
"""
from __future__ import annotations

import cv2
import numpy as np


def _rotate_2d(pt_2d, rot_rad):
    x, y = pt_2d[0], pt_2d[1]
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return np.array([x * cs - y * sn, x * sn + y * cs], dtype=np.float32)


def gen_trans_from_patch_cv(c_x, c_y, src_width, src_height, dst_width, dst_height, scale, rot):
    src_w, src_h = src_width * scale, src_height * scale
    src_center = np.zeros(2)
    src_center[0], src_center[1] = c_x, c_y
    rot_rad = np.pi * rot / 180
    src_downdir = _rotate_2d(np.array([0, src_h * 0.5], dtype=np.float32), rot_rad)
    src_rightdir = _rotate_2d(np.array([src_w * 0.5, 0], dtype=np.float32), rot_rad)
    dst_center = np.array([dst_width * 0.5, dst_height * 0.5], dtype=np.float32)
    dst_downdir = np.array([0, dst_height * 0.5], dtype=np.float32)
    dst_rightdir = np.array([dst_width * 0.5, 0], dtype=np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = src_center
    src[1, :] = src_center + src_downdir
    src[2, :] = src_center + src_rightdir
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0, :] = dst_center
    dst[1, :] = dst_center + dst_downdir
    dst[2, :] = dst_center + dst_rightdir
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def official_matrix(cx, cy, side, size=224):
    """The demo's square box (w = h = side), scale 1.0, rotation 0."""
    return gen_trans_from_patch_cv(cx, cy, side, side, size, size, 1.0, 0)


def official_crop(image_rgb, cx, cy, side, size=224):
    """The demo's crop: the affine above, bilinear, black border."""
    return cv2.warpAffine(image_rgb, official_matrix(cx, cy, side, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)
