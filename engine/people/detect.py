"""Person detectors: ``detect(image RGB (H, W, 3) uint8, index=None) -> (N, 5) float64
[x1, y1, x2, y2, score]`` in full-image pixels, score in [0, 1].

- ``MoveNetDetector`` (``engine.people.movenet``, the default: ``DEFAULT_DETECTOR``): Google's
  MoveNet MultiPose (real-trained, Apache-2.0), converted at set-up; best recall and
  precision on our labelled real footage (docs/people.md).
- ``MannequinDetector`` (``engine.people.learned``): a small CenterNet-style network trained
  on the project's own renders; ``MergedDetector`` adds HOG's boxes to it ("hog+mannequin").
- ``BlazePoseDetector`` (``engine.people.blazepose``): BlazePose's own person detector, whole
  frame or tiled (measured candidates).
- ``HOGDetector``: ``cv2.HOGDescriptor`` with the default people SVM (64x128
  window). The frame is downscaled so its longer side is at most ``max_side`` px (1080p
  -> 1280x720 by default, picked by measurement in docs/people.md: 640 is 5x faster but
  loses the dancer in half the frames), then non-max suppressed. ``max_scale`` > 1
  lets small frames be upscaled (people under ~130 px tall are otherwise missed). The SVM margin
  ``w`` becomes a score ``1 - exp(-w)``.
- ``HaarDetector``: ``haarcascade_fullbody.xml`` shipped with cv2 (a measured candidate).
- ``ONNXDetector``: a YOLOv5/v8-style ONNX file the user has (``cv2.dnn.readNetFromONNX``,
  letterbox to ``size``, class 0 = person; ``engine run --onnx FILE``), tested with files
  exported from our learned detector (no third-party weights ship with the project).
- ``BoxesFromFile``: boxes the user provides; ``detect`` needs the frame ``index``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np


def _empty() -> np.ndarray:
    return np.zeros((0, 5), np.float64)


def nms_indices(dets: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """Greedy non-max suppression of (N, 5) xyxy+score boxes -> the kept rows' indices, best first."""
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    if len(dets) == 0:
        return np.zeros(0, int)
    xywh = np.column_stack([dets[:, :2], dets[:, 2:4] - dets[:, :2]]).tolist()
    return np.asarray(cv2.dnn.NMSBoxes(xywh, dets[:, 4].tolist(), 0.0, float(iou)), int).reshape(-1)


def nms(dets: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """Greedy non-max suppression of (N, 5) xyxy+score boxes -> the kept boxes."""
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    return dets[nms_indices(dets, iou)] if len(dets) else _empty()


class Detector:
    """Interface: ``detect(image, index=None) -> (N, 5)``."""

    name = "detector"

    def detect(self, image: np.ndarray, index: int | None = None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def detect_batch(self, images, indices=None) -> list:
        """Several frames -> one (N, 5) array each; here ``detect`` frame by frame
        (``MannequinDetector`` runs a batch through its network at once)."""
        images = list(images)
        indices = [None] * len(images) if indices is None else list(indices)
        return [self.detect(im, i) for im, i in zip(images, indices)]


class _Downscaled(Detector):
    def __init__(self, max_side: int = 640, max_scale: float = 1.0):
        self.max_side, self.max_scale = int(max_side), float(max_scale)

    def _small(self, image):
        h, w = image.shape[:2]
        k = min(self.max_scale, self.max_side / float(max(h, w)))
        if k != 1.0:
            image = cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY if self.gray else cv2.COLOR_RGB2BGR), k


def _scored_boxes(rects, weights, k: float) -> np.ndarray:
    """OpenCV (x, y, w, h) rectangles found at scale k, with their raw weights ->
    (N, 5) [x1, y1, x2, y2, score] in full-image pixels, score squashed into [0, 1)."""
    if len(rects) == 0:
        return _empty()
    r = np.asarray(rects, np.float64).reshape(-1, 4) / k
    w = np.asarray(weights, np.float64).reshape(-1)
    return np.column_stack([r[:, :2], r[:, :2] + r[:, 2:], 1.0 - np.exp(-np.maximum(w, 0.0))])


class HOGDetector(_Downscaled):
    """OpenCV HOG + linear SVM people detector (offline, BSD-licensed)."""

    name = "hog"
    gray = False

    def __init__(self, max_side: int = 1280, win_stride: int = 8, scale: float = 1.05,
                 hit_threshold: float = 0.0, nms_iou: float = 0.45, max_scale: float = 1.0):
        super().__init__(max_side, max_scale)
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.win_stride, self.scale = int(win_stride), float(scale)
        self.hit_threshold, self.nms_iou = float(hit_threshold), float(nms_iou)

    def detect(self, image, index=None):
        img, k = self._small(image)
        rects, weights = self.hog.detectMultiScale(img, hitThreshold=self.hit_threshold,
                                                   winStride=(self.win_stride, self.win_stride),
                                                   padding=(8, 8), scale=self.scale)
        return nms(_scored_boxes(rects, weights, k), self.nms_iou)


class HaarDetector(_Downscaled):
    """OpenCV's Haar full-body cascade (``cv2.data.haarcascades``)."""

    name = "haar"
    gray = True

    def __init__(self, max_side: int = 640, cascade: str = "haarcascade_fullbody.xml", nms_iou: float = 0.45):
        super().__init__(max_side)
        self.cc = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / cascade))
        if self.cc.empty():
            raise RuntimeError(f"cannot load cascade {cascade}")
        self.nms_iou = float(nms_iou)

    def detect(self, image, index=None):
        img, k = self._small(image)
        rects, _, weights = self.cc.detectMultiScale3(img, scaleFactor=1.05, minNeighbors=3, minSize=(32, 64),
                                                      outputRejectLevels=True)
        return nms(_scored_boxes(rects, weights, k), self.nms_iou)


