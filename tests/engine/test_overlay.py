"""``python -m engine.overlay``: projected meshes drawn over the video frames."""
import json

import cv2
import numpy as np
import pytest

from engine import overlay


def write_clip(path, n=6, size=(320, 240)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 40 + 10 * i, np.uint8))
    writer.release()
    return path


def write_input(path, video, frames, present=None):
    """A square (two triangles, facing the camera) in the middle-left of a 320x240 frame,
    and one triangle facing away (culled)."""
    K = len(frames)
    f, cx, cy = 300.0, 160.0, 120.0
    cam = np.array([[-0.5, -0.5, 3.0], [0.0, -0.5, 3.0], [0.0, 0.5, 3.0], [-0.5, 0.5, 3.0],
                    [0.2, -0.5, 3.0], [0.6, -0.5, 3.0], [0.6, 0.5, 3.0]], np.float32)
    faces = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6]], np.int64)  # the last one winds the other way
    uv = cam[:, :2] / cam[:, 2:] * f + [cx, cy]
    meta = {"video": str(video), "width": 320, "height": 240, "fps": 25.0, "people": ["7"]}
    np.savez(path, **{"meta/json": np.frombuffer(json.dumps(meta).encode(), np.uint8),
                      "video_frames": np.asarray(frames, np.int64),
                      "people/7/faces": faces,
                      "people/7/uv": np.repeat(uv[None], K, 0).astype(np.float32),
                      "people/7/cam": np.repeat(cam[None], K, 0),
                      "people/7/present": np.ones(K, bool) if present is None else np.asarray(present)})
    return path


def test_overlay_draws_visible_faces_only(tmp_path, capsys):
    video = write_clip(tmp_path / "clip.avi")
    inp = write_input(tmp_path / "in.npz", video, [1, 2, 3, 4], present=[True, True, False, True])
    code = overlay.main([str(inp), "--video-out", str(tmp_path / "o.mp4"), "--png-dir", str(tmp_path / "png"),
                        "--png-count", "4", "--progress", "jsonl"])
    assert code == 0
    events = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4]
    done = events[-1]
    assert done["event"] == "done" and done["frames"] == 4 and len(done["pngs"]) == 4
    cap = cv2.VideoCapture(done["result"])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    first = cv2.imread(done["pngs"][0])
    assert first.shape == (240, 320, 3)
    square, culled, background = first[120, 135], first[120, 205], first[20, 20]
    assert abs(int(background.mean()) - 50) < 6          # video frame 1 untouched (grey 50)
    assert np.abs(square.astype(int) - background.astype(int)).max() > 40   # body drawn
    assert np.abs(culled.astype(int) - background.astype(int)).max() < 6    # back face not drawn
    absent = cv2.imread(done["pngs"][2])                   # frame 3: the person is not there
    assert np.abs(absent[120, 135].astype(int) - absent[20, 20].astype(int)).max() < 6


def test_overlay_errors(tmp_path, capsys):
    inp = write_input(tmp_path / "in.npz", tmp_path / "missing.mp4", [0])
    assert overlay.main([str(inp), "--video-out", str(tmp_path / "o.mp4"), "--progress", "jsonl"]) == 3
    err = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert err["event"] == "error" and err["code"] == "not_found"
    (tmp_path / "bad.npz").write_bytes(b"nope")
    assert overlay.main([str(tmp_path / "bad.npz"), "--video-out", str(tmp_path / "o.mp4")]) == 2
    with pytest.raises(overlay.OverlayError, match="face index"):
        video = write_clip(tmp_path / "c.avi")
        p = write_input(tmp_path / "x.npz", video, [0])
        z = dict(np.load(p))
        z["people/7/faces"] = np.array([[0, 1, 99]])
        np.savez(p, **z)
        overlay.read_input(p)
