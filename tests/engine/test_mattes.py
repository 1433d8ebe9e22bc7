"""``python -m engine mattes``: per-person mattes rendered from a result's bodies.

The results here are built from the mannequin with known poses; the reference masks come from
``engine.render.renderer`` on vertices posed by smplx's own ``lbs`` (an implementation
independent of engine/mattes.py's skinning)."""
from __future__ import annotations

import errno
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import mattes as M
from engine.common import result_schema as rs
from engine.common.rotations import axis_angle_to_rotmat
from engine.common.smpl_topology import SMPL_JOINT_NAMES

W, H, FOCAL = 320, 240, 330.0
PP = (161.0, 118.0)
FLIP = axis_angle_to_rotmat(np.array([np.pi, 0.0, 0.0]))          # SMPL y up -> camera y down


def pose(bend: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """(24, 3, 3) local rotations: upright facing the camera (turned by ``yaw``), arms lowered,
    left elbow and right knee bent by ``bend`` radians."""
    aa = np.zeros((24, 3))
    j = SMPL_JOINT_NAMES.index
    aa[j("left_shoulder")] = (0.0, 0.0, -1.1)
    aa[j("right_shoulder")] = (0.0, 0.0, 1.1)
    aa[j("left_elbow")] = (0.0, -bend, 0.0)
    aa[j("right_knee")] = (bend, 0.0, 0.0)
    R = axis_angle_to_rotmat(aa)
    R[0] = FLIP @ axis_angle_to_rotmat(np.array([0.0, yaw, 0.0]))
    return R


def make_result(body, people: dict, *, n_frames=4, frame_start=0, rig=True, fps=25.0, size=(W, H)) -> rs.MotionResult:
    """people: {track id: (frames, rotmats (T, 24, 3, 3), transl (T, 3))}."""
    rest_v, rest_j = body.rest_shape(np.zeros(10))
    tracks = {}
    for tid, (frames, R, t) in people.items():
        T = len(frames)
        extra = {"rest_vertices": rest_v.astype(np.float32), "rest_joints": rest_j} if rig else {}
        tracks[tid] = rs.TrackResult.from_rotmats(
            frames=np.asarray(frames, np.int64), transl=np.asarray(t, np.float64), global_orient_rotmat=R[:, 0],
            body_pose_rotmat=R[:, 1:], betas=np.zeros((T, 10)), confidence=np.ones(T), **extra)
    meta = rs.make_meta(video={"path": "/nonexistent/plate.mp4", "width": size[0], "height": size[1], "fps": fps,
                               "frame_count": n_frames},
                        camera={"focal_px": FOCAL, "principal_point": list(PP)}, frames_done=n_frames,
                        track_ids=list(people), frame_start=frame_start)
    body_rig = rs.BodyRig(faces=body.faces, weights=body.weights.astype(np.float32), parents=body.parents) if rig else None
    return rs.MotionResult(meta=meta, tracks=tracks, timestamps=np.arange(n_frames) / fps, body=body_rig)


def lbs_vertices(body, R: np.ndarray, transl) -> np.ndarray:
    """smplx's lbs (no pose correctives, as the result's rig) -> (V, 3) camera frame."""
    import torch
    from smplx.lbs import lbs

    V = body.num_vertices
    d = torch.float64
    v, _ = lbs(torch.zeros(1, 10, dtype=d), torch.as_tensor(R, dtype=d)[None],
               torch.as_tensor(body.v_template, dtype=d)[None], torch.as_tensor(body.shapedirs[..., :10], dtype=d),
               torch.zeros(207, V * 3, dtype=d), torch.as_tensor(body.J_regressor, dtype=d),
               torch.as_tensor(body.parents, dtype=torch.long), torch.as_tensor(body.weights, dtype=d),
               pose2rot=False)
    return v[0].numpy() + np.asarray(transl)


def reference(body, result, tid_verts: list):
    """The renderer's buffers for [(vertices)...] (one image each), parts as the mattes use them."""
    from engine.render.renderer import Renderer

    parts = M.vertex_parts(result, list(result.tracks))
    with Renderer(W, H, body.faces, parts, None) as r:
        return r.render(np.stack(tid_verts).astype(np.float32), FOCAL, np.array(PP))


def run(argv, capsys):
    """main() in this process -> (exit code, jsonl events)."""
    rc = M.main([*map(str, argv), "--progress", "jsonl"])
    out = capsys.readouterr().out
    return rc, [json.loads(line) for line in out.splitlines() if line.strip()]


def png(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.fixture(scope="module")
def body(mannequin):
    return mannequin


@pytest.fixture(scope="module")
def one(tmp_path_factory, body, egl):
    """One person (track "1") in known poses on result frames 0..3, the result starting at video
    frame 5 (so Blender frames 6..9); 320x240, written once."""
    d = tmp_path_factory.mktemp("one")
    R = np.stack([pose(0.3 * k) for k in range(4)])
    t = np.array([[0.05 * k, 0.15, 3.2] for k in range(4)])
    res = make_result(body, {"1": (np.arange(4), R, t)}, n_frames=4, frame_start=5)
    rs.write_result(res, d / "shot.npz")
    return d, res, R, t


# --------------------------------------------------------------------------- the known pose


def test_known_pose_matte_equals_the_renderers_mask(one, body, capsys):
    d, res, R, t = one
    rc, events = run([d / "shot.npz", "--out", d / "m", "--format", "png"], capsys)
    assert rc == 0, events
    ref = reference(body, res, [lbs_vertices(body, R[k], t[k]) for k in range(4)])
    for k in range(4):
        bf = k + 5 + 1                                          # video frame (frame_start + k) + 1
        alpha = png(d / "m" / f"shot_person1.{bf:04d}.png")
        ids = png(d / "m" / f"shot_ids.{bf:04d}.png")
        parts = png(d / "m" / f"shot_parts.{bf:04d}.png")
        mask = ref.mask[k]
        assert mask.sum() > 4000                              # the body is well in view
        # Tolerance: a pixel whose centre lies on a triangle edge may flip between float32
        # vertex sets (ours vs smplx's); none did here, allow 3 of ~5000.
        assert np.count_nonzero((alpha > 0) != mask) <= 3
        assert set(np.unique(alpha)) <= {0, 255}
        assert np.count_nonzero((ids == 1) != mask) <= 3 and set(np.unique(ids)) <= {0, 1}
        both = mask & (alpha > 0)
        assert (parts[both] == ref.part[k][both]).mean() > 0.999
        assert np.all(parts[~(alpha > 0)] == 0) and parts[both].min() >= 1
    # a different pose would not match (the comparison can fail)
    assert np.count_nonzero(ref.mask[0] != ref.mask[3]) > 200


def test_exr_layers_read_back_with_the_expected_names(one, body, capsys):
    OpenEXR = pytest.importorskip("OpenEXR")
    d, res, R, t = one
    rc, _ = run([d / "shot.npz", "--out", d / "x", "--start", 6, "--stop", 8, "--feather", 3], capsys)
    assert rc == 0
    files = sorted(p.name for p in (d / "x").glob("*.exr"))
    assert files == ["shot.0007.exr", "shot.0008.exr"]
    with OpenEXR.File(str(d / "x" / "shot.0007.exr"), separate_channels=True) as f:
        ch = {k: v.pixels.copy() for k, v in f.channels().items()}
        hdr = {k: f.header()[k] for k in ("compression", "dataWindow", "displayWindow")}   # the dict dies with f
    assert set(ch) == {"R", "G", "B", "A", "person1.A", "ids.id", "parts.id", "depth.Z"}
    assert hdr["compression"] == OpenEXR.ZIP_COMPRESSION
    assert tuple(hdr["dataWindow"][1]) == (W - 1, H - 1) == tuple(hdr["displayWindow"][1])
    assert all(a.shape == (H, W) for a in ch.values())
    ids, parts = png(d / "x" / "shot_ids.0007.png"), png(d / "x" / "shot_parts.0007.png")
    alpha8 = png(d / "x" / "shot_person1.0007.png")
    assert np.array_equal(ch["ids.id"].astype(np.uint8), ids) and np.array_equal(ch["parts.id"].astype(np.uint8), parts)
    a = ch["person1.A"].astype(np.float32)
    assert np.abs(np.rint(a * 255) - alpha8).max() <= 1 and 0 < a[(a > 0) & (a < 1)].size   # feathered
    assert np.array_equal(ch["A"], ch["person1.A"])
    ref = reference(body, res, [lbs_vertices(body, R[1], t[1])])
    z = ch["depth.Z"]
    m = ref.mask[0] & (ids > 0)
    assert np.abs(z[m] - ref.depth[0][m]).max() < 1e-4
    assert np.all(z[ids == 0] == M.BACKGROUND_Z)
    colour = np.array([c for c in M.srgb_to_linear(M.person_color_srgb(0))])
    inside = a == 1
    rgb = np.stack([ch["R"], ch["G"], ch["B"]], -1).astype(np.float32)[inside]
    assert np.abs(rgb - colour).max() < 2e-3


def test_png16_and_numbering_and_sidecar(one, capsys):
    d, res, R, t = one
    out = d / "p16"
    rc, events = run([d / "shot.npz", "--out", out, "--format", "png16", "--name", "plate_A", "--feather", 2,
                      "--parts", "coarse"], capsys)
    assert rc == 0
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and {"stage", "done", "total", "frame"} <= set(progress[-1]) and progress[-1]["stage"] == "mattes"
    assert progress[-1]["done"] == progress[-1]["total"] == 4 and progress[-1]["frame"] == 9
    done = events[-1]
    assert done["event"] == "done" and (done["first_frame"], done["last_frame"]) == (6, 9)
    names = sorted(p.name for p in out.iterdir())
    want = sorted([f"plate_A_{k}.{f:04d}.png" for k in ("person1", "ids", "parts") for f in range(6, 10)]
                  + ["plate_A_mattes.json", "plate_A_contours.npz"])
    assert names == want                                   # no EXR, no leftovers
    a = png(out / "plate_A_person1.0007.png")
    assert a.dtype == np.uint16 and a.max() == 65535 and np.any((a > 0) & (a < 65535))
    assert png(out / "plate_A_ids.0007.png").dtype == np.uint8
    assert png(out / "plate_A_parts.0007.png").max() <= 14           # coarse groups
    side = json.loads((out / "plate_A_mattes.json").read_text())
    assert (side["width"], side["height"], side["fps"]) == (W, H, 25.0)
    assert (side["frame_start"], side["frame_end"], side["video_frames"], side["result_frames"]) == (6, 9, [5, 8], [0, 3])
    assert side["partial"] is False and side["frames_written"] == 4
    assert side["people"] == [{"track_id": "1", "id": 1, "color_srgb": list(M.person_color_srgb(0)),
                               "color_linear": side["people"][0]["color_linear"], "frames_visible": 4}]
    person = side["files"]["person"]["1"]
    assert person == {"printf": "plate_A_person1.%04d.png", "hashes": "plate_A_person1.####.png", "bits": 16}
    for f in range(6, 10):
        for entry in (person, side["files"]["ids"], side["files"]["parts"]):
            assert (out / (entry["printf"] % f)).is_file()
            assert entry["hashes"].replace("####", f"{f:04d}") == entry["printf"] % f
    assert "exr" not in side["files"]
    assert side["parts"]["kind"] == "coarse" and len(side["parts"]["table"]) == 14
    assert side["options"] == {"format": "png16", "parts": "coarse", "dilate": 0.0, "feather": 2.0, "contour_points": 32,
                                "alpha": "body"}


# --------------------------------------------------------------------------- two people


def test_the_nearer_person_owns_the_overlap(tmp_path, body, egl, capsys):
    R = pose(0.2)[None]
    # track "2" is nearer (and later in the order): a depth-blind composite would give it to "1"
    far, near = np.array([[0.0, 0.1, 4.2]]), np.array([[0.25, 0.1, 3.0]])
    res = make_result(body, {"1": ([0], R, far), "2": ([0], R, near)}, n_frames=1)
    rs.write_result(res, tmp_path / "two.npz")
    rc, _ = run([tmp_path / "two.npz", "--out", tmp_path / "m", "--format", "all"], capsys)
    assert rc == 0
    ref = reference(body, res, [lbs_vertices(body, R[0], far[0]), lbs_vertices(body, R[0], near[0])])
    m_far, m_near = ref.mask
    overlap = m_far & m_near
    assert overlap.sum() > 500
    a1, a2 = png(tmp_path / "m" / "two_person1.0001.png"), png(tmp_path / "m" / "two_person2.0001.png")
    ids = png(tmp_path / "m" / "two_ids.0001.png")
    assert np.all(ids[overlap] == 2) and np.all(a2[overlap] == 255) and np.all(a1[overlap] == 0)
    assert np.count_nonzero((a1 > 0) != (m_far & ~m_near)) <= 3       # the far one minus what hides it
    assert np.count_nonzero((a2 > 0) != m_near) <= 3
    assert np.all(ids[~(m_far | m_near)] == 0)
    side = json.loads((tmp_path / "m" / "two_mattes.json").read_text())
    assert [(p["track_id"], p["id"]) for p in side["people"]] == [("1", 1), ("2", 2)]
    z = np.load(tmp_path / "m" / "two_contours.npz")
    assert z["1/depth"][0] > z["2/depth"][0] + 1.0                 # depth order in the contours file


# --------------------------------------------------------------------------- dilate / feather


def test_dilate_and_feather_do_what_they_say():
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True                                    # 20 x 20 square
    grown = M.soften(mask, dilate=3) > 0
    assert np.array_equal(np.flatnonzero(grown[30]), np.arange(27, 53))     # 3 px more each side
    assert np.array_equal(np.flatnonzero(grown[:, 40]), np.arange(17, 43))
    assert grown[18, 28] and not grown[17, 27]                    # corners rounded (distance <= 3)
    shrunk = M.soften(mask, dilate=-3) > 0
    assert np.array_equal(np.flatnonzero(shrunk[30]), np.arange(33, 47))
    a = M.soften(mask, feather=4)
    row = a[30, 26:34]                                            # across the left edge (x = 30)
    assert np.allclose(row, [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1])
    assert np.isclose(a[30].sum(), 20.0)                          # a centred ramp keeps the width
    both = M.soften(mask, dilate=2, feather=2)
    assert np.allclose(both[30, 26:30], [0.0, 0.25, 0.75, 1.0])
    assert np.array_equal(M.soften(mask), mask.astype(np.float32))
    edge = np.zeros((10, 10), bool)
    edge[:, :4] = True                                            # touching the frame border
    assert np.all(M.soften(edge, dilate=-1)[:, 0] == 1)           # borders are not edges


def test_dilate_and_feather_through_the_command(one, capsys):
    d, res, R, t = one
    rc, _ = run([d / "shot.npz", "--out", d / "df", "--format", "png", "--dilate", 2, "--feather", 3,
                 "--stop", 6], capsys)
    assert rc == 0
    plain = png(d / "m" / "shot_person1.0006.png") > 0
    got = png(d / "df" / "shot_person1.0006.png")
    want = np.rint(M.soften(plain, 2, 3) * 255)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert np.count_nonzero(got) > np.count_nonzero(plain)


# --------------------------------------------------------------------------- contours


def rasterise(points: np.ndarray, shape) -> np.ndarray:
    """Even-odd test of every pixel centre against the polygon."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    px, py = xs.ravel() + 0.5, ys.ravel() + 0.5
    inside = np.zeros(px.shape, bool)
    p, q = points, np.roll(points, -1, 0)
    for (x0, y0), (x1, y1) in zip(p, q):
        crosses = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < xc)
    return inside.reshape(shape)


def iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_contours_file(one, capsys):
    d, res, R, t = one
    rc, _ = run([d / "shot.npz", "--out", d / "c", "--format", "png", "--contour-points", 400], capsys)
    assert rc == 0
    z = np.load(d / "c" / "shot_contours.npz")
    assert (int(z["width"]), int(z["height"])) == (W, H) and list(z["ids"]) == ["1"] and int(z["contour_points"]) == 400
    assert list(z["1/frames"]) == [6, 7, 8, 9]
    pts = z["1/points"]
    assert pts.shape == (4, 400, 2) and pts.dtype == np.float32
    for k, f in enumerate(z["1/frames"]):
        p = pts[k]
        mask = png(d / "c" / f"shot_person1.{f:04d}.png") > 0
        assert p[0, 1] == p[:, 1].min()                             # starts at the topmost point
        assert M._signed_area(p) > 0                                # clockwise on screen (y down)
        step = np.linalg.norm(np.diff(np.vstack([p, p[:1]]), axis=0), axis=1)
        assert step.max() < 2.5 * np.median(step)                   # spread by arc length
        assert p[0, 1] == pytest.approx(np.flatnonzero(mask.any(1))[0], abs=0.1)   # top edge of the top pixel
        assert iou(rasterise(p.astype(np.float64), mask.shape), mask) > 0.97
    # the default 32 points: a coarse but faithful outline
    rc, _ = run([d / "shot.npz", "--out", d / "c32", "--format", "png", "--stop", 6], capsys)
    p32 = np.load(d / "c32" / "shot_contours.npz")["1/points"][0]
    mask = png(d / "c32" / "shot_person1.0006.png") > 0
    assert p32.shape == (32, 2) and iou(rasterise(p32.astype(np.float64), mask.shape), mask) > 0.75


def test_contour_direction_and_start_on_simple_shapes():
    mask = np.zeros((50, 60), bool)
    mask[10:30, 20:45] = True
    p = M.outer_contour(mask, 8)
    assert p.shape == (8, 2)
    # on the top edge (y = 10: the pixels' outer edge), at its left end (the corner pixel's
    # outline is cut by at most a pixel), then right along that edge
    assert p[0, 1] == pytest.approx(10.0, abs=1e-4) and 20.0 <= p[0, 0] <= 21.6
    assert p[1, 0] > p[0, 0] and np.isclose(p[1, 1], 10.0, atol=0.01)   # then right along the top edge
    assert M._signed_area(p) > 0
    assert iou(rasterise(M.outer_contour(mask, 200).astype(np.float64), mask.shape), mask) > 0.98
    two = mask.copy()
    two[40:45, 2:6] = True                                         # a smaller second region is ignored
    assert np.allclose(M.outer_contour(two, 8), p)
    assert M.outer_contour(np.zeros((5, 5), bool), 8) is None


def test_frames_without_the_person_are_left_out_and_short_gaps_bridged(tmp_path, body, egl, capsys):
    R = np.stack([pose(0.1 * k) for k in range(4)])
    t = np.tile([[0.0, 0.1, 3.3]], (4, 1))
    # frames 0, 1, 3 (a 1-frame gap: bridged at 25 fps) and 7 (a 3-frame gap: not bridged)
    res = make_result(body, {"3": ([0, 1, 3, 7], R, t)}, n_frames=9)
    rs.write_result(res, tmp_path / "g.npz")
    rc, _ = run([tmp_path / "g.npz", "--out", tmp_path / "m", "--format", "png"], capsys)
    assert rc == 0
    z = np.load(tmp_path / "m" / "g_contours.npz")
    assert list(z["3/frames"]) == [1, 2, 3, 4, 8]
    assert sorted(p.name for p in (tmp_path / "m").glob("g_person3.*.png")) == [f"g_person3.{f:04d}.png" for f in range(1, 10)]
    assert png(tmp_path / "m" / "g_person3.0006.png").max() == 0     # not shown: a black frame
    bridged = png(tmp_path / "m" / "g_person3.0003.png") > 0
    assert bridged.sum() > 3000


# --------------------------------------------------------------------------- bad input


def test_result_without_body_or_camera(tmp_path, body, capsys):
    R = pose()[None]
    res = make_result(body, {"1": ([0], R, [[0, 0, 3.0]])}, n_frames=1, rig=False)
    rs.write_result(res, tmp_path / "norig.npz")
    rc, events = run([tmp_path / "norig.npz", "--out", tmp_path / "m"], capsys)
    assert rc == 2 and events[-1]["event"] == "error" and events[-1]["code"] == "no_rig"
    assert "no body" in events[-1]["message"]

    res = make_result(body, {"1": ([0], R, [[0, 0, 3.0]])}, n_frames=1)
    arrays = res.to_arrays()
    meta = json.loads(bytes(arrays["meta/json"]).decode())
    del meta["camera"]
    arrays["meta/json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "nocam.npz", **arrays)
    rc, events = run([tmp_path / "nocam.npz", "--out", tmp_path / "m"], capsys)
    assert rc == 2 and events[-1]["code"] == "no_camera" and "no camera" in events[-1]["message"]

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    rc, events = run([tmp_path / "junk.npz", "--out", tmp_path / "m"], capsys)
    assert rc == 2 and events[-1]["code"] == "bad_result"
    assert not (tmp_path / "m").exists()                          # refused before anything was made


def test_bad_arguments(one, capsys):
    d, _, _, _ = one
    for extra, code in ((["--people", "4"], "unknown_person"), (["--start", 2], "frame_range"),
                        (["--start", 7, "--stop", 7], "usage")):
        rc, events = run([d / "shot.npz", "--out", d / "bad", *extra], capsys)
        assert rc == 2 and events[-1]["code"] == code, (extra, events)
    with pytest.raises(SystemExit) as exc:
        M.main([str(d / "shot.npz"), "--out", str(d / "bad"), "--format", "tiff", "--progress", "jsonl"])
    assert exc.value.code == 2
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["code"] == "usage"


def test_plate_of_another_size(one, tmp_path, capsys):
    d, _, _, _ = one

    def clip(path, size):
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
        for _ in range(10):
            w.write(np.full((size[1], size[0], 3), 90, np.uint8))
        w.release()
        return path

    rc, events = run([d / "shot.npz", "--out", tmp_path / "m", "--video", clip(tmp_path / "small.avi", (160, 120))], capsys)
    assert rc == 2 and events[-1]["code"] == "plate_size" and "160x120" in events[-1]["message"]
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
    rc, _ = run([d / "shot.npz", "--out", tmp_path / "ok", "--video", clip(tmp_path / "same.avi", (W, H)),
                 "--format", "png", "--stop", 6], capsys)
    assert rc == 0
    rc, events = run([d / "shot.npz", "--out", tmp_path / "m", "--video", tmp_path / "missing.avi"], capsys)
    assert rc == 3 and events[-1]["code"] == "not_found"


@pytest.mark.parametrize("fmt", ["png", "exr"])
def test_disk_full_mid_sequence(one, tmp_path, monkeypatch, capsys, fmt):
    d, _, _, _ = one
    calls = {"n": 0}
    fail_at = 3 if fmt == "png" else 2          # the run's frame (1-based) whose write fails

    if fmt == "png":
        real = M._put

        def put(f, data):
            calls["n"] += 1
            if calls["n"] == 3 * (fail_at - 1) + 2:           # frame 3's second file, half written
                f.write(data[:len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            real(f, data)
        monkeypatch.setattr(M, "_put", put)
    else:
        real = M._exr_file_write

        def exr(path, header, channels):
            calls["n"] += 1
            if calls["n"] == fail_at:
                Path(path).write_bytes(b"\x76\x2f\x31\x01partial")
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, header, channels)
        monkeypatch.setattr(M, "_exr_file_write", exr)

    out = tmp_path / "m"
    rc, events = run([d / "shot.npz", "--out", out, "--format", "all" if fmt == "exr" else "png"], capsys)
    assert rc == 6
    err = events[-1]
    assert err["event"] == "error" and err["code"] == "disk_full"
    bad = 5 + fail_at                                       # the Blender frame that failed (first is 6)
    assert f"frame {bad}" in err["message"] and "space" in err["message"]
    names = sorted(p.name for p in out.iterdir())
    assert leftovers(out) == []                             # no temporary file left behind
    assert not any(f".{bad:04d}." in n for n in names)      # nothing of the failed frame
    for f in range(6, bad):                                 # earlier frames complete and readable
        for kind in ("person1", "ids", "parts"):
            assert png(out / f"shot_{kind}.{f:04d}.png").shape == (H, W)
        if fmt == "exr":
            assert (out / f"shot.{f:04d}.exr").stat().st_size > 100
    assert not any(f".{f:04d}." in n for n in names for f in range(bad + 1, 10))
    side = json.loads((out / "shot_mattes.json").read_text())     # partial sidecar: what exists
    assert side["partial"] is True and side["frames_written"] == fail_at - 1
    assert side["frames_written_range"] == [6, bad - 1]


def test_mattes_is_a_command_of_the_engine(one, capsys):
    from engine.__main__ import COMMANDS, USAGE, main

    assert "mattes" in COMMANDS and "mattes" in USAGE
    d, _, _, _ = one
    rc = main(["mattes", str(d / "shot.npz"), "--out", str(d / "cmd"), "--format", "png", "--stop", "6",
               "--progress", "jsonl"])
    assert rc == 0 and (d / "cmd" / "shot_person1.0006.png").is_file()
    capsys.readouterr()


# --------------------------------------------------------------------------- --alpha segmentation


def test_segmented_visible_keeps_hair_near_the_body_and_resolves_people():
    """Two people side by side on a 40 x 60 window: their bodies, each one's segmentation with
    'hair' above the body (kept: within the margin), a blob far away (dropped), a strip on the
    other's body (dropped: that body is in front there), and a patch outside both bodies that
    both segmentations claim (goes to the nearer person, 1). A person without a segmentation
    keeps their visible body."""
    h, w = 40, 60
    bodies = np.zeros((2, h, w), bool)
    bodies[0, 10:40, 5:20] = True
    bodies[1, 10:40, 30:45] = True
    owner = np.where(bodies[0], 0, np.where(bodies[1], 1, -1))
    seg0 = bodies[0].copy()
    seg0[6:10, 7:18] = True                      # hair, 4 px above the body
    seg0[0:3, 55:60] = True                      # far away
    seg0[20:25, 30:34] = True                    # on person 1's body
    seg0[15:20, 22:28] = True                    # between them: claimed by both
    seg1 = bodies[1].copy()
    seg1[15:20, 22:28] = True
    vis = M.segmented_visible(owner, bodies, [seg0, seg1], np.array([3.0, 2.0]), np.array([8.0, 8.0]))
    assert vis[0, 6:10, 7:18].all() and not vis[0, 0:3, 55:60].any() and not vis[0, 20:25, 30:34].any()
    assert vis[1, 15:20, 22:28].all() and not vis[0, 15:20, 22:28].any()     # person 1 is nearer
    assert (vis[0] & vis[1]).sum() == 0 and vis[1, 20:25, 30:34].all()
    np.testing.assert_array_equal(M.segmented_visible(owner, bodies, [None, seg1], np.array([3.0, 2.0]),
                                                      np.array([8.0, 8.0]))[0], owner == 0)
    # a segmentation that misses most of the body is a neighbour's (the crop followed them)
    stray = np.zeros((h, w), bool)
    stray[10:40, 17:24] = True                                # a sliver of body 0, the rest beside it
    vis = M.segmented_visible(owner, bodies, [stray, seg1], np.array([3.0, 2.0]), np.array([8.0, 8.0]))
    np.testing.assert_array_equal(vis[0], owner == 0)


@pytest.mark.skipif(not __import__("engine.landmarks.assets", fromlist=["x"]).converted_path("full").is_file(),
                    reason="converted BlazePose models not set up")
def test_segmentation_alpha_follows_the_person_on_the_plate(tmp_path, body, egl, capsys):
    """A rendered clip of the mannequin reaching is the plate; the result's body is off (both
    shoulders turned by 0.35 rad more than on the plate). The body matte misses the arms
    where they really are; ``--alpha segmentation`` follows the plate: its IoU with the
    renderer's true mask is above 0.85 and at least 0.05 above the body matte's."""
    from engine.common.rotations import axis_angle_to_rotmat
    from engine.data.clips import render_person_clip
    from engine.measure.mattes import _write_video, scores, true_result
    from engine.render.renderer import Renderer

    with Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1) as r:
        clip = render_person_clip(body, "reach", 8, 2101, renderer=r, heading_deg=0.0)
        truth = [r.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
    video = _write_video(clip.frames, tmp_path / "plate.avi")
    res = true_result(body, clip)
    tr = res.tracks["1"]
    R = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)
    j = SMPL_JOINT_NAMES.index
    R[:, j("left_shoulder")] = axis_angle_to_rotmat(np.array([0.0, 0.0, -0.35])) @ R[:, j("left_shoulder")]
    R[:, j("right_shoulder")] = axis_angle_to_rotmat(np.array([0.0, 0.0, 0.35])) @ R[:, j("right_shoulder")]
    boxes = []
    for m in truth:                               # the tracker's square box around the person
        ys, xs = np.nonzero(m)
        boxes.append([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, 1.1 * max(np.ptp(xs), np.ptp(ys))])
    res.tracks["1"] = rs.TrackResult.from_rotmats(
        frames=tr.frames, transl=tr.transl, global_orient_rotmat=R[:, 0], body_pose_rotmat=R[:, 1:], betas=tr.betas,
        confidence=tr.confidence, rest_vertices=tr.rest_vertices, rest_joints=tr.rest_joints,
        boxes=np.array(boxes))
    rs.write_result(res, tmp_path / "shot.npz")
    got = {}
    for alpha in ("body", "segmentation"):
        rc, events = run([tmp_path / "shot.npz", "--out", tmp_path / alpha, "--video", video, "--format", "png",
                          "--alpha", alpha], capsys)
        assert rc == 0, events
        got[alpha] = scores([png(tmp_path / alpha / f"shot_person1.{k + 1:04d}.png") > 127 for k in range(8)],
                            truth)["iou"]
        side = json.loads((tmp_path / alpha / "shot_mattes.json").read_text())
        assert side["options"]["alpha"] == alpha
    assert got["segmentation"] > 0.85 and got["segmentation"] > got["body"] + 0.05, got


def test_segmentation_alpha_needs_the_plate(one, capsys):
    d, _, _, _ = one
    rc, events = run([d / "shot.npz", "--out", d / "seg", "--alpha", "segmentation"], capsys)
    assert rc == 2 and events[-1]["code"] == "usage" and "--video" in events[-1]["message"]


def _grey_clip(path, size, n):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for _ in range(n):
        w.write(np.full((size[1], size[0], 3), 90, np.uint8))
    w.release()
    return path


def test_segmentation_alpha_without_the_landmark_model(one, tmp_path, monkeypatch, capsys):
    from engine.landmarks import assets

    def missing(size, *a, **k):
        raise assets.LandmarkModelError(assets.missing_message(size))
    monkeypatch.setattr(assets, "require_converted", missing)
    d, _, _, _ = one
    rc, events = run([d / "shot.npz", "--out", tmp_path / "m", "--video", _grey_clip(tmp_path / "p.avi", (W, H), 10),
                      "--alpha", "segmentation"], capsys)
    assert rc == 5 and events[-1]["code"] == "landmark_model" and "build.py setup" in events[-1]["message"], events


@pytest.mark.skipif(not __import__("engine.landmarks.assets", fromlist=["x"]).converted_path("full").is_file(),
                    reason="converted BlazePose models not set up")
def test_segmentation_alpha_on_a_plate_that_ends_early(one, tmp_path, capsys):
    """The result covers video frames 5..8; a plate of 7 frames ends after frame 6: exit 3
    naming frame 7, the frames before it written and kept (Blender 6 and 7)."""
    d, _, _, _ = one
    out = tmp_path / "m"
    rc, events = run([d / "shot.npz", "--out", out, "--video", _grey_clip(tmp_path / "short.avi", (W, H), 7),
                      "--alpha", "segmentation", "--format", "png"], capsys)
    assert rc == 3 and "frame 7" in events[-1]["message"], events
    assert sorted(p.name for p in out.glob("shot_person1.*.png")) == ["shot_person1.0006.png", "shot_person1.0007.png"]
    assert leftovers(out) == []