class ONNXDetector(Detector):
    """A YOLOv5/v8-style person detector from a user's ONNX file, run by OpenCV's dnn module.

    Input: the frame letterboxed into ``size`` x ``size`` (scaled so its longer side fits,
    top-left, grey 114 elsewhere), RGB, values / 255. Output (1, 4 + C, A) (v8: box centre,
    size, then C class scores) or (1, A, 5 + C) (v5: box, objectness, C class scores) in
    letterboxed pixels; ``person_class`` (0 in COCO) is the person score. The file is tried on
    a blank frame when loaded, so a file of another kind fails here with ``ValueError``.
    Tested with files exported from our own learned detector in both layouts
    (tests/engine/test_detector_onnx.py); no third-party weights ship with the project.
    """

    name = "onnx"

    def __init__(self, path, size: int = 640, conf: float = 0.25, nms_iou: float = 0.45, person_class: int = 0):
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file")
        self.size, self.conf, self.nms_iou, self.cls = int(size), float(conf), float(nms_iou), int(person_class)
        try:
            self.net = cv2.dnn.readNetFromONNX(str(path))
            out = self._forward(np.zeros((self.size, self.size, 3), np.uint8))
        except cv2.error as e:
            raise ValueError(f"{path}: OpenCV cannot run it as an ONNX detector "
                             f"({str(e).strip().splitlines()[-1][:200]})") from None
        if out.ndim != 2 or min(out.shape) < 5 + self.cls:
            raise ValueError(f"{path}: output of shape {out.shape} per image, expected (4 + classes, anchors) "
                             f"or (anchors, 5 + classes) with person class {self.cls}")

    def _forward(self, canvas: np.ndarray) -> np.ndarray:
        self.net.setInput(cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=False))
        return np.asarray(self.net.forward())[0]

    def detect(self, image, index=None):
        h, w = image.shape[:2]
        k = self.size / float(max(h, w))
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        canvas[:round(h * k), :round(w * k)] = cv2.resize(image, (round(w * k), round(h * k)))
        out = self._forward(canvas)
        if out.shape[0] < out.shape[1]:          # v8: (4 + C, A)
            out = out.T
            score = out[:, 4 + self.cls]
        else:                                    # v5: (A, 5 + C)
            score = out[:, 4] * out[:, 5 + self.cls]
        m = score >= self.conf
        c, s = out[m, :4] / k, score[m]
        dets = np.column_stack([c[:, :2] - c[:, 2:] / 2, c[:, :2] + c[:, 2:] / 2, s])
        return nms(dets, self.nms_iou)


class BoxesFromFile(Detector):
    """Per-frame boxes from a file the user provides.

    JSON: ``{"frame index": [[x1, y1, x2, y2(, score)], ...], ...}`` or a list indexed by
    frame. CSV: header ``frame,x1,y1,x2,y2[,score]``. Score defaults to 1.
    """

    name = "file"

    def __init__(self, path_or_mapping):
        self.boxes: dict[int, np.ndarray] = {}
        src = path_or_mapping
        if isinstance(src, (str, Path)):
            p = Path(src)
            if p.suffix.lower() == ".csv":
                rows = {}
                with open(p, newline="") as f:
                    for r in csv.DictReader(f):
                        box = [float(r["x1"]), float(r["y1"]), float(r["x2"]), float(r["y2"]),
                               float(r.get("score") or 1.0)]
                        rows.setdefault(int(r["frame"]), []).append(box)
                src = rows
            else:
                src = json.loads(p.read_text())
        if isinstance(src, list):
            src = dict(enumerate(src))
        for key, boxes in src.items():
            a = np.asarray(boxes, np.float64).reshape(len(boxes), -1) if len(boxes) else np.zeros((0, 5))
            if a.shape[1] == 4:
                a = np.column_stack([a, np.ones(len(a))])
            if a.shape[1] != 5:
                raise ValueError(f"frame {key}: boxes need 4 or 5 numbers, got {a.shape[1]}")
            self.boxes[int(key)] = a

    def detect(self, image=None, index=None):
        if index is None:
            raise ValueError("BoxesFromFile.detect needs the frame index")
        return self.boxes.get(int(index), _empty()).copy()


