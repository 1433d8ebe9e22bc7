"""The BlazePose person detector (Google, Apache-2.0) in torch: a detector candidate.

The model is MediaPipe's ``pose_detection.tflite`` (from the PyPI wheel ``mediapipe==0.10.21``,
docs/third-party.md), converted at set-up to ``blazepose_detector.pt`` next to the landmark
models (``python -m engine.landmarks.setup``) and run by the landmark models' graph executor
(``engine.landmarks.network``). Its outputs equal Google's interpreter's to float32 rounding
(tests/engine/test_pose_detector.py).

The network: input (1, 224, 224, 3) RGB scaled to [-1, 1], the image letterboxed (aspect
kept, centred, black borders); outputs per SSD anchor (2254) 12 regressors and a score logit.
Decoding as MediaPipe's pose detection graph does:

* anchors: SSD anchor generator with 5 layers, strides 8, 16, 32, 32, 32, offset 0.5, aspect
  ratio 1 plus the interpolated scale (2 anchors per layer and cell), fixed size 1 ->
  28*28*2 + 14*14*2 + 7*7*6 = 2254 anchor centres, in the order y, x, anchor (NHWC);
* regressors (input pixels, relative to the anchor centre): face box centre x, y, width,
  height, then 4 keypoints (x, y): 0 mid-hip, 1 a point whose distance from 0 is the radius of
  a circle around the whole body, 2 mid-shoulder, 3 a point giving the upper body's scale;
* score = sigmoid(clip(logit, -100, 100)) >= 0.5, then weighted non-max suppression (IoU 0.3
  on the face boxes, the averaged box/keypoints weighted by score, the top score kept).

**The person box** handed to the tracker is the square centred on keypoint 0 (mid-hip) with
half-side |keypoint 1 - keypoint 0| (the body circle's bounding square), clipped to the image.
It is wider than a person (a square around the whole-body circle, arms included).

The model is made for one fairly large person (short range: the body should fill a good part
of the 224 input). For small people (surveillance-like footage) ``levels`` adds tiles:
level ``n`` covers the frame with ``n`` rows of overlapping square tiles (columns as many as
the aspect needs), each resized to 224; all tiles of all frames run as one batch, detections
are mapped back to the frame and merged by weighted NMS on the person boxes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from engine.people.detect import Detector

INPUT_SIZE = 224
NUM_ANCHORS = 2254
ANCHOR_OPTIONS = {"num_layers": 5, "min_scale": 0.1484375, "max_scale": 0.75, "input_size": INPUT_SIZE,
                  "offset": 0.5, "strides": (8, 16, 32, 32, 32), "aspect_ratios": (1.0,),
                  "interpolated_scale_aspect_ratio": 1.0}


def ssd_anchors(options: dict = ANCHOR_OPTIONS) -> np.ndarray:
    """MediaPipe's SsdAnchorsCalculator with ``fixed_anchor_size`` -> (A, 2) anchor centres
    (x, y) in [0, 1] of the input (widths and heights are all 1). Layers of equal stride share
    one feature map; each layer gives one anchor per aspect ratio plus one for the interpolated
    scale per cell."""
    strides = list(options["strides"])
    n = len(strides)
    size = int(options["input_size"])
    out = []
    layer = 0
    while layer < n:
        per_cell = 0
        last = layer
        while last < n and strides[last] == strides[layer]:
            per_cell += len(options["aspect_ratios"]) + (1 if options["interpolated_scale_aspect_ratio"] > 0 else 0)
            last += 1
        fm = int(math.ceil(size / strides[layer]))
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        c = np.stack([(xs + options["offset"]) / fm, (ys + options["offset"]) / fm], -1).reshape(-1, 1, 2)
        out.append(np.repeat(c, per_cell, axis=1).reshape(-1, 2))
        layer = last
    return np.concatenate(out).astype(np.float64)


def sigmoid_scores(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64), -100.0, 100.0)))


def decode(regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """One input's raw outputs (A, 12), (A,) or (A, 1) -> (N, 13) detections above
    ``threshold``: face box x1, y1, x2, y2, keypoints 0..3 (x, y), score; coordinates in [0, 1]
    of the 224 input."""
    r = np.asarray(regressors, np.float64).reshape(-1, 12)
    s = sigmoid_scores(logits).reshape(-1)
    keep = s >= threshold
    r, s, a = r[keep] / INPUT_SIZE, s[keep], anchors[keep]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    kp = r[:, 4:12].reshape(-1, 4, 2) + a[:, None, :]
    return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, kp.reshape(-1, 8), s])


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    union = area(box) + area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(dets: np.ndarray, iou: float = 0.3, box_cols=slice(0, 4)) -> np.ndarray:
    """MediaPipe's weighted non-max suppression: rows (N, K) with the score last; the boxes in
    ``box_cols`` are compared. Repeatedly take the best remaining row, average every remaining
    row overlapping it by more than ``iou`` (itself included; weights = scores; all columns but
    the score) and keep the best row's score."""
    dets = np.asarray(dets, np.float64)
    if len(dets) == 0:
        return dets.reshape(0, dets.shape[-1] if dets.ndim == 2 else 13)
    order = np.argsort(-dets[:, -1], kind="stable")
    rest = dets[order]
    out = []
    while len(rest):
        o = _iou_one(rest[0, box_cols], rest[:, box_cols])
        group = o > iou
        group[0] = True
        g = rest[group]
        w = g[:, -1:]
        merged = (g[:, :-1] * w).sum(0) / w.sum()
        out.append(np.append(merged, rest[0, -1]))
        rest = rest[~group]
    return np.asarray(out)


