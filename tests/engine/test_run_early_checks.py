"""``python -m engine run`` / ``analyze``: errors that can be known before the work come before it
(no model or detector is loaded), a SIGINT while models load acts at once, and a truncated
video's short range sets the tracker's minimum track length."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import run as R
from tests.engine.test_run import _FakePredictor, _clip, _inproc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("early")
    (d / "boxes.json").write_text(json.dumps(_clip(d / "clip.avi", 12)))
    (d / "two_boxes.json").write_text(json.dumps(_clip(d / "two.avi", 50, second=range(12, 40))))
    return d


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a model or a detector gets built."""
    def refuse(*a, **k):
        raise AssertionError("a model or detector was loaded before the error")

    import engine.people.detect as detect
    for name in ("make_follower", "make_predictor", "load_rig_body", "load_model"):
        monkeypatch.setattr(R, name, refuse)
    monkeypatch.setattr(detect, "make_detector", refuse)
    monkeypatch.setattr(detect, "ONNXDetector", refuse)


# ----------------------------------------------------------------------------- item: early errors
def test_start_past_the_end_is_refused_before_loading(clips, no_loading):
    for command, extra in (("run", ()), ("run", ("--estimator", "landmarks")), ("analyze", ())):
        code, err, _ = _inproc(command, clips / "clip.avi", "-o", clips / "x.out", "--start", 12, *extra)
        assert (code, err.code) == (2, "usage"), (command, err)
        assert "past the end" in err.message and "12 frames" in err.message
    assert not (clips / "x.out").exists()


def test_start_inside_the_video_still_runs(clips):
    code, done, _ = _inproc("analyze", clips / "clip.avi", "-o", clips / "t.json", "--start", 11,
                            "--boxes", clips / "boxes.json")
    assert code == 0 and done["frames"] == 1


def test_people_that_cannot_exist_in_a_boxes_file_fail_before_loading(clips, no_loading):
    # clip.avi's boxes file has one box per frame (12): at most 12 track ids, whatever the tracker does
    code, err, _ = _inproc("run", clips / "clip.avi", "-o", clips / "x.npz", "--boxes", clips / "boxes.json",
                           "--people", "99")
    assert (code, err.code) == (4, "no_person") and "at most 12 track(s)" in err.message
    # a shorter range allows fewer
    code, err, _ = _inproc("run", clips / "clip.avi", "-o", clips / "x.npz", "--boxes", clips / "boxes.json",
                           "--people", "5", "--stop", 4)
    assert (code, err.code) == (4, "no_person") and "at most 4 track(s)" in err.message


def test_people_in_a_tracks_file_but_outside_the_range_fail_before_loading(clips, no_loading):
    tracks = clips / "two.json"     # analyze with --boxes loads nothing either
    assert _inproc("analyze", clips / "two.avi", "-o", tracks, "--boxes", clips / "two_boxes.json")[0] == 0
    spans = {t["id"]: (t["first_frame"], t["last_frame"]) for t in json.loads(tracks.read_text())["tracks"]}
    assert 1 in spans and spans[2][1] < 45, spans
    code, err, _ = _inproc("run", clips / "two.avi", "-o", clips / "x.npz", "--tracks", tracks, "--people", "99")
    assert (code, err.code) == (4, "no_person")
    code, err, _ = _inproc("run", clips / "two.avi", "-o", clips / "x.npz", "--tracks", tracks, "--people", "2",
                           "--start", 45, "--stop", 50)
    assert (code, err.code) == (4, "no_person") and "2" in err.message
    assert not (clips / "x.npz").exists()


