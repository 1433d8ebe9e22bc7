"""End-to-end tests of ``python -m engine run`` / ``analyze`` (subprocesses for the CLI contract:
JSON lines, exit codes, signals; in-process runs for the rest) and of the streaming pipeline."""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[2]


def _clip(path, n, W=160, H=120, second=None):
    """A moving blob 'person' and its boxes (BoxesFromFile JSON mapping). ``second``: a range of
    frames in which a second, smaller person walks the other way (with a 3-frame miss)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    boxes = {}
    for i in range(n):
        img = np.full((H, W, 3), 80, np.uint8)
        x = 40 + i % 40 * 2
        cv2.rectangle(img, (x, 20), (x + 30, 100), (200, 150, 100), -1)
        cv2.circle(img, (x + 15, 15), 8, (220, 200, 180), -1)
        boxes[str(i)] = [[x, 5, x + 30, 105, 0.9]]
        if second is not None and i in second:
            x2 = 130 - (i - second.start)
            cv2.rectangle(img, (x2, 50), (x2 + 20, 110), (60, 200, 60), -1)
            if i - second.start not in (5, 6, 7):
                boxes[str(i)].append([x2, 45, x2 + 20, 112, 0.8])
        w.write(img)
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
    (d / "two_boxes.json").write_text(json.dumps(_clip(d / "two.avi", 50, second=range(12, 40))))
    (d / "empty.json").write_text("{}")
    torch.manual_seed(0)
    save_pymaf(PyMAF(build_mannequin(), ModelConfig(backbone_depth=18)), d / "tiny.pt")
    return d


def _cmd(*args):
    """``engine run`` with the PyMAF estimator (these tests check the network path; the landmark
    estimator has tests/engine/test_run_landmarks.py)."""
    args = [str(a) for a in args]
    if "--estimator" not in args and "--checkpoint" not in args:
        args += ["--estimator", "pymaf"]
    return [sys.executable, "-m", "engine", "run", *args]


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
    done = ev[-1]
    assert done["event"] == "done" and done["tracks"] == ["1"] and done["frames"] == 12
    assert done["batch_size"] == 4 and done["fps"] > 0 and done["seconds"] > 0
    assert set(done["stages"]) == set(STAGES) and all(v >= 0 for v in done["stages"].values())
    assert done["stages"]["infer"] > 0 and done["stages"]["decode"] > 0
    progress = ev[:-1]
    assert progress and all(e["event"] == "progress" and e["stage"] == "run" for e in progress)
    assert all(set(e) == {"event", "stage", "done", "total", "fps", "eta_s"} and e["total"] == 12 for e in progress)
    assert [e["done"] for e in progress] == sorted({e["done"] for e in progress}) and progress[-1]["done"] == 12

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

    # rig data for the extension: the checkpoint's body, shaped by the track's robust betas;
    # FK from the stored rotations and rest joints equals the network's own kinematic joints
    from engine.body.smpl_torch import SMPL
    from engine.common.kinematics import posed_joints
    body = model.regressor[0].smpl
    assert res.has_rig
    np.testing.assert_array_equal(res.body.faces, body.faces_tensor.numpy())
    np.testing.assert_allclose(res.body.weights, body.lbs_weights.numpy(), atol=1e-7)
    import torch
    with torch.no_grad():
        ref = SMPL.pose(body, torch.as_tensor(R), torch.as_tensor(tr.betas_robust, dtype=torch.float32)
                        .expand(len(R), 10)).joints24.numpy()
    got = posed_joints(np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1),
                       tr.rest_joints, res.body.parents, np.zeros((len(R), 3)))
    np.testing.assert_allclose(got, ref, atol=1e-4)


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
                       "--checkpoint", data / "tiny.pt", "--progress", "jsonl"), 4, "no_person")
    assert not (data / "x.npz").exists()


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
            if lines[-1].get("stage") == "run" and lines[-1]["done"] > 0:
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
    assert k <= len(res.timestamps) <= 60 and res.meta["video"]["frame_count"] == len(res.timestamps)
    # exactly the processed frames (the blob jumps back at frame 40, where track 2 starts)
    np.testing.assert_array_equal(res.tracks["1"].frames, np.arange(min(k, 40)))
    assert os.path.getsize(out) > 0


# ----------------------------------------------------------------------------- in-process runs
def _inproc(command, *argv, wrap=None):
    """Run ``command`` in this process. -> (exit code, done event or RunError, progress events)."""
    from engine import run as R

    argv = [str(a) for a in argv]
    if command == "run" and "--estimator" not in argv and "--checkpoint" not in argv:
        argv += ["--estimator", "pymaf"]   # the network path (see _cmd)
    args = R.build_parser(command).parse_args(argv)
    out = io.StringIO()
    try:
        if command == "analyze":
            done = R.analyze(args, R.Progress("jsonl", out), {"flag": False})
        else:
            done = R.run(args, R.Progress("jsonl", out), {"flag": False}, wrap_predictor=wrap)
        code = 0
    except R.RunError as e:
        code, done = e.exit_code, e
    return code, done, _events(out.getvalue())


def _tracks_equal(a, b, exact=True):
    assert sorted(a.tracks) == sorted(b.tracks)
    for tid in a.tracks:
        x, y = a.tracks[tid], b.tracks[tid]
        np.testing.assert_array_equal(x.frames, y.frames)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.interpolated, y.interpolated)
        np.testing.assert_array_equal(x.confidence, y.confidence)
        for k in ("body_pose_rotmat", "transl", "betas", "keypoints2d", "joints3d"):
            if exact:
                np.testing.assert_array_equal(getattr(x, k), getattr(y, k), err_msg=k)
            else:
                np.testing.assert_allclose(getattr(x, k), getattr(y, k), atol=1e-4, err_msg=k)


class _CountingCapture:
    """cv2.VideoCapture that counts decoded frames (successful reads) and skipped ones (grab)."""
    real = cv2.VideoCapture
    reads = grabs = opens = 0

    def __init__(self, *a):
        type(self).opens += 1
        self._cap = self.real(*a)

    def read(self, *a):
        ok, img = self._cap.read(*a)
        type(self).reads += bool(ok)
        return ok, img

    def grab(self):
        type(self).grabs += 1
        return self._cap.grab()

    def __getattr__(self, name):
        return getattr(self._cap, name)


def test_each_frame_decoded_once(data, monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", _CountingCapture)
    code, done, _ = _inproc("run", data / "clip.avi", "-o", data / "once.npz", "--checkpoint", data / "tiny.pt",
                            "--boxes", data / "boxes.json", "--batch-size", 8)
    assert code == 0 and done["frames"] == 12
    # one probe (it decodes frame 0 to measure the displayed size) + one decoding pass
    assert (_CountingCapture.opens, _CountingCapture.reads, _CountingCapture.grabs) == (2, 12 + 1, 0)


def _oom_above(limit, calls_ok=None):
    """A predictor wrapper raising torch.OutOfMemoryError for batches above ``limit`` (and for
    every call after ``calls_ok`` successful ones), as a GPU would."""
    import torch

    class OOM:
        def __init__(self, inner):
            self.inner, self.device, self.sizes, self.ok = inner, inner.device, [], 0

        def predict(self, crops):
            self.sizes.append(len(crops))
            if len(crops) > limit or (calls_ok is not None and self.ok >= calls_ok):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
            self.ok += 1
            return self.inner.predict(crops)

    made = []
    return made, lambda p: made.append(OOM(p)) or made[-1]


def test_oom_fallback_gives_identical_results(data, capsys):
    from engine.common.result_schema import read_result

    common = ("--checkpoint", data / "tiny.pt", "--boxes", data / "two_boxes.json", "--smoothing", "none",
              "--start", 8, "--stop", 24)      # 16 frames, 28 crops of two people
    code, done, _ = _inproc("run", data / "two.avi", "-o", data / "b2.npz", "--batch-size", 4, *common)
    assert code == 0
    made, wrap = _oom_above(4)
    capsys.readouterr()
    code, done, _ = _inproc("run", data / "two.avi", "-o", data / "oom.npz", "--batch-size", 16, *common, wrap=wrap)
    assert code == 0 and done["batch_size"] == 4
    assert made[0].sizes == [16, 8] + [4] * 7
    assert capsys.readouterr().err.count("out of memory") == 1           # warned once
    a, b = read_result(data / "b2.npz"), read_result(data / "oom.npz")
    assert sorted(a.tracks) == ["1", "2"] and not b.partial and len(a.tracks["2"].frames) == 12
    _tracks_equal(a, b, exact=True)     # the same crops in the same batches of 4: bit-identical


def test_oom_at_batch_1_writes_partial_and_exits_5(data):
    from engine.common.result_schema import read_result

    out = data / "oom1.npz"
    made, wrap = _oom_above(1, calls_ok=7)
    code, err, _ = _inproc("run", data / "long.avi", "-o", out, "--checkpoint", data / "tiny.pt", "--boxes",
                           data / "long_boxes.json", "--batch-size", 4, "--smoothing", "none", wrap=wrap)
    assert code == 5 and err.code == "out_of_memory" and "batch size 1" in err.message
    res = read_result(out)
    assert res.partial and res.meta["frames_done"] == 7          # 7 single crops of one person each
    np.testing.assert_array_equal(res.tracks["1"].frames, np.arange(7))
    assert made[0].sizes[:3] == [4, 2, 1]


def test_analyze_then_run_tracks_reproduces_a_plain_run(data):
    from engine.common.result_schema import read_result

    tracks_json = data / "tracks.json"
    code, done, ev = _inproc("analyze", data / "two.avi", "-o", tracks_json, "--boxes", data / "two_boxes.json",
                             "--start", 5, "--stop", 45)
    assert code == 0 and done["tracks"] == ["1", "2"] and done["frames"] == 40
    assert {e["stage"] for e in ev if e["event"] == "progress"} == {"analyze"} and ev[-1]["event"] == "done"
    doc = json.loads(tracks_json.read_text())
    assert (doc["format"], doc["version"], doc["partial"]) == ("pymaf-tracks", 1, False)
    assert (doc["frame_start"], doc["frame_stop"], len(doc["timestamps"])) == (5, 45, 40)
    assert doc["video"]["width"] == 160 and doc["video"]["frame_count"] == 50
    t2 = doc["tracks"][1]
    assert (t2["id"], t2["first_frame"], t2["last_frame"], t2["frame_count"]) == (2, 12, 39, 28)
    assert t2["frames"] == list(range(12, 40)) and len(t2["xyxy"]) == len(t2["scores"]) == 28
    assert t2["interpolated"] == [f in (17, 18, 19) for f in range(12, 40)]           # the 3-frame miss
    assert t2["xyxy"][0] == [130.0, 45.0, 150.0, 112.0] and t2["scores"][5] == 0.0

    common = ("--checkpoint", data / "tiny.pt", "--smoothing", "none", "--people", "2")
    code, _, _ = _inproc("run", data / "two.avi", "-o", data / "plain.npz", "--boxes", data / "two_boxes.json",
                         "--start", 5, "--stop", 45, *common)
    assert code == 0
    code, done, _ = _inproc("run", data / "two.avi", "-o", data / "fromtracks.npz", "--tracks", tracks_json, *common)
    assert code == 0 and done["tracks"] == ["2"]
    a, b = read_result(data / "plain.npz"), read_result(data / "fromtracks.npz")
    assert b.meta["frame_start"] == 5 and b.meta["provenance"]["tracks_file"] == str(tracks_json)
    np.testing.assert_array_equal(b.tracks["2"].frames, np.arange(12, 40) - 5)
    _tracks_equal(a, b, exact=True)
    # a range outside the analysed one, a missing id, and a file for another video are refused
    assert _inproc("run", data / "two.avi", "-o", data / "x.npz", "--tracks", tracks_json, "--start", 0,
                   *common)[0] == 2
    assert _inproc("run", data / "two.avi", "-o", data / "x.npz", "--tracks", tracks_json, "--checkpoint",
                   data / "tiny.pt", "--people", "7")[0] == 4
    assert _inproc("run", data / "clip.avi", "-o", data / "x.npz", "--tracks", tracks_json, *common)[0] == 2


def cancelling_progress(after: int) -> tuple:
    """-> (a Progress that raises the cancel flag once ``after`` frames are done, as the SIGINT
    handler would, that flag's dict)."""
    from engine import run as R

    cancel = {"flag": False}

    class CancelAt(R.Progress):
        def update(self, done, force=False):
            super().update(done, force)
            if done >= after:
                cancel["flag"] = True

    return CancelAt(None), cancel


def test_cancelled_analysis_writes_usable_partial_tracks(data):
    from engine import run as R

    progress, cancel = cancelling_progress(20)
    out = data / "partial_tracks.json"
    args = R.build_parser("analyze").parse_args([str(data / "long.avi"), "-o", str(out), "--boxes",
                                                 str(data / "long_boxes.json")])
    with pytest.raises(R.RunError) as ei:
        R.analyze(args, progress, cancel)
    assert ei.value.exit_code == 130
    doc = json.loads(out.read_text())
    assert doc["partial"] and (doc["frame_start"], doc["frame_stop"]) == (0, 20)
    assert [(t["id"], t["first_frame"], t["last_frame"]) for t in doc["tracks"]] == [(1, 0, 19)]
    code, done, _ = _inproc("run", data / "long.avi", "-o", data / "from_partial.npz", "--tracks", out,
                            "--checkpoint", data / "tiny.pt", wrap=lambda p: _FakePredictor())
    assert code == 0 and done["frames"] == 20 and done["tracks"] == ["1"]


def test_truncated_video_uses_the_frames_that_decode(data, capsys):
    from engine.common.result_schema import read_result

    full = (data / "long.avi").read_bytes()
    cut = data / "cut.avi"
    cut.write_bytes(full[:len(full) // 2])
    code, done, _ = _inproc("run", cut, "-o", data / "cut.npz", "--checkpoint", data / "tiny.pt", "--boxes",
                            data / "long_boxes.json", "--smoothing", "none", wrap=lambda p: _FakePredictor())
    assert code == 0 and 10 < done["frames"] < 60
    assert "warning: The video stops after" in capsys.readouterr().err
    res = read_result(data / "cut.npz")
    assert not res.partial and res.meta["frames_done"] == done["frames"] == len(res.timestamps)
    np.testing.assert_array_equal(res.tracks["1"].frames, np.arange(done["frames"]))


def test_write_errors_exit_6(data, monkeypatch):
    import contextlib

    from engine.common import result_schema

    common = ("--checkpoint", data / "tiny.pt", "--boxes", data / "boxes.json")
    code, err, _ = _inproc("run", data / "clip.avi", "-o", data / "no" / "such" / "x.npz", *common)   # before any work
    assert (code, err.code) == (6, "write_failed")

    @contextlib.contextmanager
    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(result_schema, "atomic_file", full_disk)
    code, err, _ = _inproc("run", data / "clip.avi", "-o", data / "full.npz", *common, wrap=lambda p: _FakePredictor())
    assert (code, err.code) == (6, "disk_full") and not (data / "full.npz").exists()


# ----------------------------------------------------------------------------- the pipeline alone
class _FakeDetector:
    """Person A always (one 4-frame miss every 50 frames), person B in 30 of every 70 frames,
    a 3-frame flash every 40 frames (too short to be kept)."""

    def detect(self, image, index=None):
        f = index
        boxes = []
        if f % 50 not in (20, 21, 22, 23):
            x = 20 + f % 60
            boxes.append([x, 40, x + 40, 140, 0.9])
        if f % 70 < 30:
            x = 200 - f % 70
            boxes.append([x, 60, x + 30, 150, 0.8])
        if f % 40 in (5, 6, 7):
            boxes.append([250, 10, 290, 60, 0.7])
        return np.array(boxes, np.float64).reshape(-1, 5)


class _FakePredictor:
    """Cheap stand-in for the network: betas[:, 0] = the crop's centre pixel (which tells the frame)."""

    def __init__(self):
        import torch
        self.device = torch.device("cpu")

    def predict(self, crops):
        import torch
        from types import SimpleNamespace

        B = len(crops)
        betas = torch.zeros(B, 10)
        betas[:, 0] = crops[:, 112, 112, 0].float()
        return SimpleNamespace(final=SimpleNamespace(rotmat=torch.eye(3).expand(B, 24, 3, 3), betas=betas,
                                                     cam=torch.ones(B, 3), joints3d=torch.zeros(B, 49, 3),
                                                     joints2d=torch.zeros(B, 49, 2)))


def _synthetic_frames(n, counter):
    """Frames of 240x320 whose every pixel holds 20 + index % 200 (the crop says which frame it is)."""
    from engine.video.decode import Frame

    for i in range(n):
        counter[i] = counter.get(i, 0) + 1
        yield Frame(i, i / 30.0, np.full((240, 320, 3), 20 + i % 200, np.uint8))


def _stream(n):
    import tracemalloc

    from engine.people.tracking import OnlineTracker, track, with_appearance
    from engine.pipeline import (FRAME_QUEUE, Batcher, Prefetch, StageTimes, StreamStats, crop_stream,
                                 predict_stream, track_stream)

    times, stats, decoded, got = StageTimes(), StreamStats(), {}, []
    tracker = OnlineTracker()

    def on_outputs(entries, out):
        for (frame, box, _), value in zip(entries, out["betas"][:, 0]):
            got.append((frame, box.id, float(value)))

    tracemalloc.start()
    frames = Prefetch(_synthetic_frames(n, decoded), FRAME_QUEUE, times, "detect_wait")
    items = Prefetch(crop_stream(track_stream(frames, _FakeDetector(), tracker, times, stats), None, times),
                     32, times, "infer_wait")
    try:
        outcome = predict_stream(items, Batcher(_FakePredictor(), 8, times), on_outputs, cancel=lambda: False,
                                 on_progress=lambda k: None)
    finally:
        items.close()
        frames.close()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    det = _FakeDetector()           # the pipeline gives the tracker appearance descriptors too
    expected = track([with_appearance(f.image, det.detect(None, f.index)) for f in _synthetic_frames(n, {})],
                     **tracker.params.__dict__)
    return outcome, stats, tracker, decoded, got, expected, peak


def test_stream_memory_is_bounded_and_frames_decoded_once():
    short = _stream(200)
    outcome, stats, tracker, decoded, got, expected, peak = _stream(1200)
    assert outcome.status == "complete" and outcome.frames_done == 1200 and len(outcome.timestamps) == 1200
    assert sorted(decoded) == list(range(1200)) and set(decoded.values()) == {1}     # each frame once
    assert tracker.max_lag == 24 and stats.held_max <= tracker.max_lag + 1           # the lag buffer
    assert stats.held_max == short[1].held_max
    # every kept track's every frame was cropped from the right frame, nothing else
    want = sorted((int(f), tid) for tid, tr in expected.items() for f in tr.frames)
    assert sorted((f, tid) for f, tid, _ in got) == want and len(expected) >= 20
    assert all(v == 20 + f % 200 for f, _, v in got)
    # memory: 1200 frames of 230 kB would be 276 MB; the peak does not grow with the length
    assert peak < 1.3 * short[-1] + 2e6 and peak < 40e6, (peak, short[-1])


def test_prefetch_hands_over_errors_after_items_and_stops():
    from engine.pipeline import Cancelled, Prefetch

    def source():
        yield from range(5)
        raise ValueError("boom")

    it = Prefetch(source(), 2)
    got = []
    with pytest.raises(ValueError, match="boom"):
        for x in it:
            got.append(x)
    assert got == list(range(5))

    stop = {"flag": False}
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    it = Prefetch(endless(), 3, stop=lambda: stop["flag"])
    assert next(it) == 0
    it.close()
    assert closed == [True]                      # the producer stopped and closed its source

    def slow():
        import time
        time.sleep(10)
        yield 1

    it = Prefetch(slow(), 1, stop=lambda: stop["flag"])
    stop["flag"] = True
    with pytest.raises(Cancelled):
        next(it)
    it.close(timeout=0.1)


DANCER = ROOT.parent / "shared" / "footage" / "dancer.mp4"


@pytest.mark.skipif(not DANCER.exists(), reason="shared/footage/dancer.mp4 absent")
def test_dancer_default_detector_gives_one_track_over_the_clip(tmp_path):
    """Real footage, default detector and tracker (``engine analyze``: the same decode /
    detect / track pass as ``run``): the dancer is one track over nearly every frame, and it
    is the only track (the learned detector also boxed a caption in the corner; docs/people.md)."""
    from engine.people.tracks_file import read_tracks

    out = tmp_path / "tracks.json"
    proc = subprocess.run([sys.executable, "-m", "engine", "analyze", str(DANCER), "-o", str(out),
                           "--progress", "jsonl"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = _events(proc.stdout)[-1]
    assert done["event"] == "done"
    doc = json.loads(out.read_text())
    assert doc["detector"] == "movenet" and doc["video"]["frame_count"] == 89
    assert len(doc["tracks"]) == 1, [(t["id"], t["first_frame"], t["last_frame"]) for t in doc["tracks"]]
    best = doc["tracks"][0]
    assert best["frame_count"] >= 0.95 * 89, [(t["id"], t["first_frame"], t["last_frame"]) for t in doc["tracks"]]
    xyxy = np.array(best["xyxy"])
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    assert ((cx > 0.3 * 1920) & (cx < 0.7 * 1920)).all()                   # the dancer, mid-frame
    assert ((xyxy[:, 3] - xyxy[:, 1]) > 400).all()                           # a whole body, not a caption
    read_tracks(out)                                                         # and the file reads back