def person_boxes(dets: np.ndarray, width: float, height: float) -> np.ndarray:
    """(N, 13) detections in frame pixels -> (N, 5) person boxes: the square around keypoint 0
    with half-side |keypoint 1 - keypoint 0|, clipped to the image, and the score."""
    if len(dets) == 0:
        return np.zeros((0, 5))
    c, p = dets[:, 4:6], dets[:, 6:8]
    r = np.linalg.norm(p - c, axis=1)
    x1 = np.clip(c[:, 0] - r, 0, width)
    y1 = np.clip(c[:, 1] - r, 0, height)
    x2 = np.clip(c[:, 0] + r, 0, width)
    y2 = np.clip(c[:, 1] + r, 0, height)
    return np.column_stack([x1, y1, x2, y2, dets[:, -1]])


@dataclass
class PoseDetections:
    """One frame's detections, frame pixels: ``boxes`` (N, 5) person boxes + score (what
    ``detect`` returns), ``face`` (N, 4) face boxes, ``keypoints`` (N, 4, 2)."""

    boxes: np.ndarray
    face: np.ndarray
    keypoints: np.ndarray


def tile_grid(width: int, height: int, rows: int, overlap: float = 0.25) -> list:
    """Square tiles (x0, y0, side) covering the frame with ``rows`` rows (on the shorter side)
    overlapping by ``overlap`` of the side; ``rows`` 1 is the whole frame (one letterboxed
    crop, not square)."""
    if rows <= 1:
        return [(0, 0, None)]
    short, long_ = min(width, height), max(width, height)
    side = int(round(short / (rows - (rows - 1) * overlap)))
    n_long = max(1, int(math.ceil((long_ - side) / (side * (1 - overlap)) - 1e-9)) + 1)
    pos = lambda n, extent: [int(round(v)) for v in np.linspace(0, max(extent - side, 0), n)]  # noqa: E731
    ys = pos(rows, height) if height <= width else pos(n_long, height)
    xs = pos(n_long, width) if height <= width else pos(rows, width)
    return [(x, y, side) for y in ys for x in xs]


