"""``python -m engine.overlay``: projected meshes (an input folder of memory-mapped .npy files)
drawn over the video frames; outputs appear only when the run completes."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.lib.format import open_memmap

from engine import overlay

REPO = Path(__file__).resolve().parents[2]
F, CX, CY = 300.0, 160.0, 120.0                  # pinhole of the 320x240 test clip
RED, GREEN = (230, 40, 40), (40, 200, 60)


def write_clip(path, n=6, size=(320, 240)):
    """An MJPG clip of flat grey frames: frame i is grey 40 + 10 i (capped)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), min(40 + 10 * i, 200), np.uint8))
    writer.release()
    return path


def project(cam):
    """(V, 3) camera-frame points -> (V, 2) pixels."""
    cam = np.asarray(cam, np.float64)
    return cam[:, :2] / cam[:, 2:] * F + [CX, CY]


def facing_square(center, half):
    """A square of side 2 half centred at ``center`` (camera frame), perpendicular to the ray
    to its centre (so its shade is ~1): -> (4, 3) corners, (2, 3) triangles facing the camera,
    and a camera-frame point well inside the first triangle."""
    c = np.asarray(center, np.float64)
    n = c / np.linalg.norm(c)
    u = np.cross([0.0, 1.0, 0.0], n)
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    corners = c + half * np.array([-u - v, u - v, u + v, -u + v])
    return corners, np.array([[0, 2, 1], [0, 3, 2]]), c + 0.5 * half * (u - v)


def pixel_of(point):
    """(x, y) integer pixel of one camera-frame point."""
    x, y = project(np.asarray(point)[None])[0]
    return int(round(x)), int(round(y))


def write_input(folder, video, video_frames, people, **meta_overrides):
    """The folder the extension writes, frame by frame through ``open_memmap``.
    people: {id: {"rows": [(V, 3) camera-frame vertices per drawn frame], "frames": [k...],
    "faces": (F, 3), "color": (3,) or None}}."""
    folder = Path(folder)
    (folder / "people").mkdir(parents=True)
    meta = {"format": "pymaf-overlay-input", "version": 2, "video": str(video), "width": 320, "height": 240,
            "fps": 25.0, "people": list(people)}
    meta.update(meta_overrides)
    (folder / "meta.json").write_text(json.dumps(meta))
    np.save(folder / "video_frames.npy", np.asarray(video_frames, np.int64))
    for pid, p in people.items():
        d = folder / "people" / pid
        d.mkdir()
        np.save(d / "faces.npy", np.asarray(p["faces"], np.int64))
        np.save(d / "frames.npy", np.asarray(p["frames"], np.int64))
        P, V = len(p["rows"]), len(p["rows"][0])
        uv = open_memmap(d / "uv.npy", mode="w+", dtype=np.float32, shape=(P, V, 2))
        cam = open_memmap(d / "cam.npy", mode="w+", dtype=np.float32, shape=(P, V, 3))
        for j, verts in enumerate(p["rows"]):      # one frame at a time, as Blender does
            cam[j] = verts
            uv[j] = project(verts)
        uv.flush()
        cam.flush()
        del uv, cam
        if p.get("color") is not None:
            np.save(d / "color.npy", np.asarray(p["color"], np.uint8))
    return folder


