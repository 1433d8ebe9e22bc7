"""The BlazePose person detector (engine/people/blazepose.py): the torch port against Google's
interpreter (ai-edge-litert) on real frames, the anchors and the decoding on the dancer,
tiling on small people (vtest.avi), registration, and clear errors for wrong / missing files.

The model comes the set-up's way: the pinned mediapipe wheel cached in ``build/cache``
(``assets.download_dir()``; fetched with pip when absent), its one member extracted and
checked, converted into a temporary folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.landmarks import assets
from engine.people import blazepose as bp

ROOT = Path(__file__).resolve().parents[2]
FOOTAGE = ROOT.parent / "shared" / "footage"
DANCER, VTEST = FOOTAGE / "dancer.mp4", FOOTAGE / "vtest.avi"
# Tolerances (float32 torch vs the interpreter's XNNPACK kernels, same float16 weights), on
# real frames: regressors are in input pixels (|values| up to a few hundred), score logits
# reach +-200 far from people. Measured: regressors <= ~1e-3, logits <= ~1e-3.
TOL_REGRESSORS = 1e-2     # input pixels (of 224)
TOL_LOGITS = 1e-2


def _frames(path: Path, indices) -> list:
    cv2 = pytest.importorskip("cv2")
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    cap = cv2.VideoCapture(str(path))
    out = []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, f = cap.read()
        assert ok, (path, i)
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """-> (the verified pose_detection.tflite, the converted weights), via the set-up path."""
    wheel = assets.fetch_wheel(assets.download_dir())          # verified; pip-downloaded when absent
    out = tmp_path_factory.mktemp("detector")
    tfl = assets.extract_detector(wheel, out / "pose_detection.tflite")
    weights = assets.ensure_detector_model(wheel, folder=out / "assets")
    assert weights == out / "assets" / "blazepose_detector.pt" and assets.detector_problem(out / "assets") is None
    return tfl, weights


@pytest.fixture(scope="module")
def detector(model):
    return bp.BlazePoseDetector(weights=model[1], device="cpu")


@pytest.fixture(scope="module")
def tiled(model):
    return bp.BlazePoseDetector(weights=model[1], device="cpu", levels=bp.TILED_LEVELS)


def _inputs() -> np.ndarray:
    """Letterboxed whole frames and a few tiles of dancer.mp4 and vtest.avi, (N, 224, 224, 3)."""
    ims = _frames(DANCER, (30, 40)) + _frames(VTEST, (10, 300))
    out = [bp.BlazePoseDetector.letterbox(im)[0] for im in ims]
    for x0, y0, side in bp.tile_grid(768, 576, 3)[4:8]:
        out.append(bp.BlazePoseDetector.letterbox(ims[3][y0:y0 + side, x0:x0 + side])[0])
    return np.stack(out).astype(np.float32)


def test_torch_port_matches_the_interpreter_on_real_frames(model, detector):
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    x = _inputs()
    it = litert.Interpreter(model_path=str(model[0]))
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    assert list(inp["shape"]) == [1, 224, 224, 3]
    outs = {d["name"]: d for d in it.get_output_details()}
    assert list(outs["Identity"]["shape"]) == [1, 2254, 12] and list(outs["Identity_1"]["shape"]) == [1, 2254, 1]
    ref_r, ref_s = [], []
    for img in x:
        it.set_tensor(inp["index"], img[None])
        it.invoke()
        ref_r.append(it.get_tensor(outs["Identity"]["index"])[0])
        ref_s.append(it.get_tensor(outs["Identity_1"]["index"])[0, :, 0])
    ref_r, ref_s = np.stack(ref_r), np.stack(ref_s)
    regs, logits = detector.raw(x)                      # one batch: batching must not matter
    assert regs.shape == ref_r.shape and logits.shape == ref_s.shape
    assert np.abs(regs - ref_r).max() < TOL_REGRESSORS, np.abs(regs - ref_r).max()
    assert np.abs(logits - ref_s).max() < TOL_LOGITS, np.abs(logits - ref_s).max()
    # the same anchors pass the threshold (away from it by more than the tolerance)
    clear = np.abs(ref_s) > 10 * TOL_LOGITS
    assert ((logits > 0) == (ref_s > 0))[clear].all()
    assert (ref_s > 0).any(), "no detection at all on the test frames: wrong inputs?"


def test_anchors():
    a = bp.ssd_anchors()
    assert a.shape == (bp.NUM_ANCHORS, 2) == (2254, 2)
    # stride 8: 28 x 28 cells x 2 anchors, y-major; stride 16: 14 x 14 x 2; stride 32: 7 x 7 x 6
    assert np.allclose(a[0], [0.5 / 28, 0.5 / 28]) and np.allclose(a[1], a[0]) and np.allclose(a[2], [1.5 / 28, 0.5 / 28])
    assert np.allclose(a[56], [0.5 / 28, 1.5 / 28])
    assert np.allclose(a[1568], [0.5 / 14, 0.5 / 14]) and np.allclose(a[1568 + 392], [0.5 / 7, 0.5 / 7])
    assert np.allclose(a[-6:], [[6.5 / 7, 6.5 / 7]] * 6)


def test_weighted_nms_merges_and_keeps_the_top_score():
    d = np.array([[0, 0, 10, 10, 0.9], [1, 0, 11, 10, 0.6], [50, 50, 60, 60, 0.7]], float)
    out = bp.weighted_nms(d, 0.3)
    assert len(out) == 2 and out[0, -1] == 0.9 and np.isclose(out[0, 0], 0.6 / 1.5)
    assert np.allclose(out[1], d[2])


def test_the_dancer_is_found_with_sensible_keypoints(detector):
    for i, im in zip((30, 35, 40), _frames(DANCER, (30, 35, 40))):
        p = detector.detect_poses(im)
        assert len(p.boxes) == 1, (i, p.boxes)
        x1, y1, x2, y2, s = p.boxes[0]
        assert s > 0.9
        # she is around x 640-1060, y 180-800 in these frames (her torso around x 850-950)
        assert x1 < 700 and x2 > 1000 and y1 < 250 and y2 > 750 and x2 - x1 < 900, (i, p.boxes[0])
        hip, top, shoulder, _ = p.keypoints[0]
        fx1, fy1, fx2, fy2 = p.face[0]
        assert 820 < hip[0] < 1000 and 400 < hip[1] < 560, (i, hip)
        assert shoulder[1] < hip[1] - 100 and top[1] < shoulder[1]
        # the "face" box: around the head, its size varies (165 px at frame 35, 380 at 30)
        assert 780 < (fx1 + fx2) / 2 < 1020 and (fy1 + fy2) / 2 < shoulder[1] + 20, (i, p.face[0])
        assert np.array_equal(detector.detect(im), p.boxes)


def test_tiling_finds_the_small_people_of_vtest(detector, tiled):
    # by eye: frame 10 has 3 walkers on the path (+1 cut by the right edge), frame 100 about 7
    # (two walk side by side), frame 300 six. The whole frame alone finds none of them.
    ims = _frames(VTEST, (10, 100, 300))
    single = detector.detect_batch(ims)
    many = tiled.detect_batch(ims)
    for s, m in zip(single, many):
        on_path = m[(m[:, 1] + m[:, 3]) / 2 < 350]      # the path; the grass below has a paper bag
        assert len(s) <= 1 and len(on_path) >= 3, (s, m)
        assert ((m[:, 2] - m[:, 0]) < 200).all()        # small people: no giant boxes
    assert sum(map(len, many)) >= sum(map(len, single)) + 9


def test_registration_keeps_the_default(model):
    from engine.people import detect

    assert detect.DEFAULT_DETECTOR == "movenet"
    assert "blazepose" in detect.DETECTOR_NAMES and "blazepose-tiled" in detect.DETECTOR_NAMES
    d = detect.make_detector("blazepose-tiled", weights=model[1], device="cpu")
    assert isinstance(d, bp.BlazePoseDetector) and d.levels == bp.TILED_LEVELS and d.name == "blazepose-tiled"
    assert detect.make_detector("blazepose", weights=model[1], device="auto").levels == (1,)


def test_missing_or_wrong_files_are_clear_errors(model, tmp_path, monkeypatch):
    monkeypatch.setenv("PYMAF_ASSETS_DIR", str(tmp_path / "empty"))
    with pytest.raises(assets.LandmarkModelError) as e:
        bp.BlazePoseDetector()
    for part in ("BlazePose pose detector", "mediapipe 0.10.21", "Apache-2.0", "blazepose_detector.pt",
                 "build.py setup", "python -m engine.landmarks.setup"):
        assert part in str(e.value), part
    # a landmark model (or anything else) given as the detector
    lm = assets.converted_path("lite", ROOT / "build" / "assets")
    wrong = lm if lm.is_file() else tmp_path / "junk.pt"
    if not lm.is_file():
        torch.save({"state_dict": {}}, wrong)
    with pytest.raises(assets.LandmarkModelError) as e:
        bp.BlazePoseDetector(weights=wrong)
    assert wrong.name in str(e.value) and "mediapipe 0.10.21" in str(e.value)
    # an altered wheel / model member is refused by name
    bad = tmp_path / assets.DETECTOR_PACKAGE["wheel_name"]
    bad.write_bytes(b"PK not a wheel")
    with pytest.raises(assets.LandmarkModelError) as e:
        assets.verify_wheel(bad)
    assert e.value.code == "hash_mismatch" and "mediapipe" in str(e.value)
    monkeypatch.setitem(assets.DETECTOR, "sha256", "0" * 64)
    with pytest.raises(assets.LandmarkModelError) as e:
        assets.extract_detector(assets.fetch_wheel(assets.download_dir()), tmp_path / "x.tflite")
    assert e.value.code == "hash_mismatch" and "pose_detection.tflite" in str(e.value)
    # the converter refuses a landmark model as the detector
    from engine.landmarks.convert import ConversionError, read_tflite

    with pytest.raises(ConversionError, match="pose detector"):
        read_tflite(_landmark_tflite(tmp_path), kind="detector")


def _landmark_tflite(tmp_path) -> Path:
    tarball = assets.fetch_tarball(assets.download_dir())
    return assets.extract_model(tarball, "lite", tmp_path / "lite.tflite")


def test_setup_cli_installs_the_detector_next_to_the_landmark_models(tmp_path):
    from engine.landmarks import setup

    wheel = assets.fetch_wheel(assets.download_dir())
    assert setup.main(["--sizes", "detector", "--wheel", str(wheel), "--folder", str(tmp_path),
                       "--progress", "none"]) == 0
    assert (tmp_path / "blazepose_detector.pt").is_file() and assets.detector_problem(tmp_path) is None
    assert setup.main(["--sizes", "detector", "--check", "--folder", str(tmp_path), "--progress", "none"]) == 0
    assert setup.main(["--sizes", "detector", "--check", "--folder", str(tmp_path / "none"),
                       "--progress", "none"]) == 5
    assert setup.main(["--sizes", "detector", "--wheel", str(tmp_path / "missing.whl"),
                       "--folder", str(tmp_path / "b"), "--progress", "none"]) == 5
