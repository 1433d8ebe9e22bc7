"""Regions of interest for the landmark model: where each person's 256x256 crop comes from.

A ROI is a rotated square in image pixels, ``(cx, cy, side, angle)``: centre, side length and
rotation in radians (image axes, y down: a positive angle turns the crop's "up" clockwise on
screen). BlazePose conventions, as its graphs define them:

* from landmarks: the two auxiliary landmarks 33 (body centre, between the hips) and 34 (a
  point whose distance from the centre is half the body's extent, above the centre for an
  upright person) give the centre, the side (2 x their distance x ``SCALE``) and the angle
  that turns the centre -> point vector to straight up (``TARGET_ANGLE``, 90 degrees);
* from a person box (first frame of a track, or when the landmarks are lost): the box centre,
  the longer side x ``BOX_SCALE``, no rotation.

Crop pixel (u, v) (0..256, pixel centres at +0.5) maps to the image point
``centre + R(angle) @ ((u / 256 - 0.5) * side, (v / 256 - 0.5) * side)``. All functions are
numpy and broadcast over leading dims.
"""
from __future__ import annotations

import numpy as np

INPUT_SIZE = 256
SCALE = 1.25            # the landmark graph's ROI enlargement
BOX_SCALE = 1.25        # a tracker box -> ROI side (boxes are tight around the person)
TARGET_ANGLE = np.pi / 2
CENTRE, SCALE_POINT = 33, 34   # auxiliary landmark indices


def normalize_angle(a):
    """Angles (...) -> [-pi, pi)."""
    return (np.asarray(a, np.float64) + np.pi) % (2 * np.pi) - np.pi


def roi_from_box(xyxy) -> np.ndarray:
    """Person boxes (..., 4) x0, y0, x1, y1 -> ROIs (..., 4) upright squares around them."""
    b = np.asarray(xyxy, np.float64)
    side = np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]) * BOX_SCALE
    return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, side, np.zeros_like(side)], -1)


def roi_from_alignment(centre, point) -> np.ndarray:
    """Alignment points (..., 2) in image pixels -> ROIs (..., 4)."""
    c, p = np.asarray(centre, np.float64), np.asarray(point, np.float64)
    d = p - c
    angle = normalize_angle(TARGET_ANGLE - np.arctan2(-d[..., 1], d[..., 0]))
    side = 2 * np.linalg.norm(d, axis=-1) * SCALE
    return np.stack([c[..., 0], c[..., 1], side, angle], -1)


def roi_from_landmarks(landmarks_px) -> np.ndarray:
    """Image-pixel landmarks (..., 39, >=2) -> the ROI for the next frame (..., 4)."""
    lm = np.asarray(landmarks_px, np.float64)
    return roi_from_alignment(lm[..., CENTRE, :2], lm[..., SCALE_POINT, :2])


def crop_to_image_matrix(roi, size: int = INPUT_SIZE) -> np.ndarray:
    """ROIs (..., 4) -> affine matrices (..., 2, 3) taking crop pixels (u, v, 1) to image pixels."""
    roi = np.asarray(roi, np.float64)
    cx, cy, side, a = roi[..., 0], roi[..., 1], roi[..., 2], roi[..., 3]
    c, s = np.cos(a), np.sin(a)
    k = side / size
    # x = cx + k (c (u - size/2) - s (v - size/2)), y = cy + k (s (u - size/2) + c (v - size/2))
    h = size / 2
    return np.stack([
        np.stack([k * c, -k * s, cx - k * h * (c - s)], -1),
        np.stack([k * s, k * c, cy - k * h * (s + c)], -1),
    ], -2)


def image_to_crop_matrix(roi, size: int = INPUT_SIZE) -> np.ndarray:
    """ROIs (..., 4) -> affine matrices (..., 2, 3) taking image pixels to crop pixels."""
    A = crop_to_image_matrix(roi, size)
    L = A[..., :2]
    Linv = np.linalg.inv(L)
    return np.concatenate([Linv, -(Linv @ A[..., 2:])], -1)


def crop_landmarks_to_image(landmarks, roi, size: int = INPUT_SIZE) -> np.ndarray:
    """Landmarks in crop pixels (..., N, >=3) x, y, z -> image pixels (..., N, 3).

    x, y through the ROI's affine map; z (relative depth, in crop pixels like x) scaled by
    side / size so that it stays in the units of the image x."""
    lm = np.asarray(landmarks, np.float64)
    A = crop_to_image_matrix(roi, size)
    xy = np.einsum("...ij,...nj->...ni", A[..., :2], lm[..., :2]) + A[..., None, :, 2]
    z = lm[..., 2:3] * (np.asarray(roi, np.float64)[..., None, 2:3] / size)
    return np.concatenate([xy, z], -1)


def rotate_world(world, roi) -> np.ndarray:
    """World landmarks (..., N, 3) in the crop's axes -> the image's axes (rotated by the ROI
    angle about z), as BlazePose's world-landmark projection does."""
    w = np.asarray(world, np.float64)
    a = np.asarray(roi, np.float64)[..., 3]
    c, s = np.cos(a)[..., None], np.sin(a)[..., None]
    x, y = w[..., 0], w[..., 1]
    return np.stack([c * x - s * y, s * x + c * y, w[..., 2]], -1)


def crop_image(image: np.ndarray, roi, size: int = INPUT_SIZE) -> np.ndarray:
    """One ROI (4,) of an RGB uint8 image (H, W, 3) -> the (size, size, 3) uint8 crop; outside
    the image is black (zero), as BlazePose pads."""
    import cv2

    A = crop_to_image_matrix(roi, size)
    # OpenCV puts pixel centres at integers; ours (corner origin) at +0.5
    M = A.copy()
    M[:, 2] = A[:, 2] + A[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
