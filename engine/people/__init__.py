"""Finding and following people in a video, before PyMAF crops them.

``detect``: per-frame person boxes ``(N, 5) [x1, y1, x2, y2, score]`` from
``HOGDetector`` (default: OpenCV's HOG people detector, offline and licence-clean),
``HaarDetector`` (OpenCV's full-body cascade, measured and worse), ``ONNXDetector``
(a YOLO-style ONNX file the user provides; not yet tested) or ``BoxesFromFile``
(JSON / CSV boxes the user provides).

``tracking``: ``track(detections per frame) -> {id: Track}`` (two-stage IoU association
with constant-velocity prediction, ByteTrack style), gap filling by linear
interpolation (marked), short tracks dropped, boxes squared ``(cx, cy, side)`` as in the
official preprocessing. Its measurement is engine/measure/tracking.py
(``python -m engine.measure.tracking --measure`` writes the numbers in docs/people.md).
"""