def test_people_ids_count_from_one(clips):
    p = subprocess.run([sys.executable, "-m", "engine", "run", str(clips / "clip.avi"), "-o", str(clips / "x.npz"),
                        "--people", "0,2"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "count from 1" in p.stderr


def test_an_output_that_cannot_be_created_fails_before_loading(clips, no_loading):
    # a name the file system takes, but not the temporary file next to it (the final write's)
    long = clips / ("r" * 248 + ".npz")
    for command in ("run", "analyze"):
        code, err, _ = _inproc(command, clips / "clip.avi", "-o", long, "--boxes", clips / "boxes.json")
        assert (code, err.code) == (6, "write_failed"), (command, err)
        assert "cannot write here" in err.message
    assert os.listdir(clips).count(long.name) == 0 and not [f for f in os.listdir(clips) if f.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_fails_before_loading(clips, no_loading, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    code, err, _ = _inproc("run", clips / "clip.avi", "-o", ro / "x.npz", "--boxes", clips / "boxes.json")
    assert (code, err.code) == (6, "write_failed")


# ----------------------------------------------------------------------------- item: truncated video
def _truncated_to(src: Path, dst: Path, frames: int) -> Path:
    """The longest prefix of ``src`` that decodes exactly ``frames`` frames (then 'truncated')."""
    from engine.video.decode import VideoError, iter_frames

    data = src.read_bytes()

    def decodes(n):
        dst.write_bytes(data[:n])
        k = 0
        try:
            for _ in iter_frames(dst):
                k += 1
        except VideoError:
            pass
        return k

    lo, hi = 0, len(data)
    while hi - lo > 64:       # the decoded count grows with the prefix: bisect on it
        mid = (lo + hi) // 2
        if decodes(mid) <= frames:
            lo = mid
        else:
            hi = mid
    assert decodes(lo) == frames
    return dst


def test_a_truncated_video_keeps_a_track_over_the_frames_that_decode(clips, capsys):
    from engine.common.result_schema import read_result
    from engine.video.decode import probe

    full = clips / "long.avi"
    (clips / "long.json").write_text(json.dumps(_clip(full, 40)))
    cut = _truncated_to(full, clips / "cut3.avi", 3)
    assert probe(cut).frame_count == 40          # the container still claims 40

    code, done, _ = _inproc("analyze", cut, "-o", clips / "cut3.json", "--boxes", clips / "long.json")
    assert code == 0, done
    doc = json.loads((clips / "cut3.json").read_text())
    assert [t["frames"] for t in doc["tracks"]] == [[0, 1, 2]]
    assert doc["tracker"]["min_track_frames"] == 3
    assert "using the 3 frames that decode" in capsys.readouterr().err

    code, done, _ = _inproc("run", cut, "-o", clips / "cut3.npz", "--boxes", clips / "long.json", "--smoothing",
                            "none", "--estimator", "pymaf", wrap=lambda p: _FakePredictor())
    assert code == 0 and done["tracks"] == ["1"] and done["frames"] == 3, done
    np.testing.assert_array_equal(read_result(clips / "cut3.npz").tracks["1"].frames, [0, 1, 2])


def test_the_range_tracker_equals_track_with_the_frames_seen():
    """Capping at close gives exactly ``track`` with min_track_frames = min(wanted, frames seen)."""
    from engine.people.tracking import track, tracks_from_frames

    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 30))
        dets = []
        for f in range(n):
            boxes = [[10 + 2 * f + 50 * p, 10, 40 + 2 * f + 50 * p, 90, rng.uniform(0.3, 1.0)]
                     for p in range(3) if rng.random() < 0.8]
            dets.append(np.array(boxes).reshape(-1, 5))
        args = R.build_parser("analyze").parse_args(["v", "-o", "o", "--min-track-frames", str(rng.integers(1, 40))])
        stated = int(rng.integers(n, 60))       # what the container claims
        tracker = R.make_tracker(args, stated)
        out = [ff for d in dets for ff in tracker.update(d)] + tracker.close()
        got = tracks_from_frames(out)
        want = track(dets, min_track_frames=min(args.min_track_frames, stated, n))
        assert sorted(got) == sorted(want), (trial, n)
        for tid in want:
            np.testing.assert_array_equal(got[tid].frames, want[tid].frames)
            np.testing.assert_array_equal(got[tid].xyxy, want[tid].xyxy)


# ----------------------------------------------------------------------------- item: SIGINT while loading
def test_sigint_while_loading_cancels_at_once(clips, monkeypatch):
    """A loader that would take a minute: SIGINT 0.5 s in -> exit 130 at once, nothing written."""
    release = threading.Event()

    def slow_loader(args):
        release.wait(60)
        raise AssertionError("the load was not abandoned")

    monkeypatch.setattr(R, "make_follower", slow_loader)
    monkeypatch.setattr(R, "make_predictor", slow_loader)
    out = clips / "sig.npz"
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        t0 = time.monotonic()
        code = R.main([str(clips / "clip.avi"), "-o", str(out), "--boxes", str(clips / "boxes.json"),
                       "--progress", "jsonl"])
        elapsed = time.monotonic() - t0
    finally:
        timer.cancel()
        release.set()
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    assert code == 130 and elapsed < 3.0, (code, elapsed)
    assert not out.exists()


def test_sigint_right_after_start_exits_130_within_seconds(clips):
    """The real command: SIGINT as soon as it says it is about to load -> 130 promptly."""
    from engine.landmarks.assets import converted_path

    if not os.path.isfile(converted_path("full")):
        pytest.skip("landmark model not set up")
    out = clips / "sig2.npz"
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", str(clips / "clip.avi"), "-o", str(out),
                             "--progress", "jsonl"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stderr:          # "focal ..." is logged right before the models load
            if line.startswith("focal"):
                break
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert json.loads(stdout.splitlines()[-1])["code"] == "cancelled"
    assert elapsed < 2.0, elapsed
    assert not out.exists()


@pytest.mark.parametrize("name", ["default", "mannequin"])
def test_the_detector_runs_on_the_runs_device(name, tmp_path):
    """``--device cpu`` reaches the detector network too (it used to pick its own)."""
    args = R.build_parser("run").parse_args([str(tmp_path / "v.mp4"), "-o", str(tmp_path / "o.npz"),
                                             "--device", "cpu", "--detector", name])
    detector, desc = R._make_detector(args)
    assert str(detector.device) == "cpu" and desc == ("movenet" if name == "default" else name)


def test_every_missing_model_is_named_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PYMAF_ASSETS_DIR", str(tmp_path))
    args = R.build_parser("analyze").parse_args([str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "t.json")])
    with pytest.raises(R.RunError) as e:
        R.check_models_installed(args)
    assert e.value.exit_code == 5 and "MoveNet" in e.value.message and "BlazePose" not in e.value.message
    args = R.build_parser("analyze").parse_args([str(tmp_path / "m.mp4"), "-o", str(tmp_path / "t.json"),
                                                 "--detector", "hog"])
    R.check_models_installed(args)            # HOG needs no converted model