def two_people(folder, video):
    """Overlay frames = video frames 1..4. Person 1 (red): a square left of centre on every
    frame, plus one triangle facing away (culled). Person 2 (green): drawn on overlay frames 1
    and 3 only, at a different place on each. -> (folder, sample points)."""
    sq1, faces1, in1 = facing_square((-0.4, 0.0, 3.0), 0.15)
    away = np.array([[0.0, 0.3, 3.0], [0.2, 0.3, 3.0], [0.2, 0.6, 3.0]])   # wound away from the camera
    verts1 = np.concatenate([sq1, away])
    faces1 = np.concatenate([faces1, [[4, 5, 6]]])
    sq2a, faces2, in2a = facing_square((0.4, 0.0, 3.0), 0.15)
    sq2b, _, in2b = facing_square((0.4, -0.35, 3.0), 0.15)
    people = {"1": {"rows": [verts1] * 4, "frames": [0, 1, 2, 3], "faces": faces1, "color": RED},
              "2": {"rows": [sq2a, sq2b], "frames": [1, 3], "faces": faces2, "color": GREEN}}
    write_input(folder, video, [1, 2, 3, 4], people)
    return folder, {"p1": pixel_of(in1), "culled": pixel_of(away.mean(axis=0)), "p2a": pixel_of(in2a),
                    "p2b": pixel_of(in2b)}


def rgb_png(path):
    return cv2.imread(str(path))[..., ::-1].astype(int)


