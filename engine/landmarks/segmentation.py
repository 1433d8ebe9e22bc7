"""Per-person segmentation on the plate: the BlazePose landmark network's segmentation output.

The landmark network has a second head besides the landmarks: person-mask logits on its
256 x 256 crop (``LandmarkOutputs.segmentation``), trained on real people with their hair and
clothes. ``PersonSegmenter.step(image, boxes)`` follows each person with the crops
``engine run`` uses (``PersonFollower``: the crop from the last frame's landmarks, or from the
track's box), keeps the segmentation of the crop it settled on and warps the logits back to
the frame (bilinear), only over the crop's footprint. Used by ``engine mattes --alpha
segmentation``; its measurement (engine/measure/mattes.py) uses the same function.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from engine.landmarks import roi as rois
from engine.landmarks.landmarker import Landmarker, PersonFollower


class PersonMask(NamedTuple):
    """A person's segmentation logits over a window of the frame."""
    window: tuple           # (y0, y1, x0, x1) frame rows / columns the logits cover
    logits: np.ndarray      # (y1 - y0, x1 - x0) float32; > 0 means probability > 0.5

    def mask(self, height: int, width: int) -> np.ndarray:
        """(height, width) bool: the person (probability > 0.5) on the whole frame."""
        out = np.zeros((height, width), bool)
        y0, y1, x0, x1 = self.window
        out[y0:y1, x0:x1] = self.logits > 0
        return out


def roi_window(roi: np.ndarray, height: int, width: int) -> Optional[tuple]:
    """A rotated square ROI (cx, cy, side, angle) -> (y0, y1, x0, x1) frame window holding its
    footprint, clipped to the frame; None when it lies outside."""
    A = rois.crop_to_image_matrix(roi, rois.INPUT_SIZE)
    s = float(rois.INPUT_SIZE)
    corners = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]]) @ A.T
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    return (y0, y1, x0, x1) if x1 > x0 and y1 > y0 else None


def crop_logits_to_frame(logits: np.ndarray, roi: np.ndarray, window: tuple) -> np.ndarray:
    """(256, 256) crop logits -> (y1 - y0, x1 - x0) float32 over the frame ``window``: frame
    pixel centres mapped into the crop (pixel centres at +0.5 on both sides, as
    ``roi.crop_image``), bilinear; outside the crop -100 (certainly not the person)."""
    import cv2

    y0, y1, x0, x1 = window
    A = rois.crop_to_image_matrix(roi, rois.INPUT_SIZE)
    M = A.copy()
    # crop pixel (u, v) -> frame pixel, both with integer pixel centres, then shifted so that
    # the window's top-left pixel is (0, 0)
    M[:, 2] = A[:, 2] + A[:, :2] @ np.array([0.5, 0.5]) - 0.5 - np.array([x0, y0])
    return cv2.warpAffine(np.ascontiguousarray(logits, np.float32), M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=-100.0)


class PersonSegmenter:
    """``step(image, boxes) -> {track id: PersonMask or None}`` frame after frame.

    ``boxes``: [(track id, xyxy)] of one RGB frame (H, W, 3) uint8; None where the landmark
    model sees no person in the crop (presence below its threshold)."""

    def __init__(self, landmarker: Landmarker):
        self.follower = PersonFollower(landmarker, keep_segmentation=True)

    def step(self, image: np.ndarray, boxes: list) -> dict:
        seen = self.follower.step(image, boxes)
        out = {t: None for t in seen}
        h, w = image.shape[:2]
        for t, logits in self.follower.segmentation.items():
            window = roi_window(seen[t].roi, h, w)
            if window is not None:
                out[t] = PersonMask(window, crop_logits_to_frame(logits, seen[t].roi, window))
        return out