class BlazePoseDetector(Detector):
    """MediaPipe's BlazePose person detector on our torch port (``detect``: (N, 5) person
    boxes in frame pixels; ``detect_poses``: with the face boxes and the 4 keypoints).

    ``levels``: (1,) the whole frame only ("blazepose"); (1, 2) adds 2 rows of tiles, ...
    ("blazepose-tiled": TILED_LEVELS = (1, 3)); on tiles, detections whose body circle is wider than
    ``max_tile_fraction`` of the tile are dropped (the coarser level sees such a person whole).
    ``device``: "auto" (CUDA when available), "cpu", "cuda".
    ``weights``: the converted file (default: the set-up's, ``engine.landmarks.assets``)."""

    name = "blazepose"

    def __init__(self, weights=None, device: str = "auto", threshold: float = 0.5, nms_iou: float = 0.3,
                 levels=(1,), overlap: float = 0.25, merge_iou: float = 0.3, max_tile_fraction: float = 0.6, contained: float = 0.7,
                 max_batch: int = 64):
        import torch

        from engine.landmarks import assets
        from engine.landmarks.convert import DETECTOR_SIZE
        from engine.landmarks.network import load_detector_network

        if weights is None:
            weights = assets.require_detector()         # LandmarkModelError naming the fix
        net, self.source = load_detector_network(weights, DETECTOR_SIZE, assets._detector_what())
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.net = net.to(self.device)
        self.threshold, self.nms_iou, self.merge_iou = float(threshold), float(nms_iou), float(merge_iou)
        self.levels, self.overlap, self.max_batch = tuple(int(v) for v in levels), float(overlap), int(max_batch)
        self.max_tile_fraction, self.contained = float(max_tile_fraction), float(contained)
        self.anchors = ssd_anchors()
        if len(self.anchors) != NUM_ANCHORS:
            raise AssertionError("anchor count")

    # --- network ---------------------------------------------------------------------------
    def raw(self, batch: np.ndarray) -> tuple:
        """(B, 224, 224, 3) float32 in [-1, 1] -> regressors (B, 2254, 12), logits (B, 2254)."""
        import torch

        regs, logits = [], []
        with torch.inference_mode():
            for i in range(0, len(batch), self.max_batch):
                x = torch.from_numpy(np.ascontiguousarray(batch[i:i + self.max_batch])).to(self.device)
                o = self.net.run(x.permute(0, 3, 1, 2))
                regs.append(o["regressors"].cpu().numpy())
                logits.append(o["scores"].cpu().numpy().reshape(len(x), -1))
        return np.concatenate(regs), np.concatenate(logits)

    @staticmethod
    def letterbox(image: np.ndarray) -> tuple:
        """RGB uint8 (h, w, 3) -> ((224, 224, 3) float32 in [-1, 1], scale, pad x, pad y):
        aspect kept, centred, black (-1) borders. Input pixel = crop pixel * scale + pad."""
        h, w = image.shape[:2]
        k = INPUT_SIZE / float(max(h, w))
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        small = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interp)
        canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        px, py = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
        canvas[py:py + nh, px:px + nw] = small
        return canvas.astype(np.float32) / 127.5 - 1.0, k, px, py

    def _crops(self, image: np.ndarray) -> list:
        """-> [(x0, y0, side or None, level index)] of this frame."""
        h, w = image.shape[:2]
        out = []
        for li, rows in enumerate(self.levels):
            out.extend((*t, li) for t in tile_grid(w, h, rows, self.overlap))
        return out

    # --- detection ---------------------------------------------------------------------------
    def detect_poses_batch(self, images) -> list:
        """Frames (RGB uint8) -> one PoseDetections each (all crops of all frames as one batch)."""
        images = list(images)
        inputs, meta = [], []
        for f, image in enumerate(images):
            for x0, y0, side, level in self._crops(image):
                crop = image if side is None else image[y0:y0 + side, x0:x0 + side]
                t, k, px, py = self.letterbox(crop)
                inputs.append(t)
                meta.append((f, x0, y0, k, px, py, side, level))
        regs, logits = self.raw(np.stack(inputs)) if inputs else (None, None)
        per_frame = [[] for _ in images]
        for j, (f, x0, y0, k, px, py, side, level) in enumerate(meta):
            d = decode(regs[j], logits[j], self.anchors, self.threshold)
            if not len(d):
                continue
            d = weighted_nms(d, self.nms_iou)           # per input, as MediaPipe does
            if side is not None:
                # a person whose body circle fills most of a tile is the coarser level's to find
                # (measured: a dancer's feet, seen alone in a 1080p tile, came out as a "person")
                diameter = 2 * np.linalg.norm(d[:, 6:8] - d[:, 4:6], axis=1)
                d = d[diameter <= self.max_tile_fraction]
                if not len(d):
                    continue
            xy = d[:, :12].reshape(-1, 6, 2) * INPUT_SIZE
            xy = (xy - (px, py)) / k + (x0, y0)
            per_frame[f].append(np.column_stack([np.full(len(d), level), xy.reshape(-1, 12), d[:, 12]]))
        out = []
        for f, image in enumerate(images):
            h, w = image.shape[:2]
            d = np.concatenate(per_frame[f]) if per_frame[f] else np.zeros((0, 14))
            if len(d) and len(meta) > len(images):     # several crops per frame: merge on person boxes
                d = self._merge(d, w, h)
            d = d[:, 1:]
            out.append(PoseDetections(boxes=person_boxes(d, w, h), face=d[:, :4].copy(),
                                      keypoints=d[:, 4:12].reshape(-1, 4, 2).copy()))
        return out

    def _merge(self, d: np.ndarray, w: int, h: int) -> np.ndarray:
        """Rows (level, 12 coordinates, score) of one frame from all its crops -> merged.
        A tile's detection mostly inside (``contained`` of its area) a person box found at a
        coarser level is dropped (a body part seen alone in a tile, e.g. a dancer's legs),
        then weighted NMS on the person boxes."""
        boxes = person_boxes(d[:, 1:], w, h)
        area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        keep = np.ones(len(d), bool)
        for i in np.flatnonzero(d[:, 0] > 0):
            coarser = boxes[d[:, 0] < d[i, 0]]
            if len(coarser) and area[i] > 0:
                x1 = np.maximum(boxes[i, 0], coarser[:, 0])
                y1 = np.maximum(boxes[i, 1], coarser[:, 1])
                x2 = np.minimum(boxes[i, 2], coarser[:, 2])
                y2 = np.minimum(boxes[i, 3], coarser[:, 3])
                inside = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None) / area[i]
                keep[i] = not (inside >= self.contained).any()
        d, boxes = d[keep], boxes[keep]
        return weighted_nms(np.column_stack([boxes[:, :4], d]), self.merge_iou)[:, 4:]

    def detect_poses(self, image: np.ndarray) -> PoseDetections:
        return self.detect_poses_batch([image])[0]

    def detect(self, image: np.ndarray, index=None) -> np.ndarray:
        return self.detect_poses(image).boxes

    def detect_batch(self, images, indices=None) -> list:
        return [p.boxes for p in self.detect_poses_batch(images)]


TILED_LEVELS = (1, 3)