def events_of(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def leftovers(root):
    return sorted(str(p) for p in Path(root).rglob("*partial*"))


def test_two_people_drawn_in_their_colours(tmp_path, capsys):
    video = write_clip(tmp_path / "clip.avi")
    inp, at = two_people(tmp_path / "in", video)
    code = overlay.main([str(inp), "--video-out", str(tmp_path / "o.mp4"), "--png-dir", str(tmp_path / "png"),
                         "--png-count", "4", "--alpha", "1.0", "--progress", "jsonl"])
    assert code == 0
    events = events_of(capsys)
    assert [e["done"] for e in events if e["event"] == "progress"] == [1, 2, 3, 4]
    done = events[-1]
    assert done["event"] == "done" and done["frames"] == 4 and len(done["pngs"]) == 4
    assert [Path(p).name for p in done["pngs"]] == [f"overlay_0000{i}.png" for i in (1, 2, 3, 4)]
    assert int(cv2.VideoCapture(done["result"]).get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    f0, f1, f2, f3 = (rgb_png(p) for p in done["pngs"])
    assert f0.shape == (240, 320, 3)

    def colour(img, name):
        x, y = at[name]
        return img[y, x]

    def near(px, rgb, tol):
        return np.abs(px - np.asarray(rgb)).max() <= tol

    for img, grey in ((f0, 50), (f1, 60), (f2, 70), (f3, 80)):
        assert near(colour(img, "p1"), RED, 1)                  # alpha 1, facing the camera: the colour itself
        assert near(colour(img, "culled"), (grey,) * 3, 6)      # back face not drawn: the footage
        assert near(img[5, 5], (grey,) * 3, 6)
    assert near(colour(f1, "p2a"), GREEN, 1)
    assert near(colour(f1, "p2b"), (60,) * 3, 6)
    assert near(colour(f3, "p2b"), GREEN, 1)                     # its second row, at its own place
    assert near(colour(f3, "p2a"), (80,) * 3, 6)
    for img in (f0, f2):                                         # person 2 absent: no green anywhere
        assert near(colour(img, "p2a"), (img[5, 5]), 6)
        assert (np.abs(img - np.asarray(GREEN)).max(axis=2) > 30).all()
    assert leftovers(tmp_path) == []


def test_done_event_names_the_codec(tmp_path, capsys):
    video = write_clip(tmp_path / "clip.avi")
    inp, _ = two_people(tmp_path / "in", video)
    assert overlay.main([str(inp), "--video-out", str(tmp_path / "o.mp4"), "--progress", "jsonl"]) == 0
    done = events_of(capsys)[-1]
    assert done["codec"] in ("h264", "mp4v", "mjpg")
    if done["codec"] == "h264":                                  # an OpenCV build with an H.264 encoder
        assert "note" not in done and done["result"].endswith("o.mp4")
    else:                                                        # pip's opencv-python-headless
        assert done["codec"] == "mp4v" and done["result"].endswith("o.mp4")
        assert "H.264" in done["note"] and "MPEG-4 Part 2" in done["note"]
    assert sorted(os.listdir(tmp_path)) == ["clip.avi", "in", "o.mp4"]


def test_palette_when_no_colour_given(tmp_path):
    video = write_clip(tmp_path / "clip.avi")
    inp, _ = two_people(tmp_path / "in", video)
    (inp / "people" / "2" / "color.npy").unlink()
    data = overlay.read_input(inp)
    assert data["people"]["1"]["color"] == RED and data["people"]["2"]["color"] == overlay.person_color_srgb(1)
    assert isinstance(data["people"]["2"]["uv"], np.memmap)      # per-frame arrays stay on disk


def _set_meta(folder, **kw):
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(kw)
    (folder / "meta.json").write_text(json.dumps(meta))


def _traversal(folder):
    shutil.copytree(folder / "people" / "2", folder / "x")      # readable through "people/../x"
    _set_meta(folder, people=["1", "../x"])


MALFORMED = {
    "no meta.json": (lambda d: (d / "meta.json").unlink(), "no meta.json"),
    "wrong version": (lambda d: _set_meta(d, version=1), "version 1"),
    "wrong format": (lambda d: _set_meta(d, format="something else"), "format"),
    "frames index out of range": (lambda d: np.save(d / "people/2/frames.npy", np.array([0, 4])), "out of range"),
    "frames not increasing": (lambda d: np.save(d / "people/2/frames.npy", np.array([3, 1])), "strictly increasing"),
    "video frames not increasing": (lambda d: np.save(d / "video_frames.npy", np.array([1, 3, 2, 4])),
                                    "strictly increasing"),
    "uv shape mismatch": (lambda d: np.save(d / "people/2/uv.npy", np.zeros((3, 4, 2), np.float32)), "uv.npy"),
    "uv vertices differ from cam": (lambda d: np.save(d / "people/2/uv.npy", np.zeros((2, 5, 2), np.float32)),
                                    "vertices"),
    "face index out of range": (lambda d: np.save(d / "people/1/faces.npy", np.array([[0, 1, 99]])), "face index"),
    "person id ../x": (_traversal, "not a plain name"),
    "pickled object array": (lambda d: np.save(d / "people/1/cam.npy", np.array([{"a": 1}] * 4, dtype=object),
                                               allow_pickle=True), "not a plain .npy"),
    "colour not uint8": (lambda d: np.save(d / "people/1/color.npy", np.array([1.0, 0, 0])), "uint8"),
    "missing uv": (lambda d: (d / "people/1/uv.npy").unlink(), "missing"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_inputs_exit_2(tmp_path, capsys, case):
    video = write_clip(tmp_path / "clip.avi")
    inp, _ = two_people(tmp_path / "in", video)
    mutate, words = MALFORMED[case]
    mutate(inp)
    assert overlay.main([str(inp), "--video-out", str(tmp_path / "o.mp4"), "--progress", "jsonl"]) == 2
    err = events_of(capsys)[-1]
    assert err["event"] == "error" and err["code"] == "usage" and words in err["message"], err
    assert not (tmp_path / "o.mp4").exists() and leftovers(tmp_path) == []


def test_old_npz_input_and_missing_video(tmp_path, capsys):
    np.savez(tmp_path / "old.npz", video_frames=np.arange(3))
    assert overlay.main([str(tmp_path / "old.npz"), "--video-out", str(tmp_path / "o.mp4"), "--progress", "jsonl"]) == 2
    assert "not an overlay input folder" in events_of(capsys)[-1]["message"]
    inp, _ = two_people(tmp_path / "in", tmp_path / "missing.mp4")
    assert overlay.main([str(inp), "--video-out", str(tmp_path / "o.mp4"), "--progress", "jsonl"]) == 3
    err = events_of(capsys)[-1]
    assert err["event"] == "error" and err["code"] == "not_found"
    assert not (tmp_path / "o.mp4").exists() and leftovers(tmp_path) == []


def _previous_outputs(tmp_path):
    """Outputs of an earlier run, which a failed run must leave as they are."""
    (tmp_path / "png").mkdir()
    (tmp_path / "out.mp4").write_bytes(b"the previous video")
    (tmp_path / "png" / "overlay_00001.png").write_bytes(b"the previous still")


def _assert_previous_intact(tmp_path):
    assert (tmp_path / "out.mp4").read_bytes() == b"the previous video"
    assert (tmp_path / "png" / "overlay_00001.png").read_bytes() == b"the previous still"
    assert sorted(os.listdir(tmp_path / "png")) == ["overlay_00001.png"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("how", ["cancel", "error"])
def test_interrupted_render_leaves_previous_outputs(tmp_path, how):
    video = write_clip(tmp_path / "clip.avi")
    inp, _ = two_people(tmp_path / "in", video)
    _previous_outputs(tmp_path)
    seen = []

    def progress(done, total):
        seen.append(done)
        if how == "error" and done == 3:
            raise RuntimeError("boom")

    kw = {"cancel": lambda: len(seen) >= 3} if how == "cancel" else {}
    with pytest.raises(overlay.OverlayError if how == "cancel" else RuntimeError) as exc:
        overlay.render(overlay.read_input(inp), tmp_path / "out.mp4", tmp_path / "png", png_count=4,
                       progress=progress, **kw)
    if how == "cancel":
        assert exc.value.exit_code == 130 and exc.value.code == "cancelled"
    assert seen == [1, 2, 3]                     # stills and video frames were written, then dropped
    _assert_previous_intact(tmp_path)


def grid_person(n=40, center=(0.0, 0.0, 3.0), half=0.8):
    """A facing grid of 2 n^2 small triangles (slow enough to draw that a run can be stopped
    midway). -> (corners (V, 3), faces (F, 3))."""
    corners, _, _ = facing_square(center, half)
    a, b, d = corners[0], corners[1], corners[3]
    s = np.linspace(0.0, 1.0, n + 1)
    verts = (a + s[None, :, None] * (b - a) + s[:, None, None] * (d - a)).reshape(-1, 3)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    q0, q1, q2, q3 = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([q0, q2, q1], 1), np.stack([q0, q3, q2], 1)])
    return verts, faces


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_run_exits_130_and_keeps_previous_outputs(tmp_path, sig):
    n = 300
    video = write_clip(tmp_path / "clip.avi", n=n)
    verts, faces = grid_person()
    write_input(tmp_path / "in", video, list(range(n)),
                {"1": {"rows": [verts] * n, "frames": list(range(n)), "faces": faces, "color": RED}})
    _previous_outputs(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "engine.overlay", str(tmp_path / "in"), "--video-out",
                             str(tmp_path / "out.mp4"), "--png-dir", str(tmp_path / "png"), "--png-count", "50",
                             "--progress", "jsonl"], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:                                  # wait until frames (and stills) are being written
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(json.loads(line))
            if lines[-1].get("event") == "progress" and lines[-1]["done"] >= 2:
                break
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "error" and last["code"] == "cancelled" and "of 300 frames" in last["message"]
    _assert_previous_intact(tmp_path)


@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o002, 0o664)])
def test_outputs_honour_the_umask(tmp_path, capsys, mask, want):
    video = write_clip(tmp_path / "clip.avi")
    inp, _ = two_people(tmp_path / "in", video)
    old = os.umask(mask)
    try:
        assert overlay.main([str(inp), "--video-out", str(tmp_path / "o.mp4"), "--png-dir", str(tmp_path / "png"),
                             "--png-count", "2", "--progress", "jsonl"]) == 0
    finally:
        os.umask(old)
    done = events_of(capsys)[-1]
    for path in [done["result"], *done["pngs"]]:
        assert stat.S_IMODE(os.stat(path).st_mode) == want, path
