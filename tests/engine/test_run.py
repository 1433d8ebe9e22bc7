"""End-to-end tests of ``python -m engine run`` (real subprocesses)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _clip(path, n, W=160, H=120):
    """A moving blob 'person' and its boxes (BoxesFromFile JSON mapping)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    boxes = {}
    for i in range(n):
        img = np.full((H, W, 3), 80, np.uint8)
        x = 40 + i % 40 * 2
        cv2.rectangle(img, (x, 20), (x + 30, 100), (200, 150, 100), -1)
        cv2.circle(img, (x + 15, 15), 8, (220, 200, 180), -1)
        w.write(img)
        boxes[str(i)] = [[x, 5, x + 30, 105, 0.9]]
    w.release()
    return boxes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import torch

    from engine.body.mannequin import build_mannequin
    from engine.model.checkpoint import save_pymaf
    from engine.model.pymaf import ModelConfig, PyMAF

    d = tmp_path_factory.mktemp("run")
    (d / "boxes.json").write_text(json.dumps(_clip(d / "clip.avi", 12)))
    (d / "long_boxes.json").write_text(json.dumps(_clip(d / "long.avi", 60)))
    (d / "empty.json").write_text("{}")
    torch.manual_seed(0)
    save_pymaf(PyMAF(build_mannequin(), ModelConfig(backbone_depth=18)), d / "tiny.pt")
    return d


def _cmd(*args):
    return [sys.executable, "-m", "engine", "run", *map(str, args)]


def _run(*args, timeout=120):
    return subprocess.run(_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _events(stdout):
    return [json.loads(line) for line in stdout.splitlines()]  # every line must be JSON


def test_run_jsonl_and_outputs_match_network(data):
    from engine.common.result_schema import read_result
    from engine.model.checkpoint import load_pymaf
    from engine.model.inference import Predictor
    from engine.preprocess import crop_person
    from engine.video.decode import iter_frames

    out = data / "out.npz"
    p = _run(data / "clip.avi", "-o", out, "--checkpoint", data / "tiny.pt", "--boxes",
             data / "boxes.json", "--batch-size", 4, "--progress", "jsonl", "--smoothing", "none")
    assert p.returncode == 0, p.stderr
    ev = _events(p.stdout)
    assert ev[-1]["event"] == "done" and ev[-1]["tracks"] == ["1"] and ev[-1]["frames"] == 12
    assert {e["stage"] for e in ev[:-1]} == {"track", "infer"}
    assert all(e["event"] == "progress" for e in ev[:-1])

    res = read_result(out)
    assert not res.partial and res.meta["frames_done"] == 12 and len(res.timestamps) == 12
    tr = res.tracks["1"]
    np.testing.assert_array_equal(tr.frames, np.arange(12))
    assert res.meta["camera"]["principal_point"] == [80.0, 60.0]

    # the stored per-frame values are what the network returns for those crops
    images = [f.image for f in iter_frames(data / "clip.avi")]
    crops = np.stack([crop_person(images[f], b[:2], b[2]) for f, b in zip(tr.frames, tr.boxes)])
    model, _ = load_pymaf(data / "tiny.pt")
    fin = Predictor(model, device="cpu").predict(crops).final
    R = fin.rotmat.numpy()
    np.testing.assert_allclose(tr.global_orient_rotmat, R[:, 0], atol=1e-4)
    np.testing.assert_allclose(tr.body_pose_rotmat, R[:, 1:], atol=1e-4)
    np.testing.assert_allclose(tr.betas, fin.betas.numpy(), atol=1e-4)
    np.testing.assert_allclose(tr.cam_crop, fin.cam.numpy(), atol=1e-4)
    # joints3d are stored in the camera frame, translation included (the result format)
    np.testing.assert_allclose(tr.joints3d - tr.transl[:, None], fin.joints3d.numpy(), atol=1e-4)
    # boxes follow the file's boxes (square, side = max(w, h))
    b = json.loads((data / "boxes.json").read_text())
    x1 = np.array([b[str(i)][0][0] for i in range(12)])
    np.testing.assert_allclose(tr.boxes[:, 0], x1 + 15, atol=1e-6)
    np.testing.assert_allclose(tr.boxes[:, 2], 100, atol=1e-6)
    # keypoints in image pixels, continuous quaternions
    assert np.all(np.abs(tr.keypoints2d - tr.boxes[:, None, :2]) <= tr.boxes[:, None, 2:] / 2 * 5)
    assert np.all(np.sum(tr.pose_quat[1:] * tr.pose_quat[:-1], axis=-1) >= 0)


def _expect_error(p, exit_code, code=None):
    assert p.returncode == exit_code, (p.returncode, p.stderr)
    ev = _events(p.stdout)
    assert ev and ev[-1]["event"] == "error", p.stdout
    if code is not None:
        assert ev[-1]["code"] == code
    assert "Traceback" not in p.stderr
    return ev[-1]


def test_missing_video_exit_3(data):
    e = _expect_error(_run(data / "nope.mp4", "-o", data / "x.npz", "--progress", "jsonl"), 3, "not_found")
    assert e["message"]


def test_random_bytes_video_exit_3(data):
    bad = data / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _expect_error(_run(bad, "-o", data / "x.npz", "--progress", "jsonl"), 3)
    assert not (data / "x.npz").exists()


def test_no_person_exit_4(data):
    _expect_error(_run(data / "clip.avi", "-o", data / "x.npz", "--boxes", data / "empty.json",
                       "--progress", "jsonl"), 4, "no_person")


def test_garbage_checkpoint_exit_5(data):
    junk = data / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    _expect_error(_run(data / "clip.avi", "-o", data / "x.npz", "--boxes", data / "boxes.json",
                       "--checkpoint", junk, "--progress", "jsonl"), 5, "model")
    assert not (data / "x.npz").exists()


def test_usage_error_exit_2(data):
    p = _run(data / "clip.avi", "--progress", "jsonl")  # no -o
    assert p.returncode == 2


def test_cancel_writes_valid_partial(data):
    from engine.common.result_schema import read_result

    out = data / "partial.npz"
    proc = subprocess.Popen(
        _cmd(data / "long.avi", "-o", out, "--checkpoint", data / "tiny.pt", "--boxes",
             data / "long_boxes.json", "--batch-size", 2, "--progress", "jsonl", "--smoothing", "none"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(json.loads(line))
            if lines[-1].get("stage") == "infer":
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += _events(rest)
    assert proc.returncode == 130, err
    assert lines[-1]["event"] == "error" and lines[-1]["code"] == "cancelled"
    assert "Traceback" not in err
    res = read_result(out)
    assert res.partial
    k = res.meta["frames_done"]
    assert 0 < k < 60
    assert len(res.timestamps) == 60
    np.testing.assert_array_equal(res.tracks["1"].frames, np.arange(k))  # exactly the processed frames
    assert os.path.getsize(out) > 0