class MergedDetector(Detector):
    """Two detectors on the same frame, merged: ``primary``'s boxes are kept as they are,
    raised to the score of a ``secondary`` box on the same person (IoU >= ``same_iou``:
    two independent detectors agreeing), and ``secondary``'s boxes on nobody the primary
    found are added with their score times ``secondary_scale``; then NMS.

    Score calibration: the learned detector's score is a heatmap peak (about the chance of
    a person centre there), HOG's is ``1 - exp(-SVM margin)``; neither is a probability of
    the other's kind, so no box is ever dropped for the other detector's score, only for
    overlapping a box of the primary (whose boxes are the tight amodal ones PyMAF needs)."""

    def __init__(self, primary: Detector, secondary: Detector, name: str, same_iou: float = 0.3,
                 secondary_scale: float = 1.0, nms_iou: float = 0.45):
        self.primary, self.secondary, self.name = primary, secondary, name
        self.same_iou, self.secondary_scale, self.nms_iou = float(same_iou), float(secondary_scale), float(nms_iou)

    def merge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Primary (N, 5) and secondary (M, 5) boxes of one frame -> merged (K, 5)."""
        from engine.people.tracking import iou_matrix

        a, b = np.array(a, np.float64).reshape(-1, 5), np.array(b, np.float64).reshape(-1, 5)
        b[:, 4] *= self.secondary_scale
        if len(a) and len(b):
            m = iou_matrix(a[:, :4], b[:, :4])
            same = m >= self.same_iou
            a[:, 4] = np.maximum(a[:, 4], np.where(same, b[None, :, 4], 0.0).max(1))
            b = b[~same.any(0)]
        return nms(np.concatenate([a, b]), self.nms_iou)

    def detect(self, image, index=None):
        return self.merge(self.primary.detect(image, index), self.secondary.detect(image, index))

    def detect_batch(self, images, indices=None) -> list:
        images = list(images)
        return [self.merge(a, b) for a, b in zip(self.primary.detect_batch(images, indices),
                                                 self.secondary.detect_batch(images, indices))]


# Names accepted by ``make_detector`` and ``python -m engine run --detector``; "default" is
# DEFAULT_DETECTOR, the candidate picked by measurement (docs/people.md).
DETECTOR_NAMES = ("default", "movenet", "movenet-512", "hog", "haar", "mannequin", "hog+mannequin", "blazepose",
                  "blazepose-tiled")
DEFAULT_DETECTOR = "movenet"


def make_detector(name: str = "default", **kw) -> Detector:
    """A detector by name. ``kw`` go to the detector (for "hog+mannequin": ``device``,
    ``weights``, ``threshold`` go to the learned one, the rest to HOG)."""
    if name == "default":
        name = DEFAULT_DETECTOR
    if name in ("movenet", "movenet-512"):
        # "movenet-512": the frame at 512 px instead of 384: more of the people under 100 px,
        # half the speed (docs/people.md)
        from engine.people.movenet import MoveNetDetector

        if name == "movenet-512":
            kw.setdefault("long_side", 512)
        det = MoveNetDetector(**kw)
        det.name = name
        return det
    if name == "hog":
        return HOGDetector(**kw)
    if name == "haar":
        return HaarDetector(**kw)
    if name in ("blazepose", "blazepose-tiled"):
        # Google's BlazePose person detector (engine/people/blazepose.py; set-up converts it)
        from engine.people.blazepose import TILED_LEVELS, BlazePoseDetector

        if name == "blazepose-tiled":
            kw.setdefault("levels", TILED_LEVELS)
        det = BlazePoseDetector(**kw)
        det.name = name
        return det
    if name in ("mannequin", "hog+mannequin"):
        from engine.people.learned import MannequinDetector

        learned_kw = {k: kw.pop(k) for k in ("device", "weights", "threshold") if k in kw}
        if name == "mannequin":
            return MannequinDetector(**learned_kw, **kw)
        return MergedDetector(MannequinDetector(**learned_kw), HOGDetector(**kw), name)
    raise ValueError(f"unknown detector {name!r}; use one of {DETECTOR_NAMES}, ONNXDetector(path) or "
                     f"BoxesFromFile(path)")
