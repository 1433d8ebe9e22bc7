"""The ONNX detector path (``ONNXDetector``, ``engine run/analyze --onnx FILE``) with real ONNX
files: our learned detector exported in the YOLOv8 layout (1, 4 + 80, A) and the YOLOv5
layout (1, A, 5 + 80), read back by OpenCV's dnn module, must give the learned detector's
boxes; a file that is not a detector gives the documented error."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.measure import tracking as mt
from engine.people import learned
from engine.people import tracking as tk
from engine.people.detect import ONNXDetector

pytest.importorskip("onnx")   # torch's exporter needs it (requirements/dev.txt)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")   # torch's TorchScript-based exporter

ROOT = Path(__file__).resolve().parents[2]
SIZE = 320                    # the learned network's input size
CLASSES = 80                  # a COCO-style head: person is class 0


class YoloLayout(nn.Module):
    """The learned detector as a YOLO-style ONNX model: input (1, 3, S, S) RGB / 255; every
    output cell is an anchor with its box (centre, size, px) and class scores (person = the
    heatmap, the other 79 zero). v8: (1, 4 + C, A); v5: (1, A, 5 + C), objectness = heatmap."""

    def __init__(self, net, stride: int, v5: bool):
        super().__init__()
        self.net, self.stride, self.v5 = net, stride, v5

    def forward(self, x):
        out = self.net((x - learned.PIXEL_MEAN) / learned.PIXEL_STD)
        b = learned.predicted_boxes(out[:, 1:], self.stride)
        heat = torch.sigmoid(out[:, :1])
        box = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
        others = torch.zeros_like(heat).repeat(1, CLASSES - 1, 1, 1)
        if self.v5:
            rows = torch.cat([box, heat, torch.ones_like(heat), others], 1)
            return rows.flatten(2).transpose(1, 2)
        return torch.cat([box, heat, others], 1).flatten(2)


def export(path: Path, v5: bool) -> Path:
    net, config = learned.load_weights()
    model = YoloLayout(net, config["stride"], v5).eval()
    torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), str(path), dynamo=False, opset_version=13,
                      input_names=["images"], output_names=["output0"])
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    return {"v8": export(d / "v8.onnx", v5=False), "v5": export(d / "v5.onnx", v5=True), "dir": d}


@pytest.fixture(scope="module")
def clip(egl):
    return mt.render_crossing_clip(30, 640, 360, seed=5)


@pytest.mark.parametrize("layout", ["v8", "v5"])
def test_onnx_file_gives_the_learned_boxes(files, clip, layout):
    frames, gt, visible = clip
    onnx_det = ONNXDetector(files[layout], size=SIZE, conf=0.3)
    ref = learned.MannequinDetector(device="cpu").detect_batch(list(frames))
    matched, found = [], []
    for image, want, truth, vis in zip(frames, ref, mt.clip_to_frame(gt, 640, 360), visible):
        got = onnx_det.detect(image)
        assert got.shape[1] == 5 and len(got) >= 1
        matched.extend(tk.iou_matrix(want[:, :4], got[:, :4]).max(1))   # each learned box has an ONNX twin
        found.extend(tk.iou_matrix(truth, got[:, :4]).max(1)[vis >= 0.5] > 0.5)   # people are found
    # the same network without the learned decoder's peak picking and 3 x 3 box smoothing:
    # the same boxes to a few pixels (measured: median IoU 0.97), a few differ at the crossing
    matched = np.array(matched)
    assert np.median(matched) > 0.95 and np.mean(matched > 0.8) >= 0.9, np.round(matched, 2)
    assert np.mean(found) >= 0.9, np.mean(found)


def test_engine_analyze_with_onnx(files, clip, tmp_path):
    """``python -m engine analyze --onnx FILE``: real subprocess; two people, provenance says onnx."""
    frames, _, _ = clip
    video = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 360))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    out = tmp_path / "tracks.json"
    proc = subprocess.run([sys.executable, "-m", "engine", "analyze", str(video), "-o", str(out), "--onnx",
                           str(files["v8"]), "--onnx-size", str(SIZE), "--min-track-frames", "5",
                           "--progress", "jsonl"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["detector"] == f"onnx:{files['v8']}" and doc["tracker"]["min_track_frames"] == 5
    assert len(doc["tracks"]) == 2 and all(t["frame_count"] >= 25 for t in doc["tracks"]), doc["tracks"]


@pytest.mark.parametrize("kind", ["garbage", "not_a_detector", "missing"])
def test_a_file_that_is_not_a_detector_is_refused(files, tmp_path, kind):
    path = tmp_path / f"{kind}.onnx"
    if kind == "garbage":
        path.write_bytes(b"\x08\x07not an onnx model at all")
    elif kind == "not_a_detector":                                  # a valid ONNX file: (1, 3) per image
        class Mean(nn.Module):
            def forward(self, x):
                return x.mean(dim=(2, 3))
        torch.onnx.export(Mean(), torch.zeros(1, 3, 64, 64), str(path), dynamo=False, opset_version=13)
    with pytest.raises(ValueError):
        ONNXDetector(path, size=64)
    clip_file = tmp_path / "black.avi"                               # any small video will do
    vw = cv2.VideoWriter(str(clip_file), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        vw.write(np.zeros((48, 64, 3), np.uint8))
    vw.release()
    proc = subprocess.run([sys.executable, "-m", "engine", "analyze", str(clip_file), "-o", str(tmp_path / "t.json"),
                           "--onnx", str(path), "--progress", "jsonl"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 5, (proc.returncode, proc.stderr[-1500:])
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["event"] == "error" and last["code"] == "model" and "--onnx" in last["message"], last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "t.json").exists()
