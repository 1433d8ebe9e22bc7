"""engine.common.result_schema: the versioned result file the Blender extension reads."""
import errno
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from engine.common import result_schema as rs
from engine.common import rotations

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _random_rotmats(rng, shape, dtype):
    aa = rng.normal(size=shape + (3,)) * 0.8
    return rotations.axis_angle_to_rotmat(aa).astype(dtype)


def make_track(rng, frames, dtype=np.float32, interpolated=None):
    frames = np.asarray(frames, dtype=np.int64)
    T = len(frames)
    extra = dict(
        boxes=rng.uniform(50, 500, size=(T, 3)).astype(dtype),
        cam_crop=rng.normal(size=(T, 3)).astype(dtype),
        keypoints2d=rng.uniform(0, 640, size=(T, 49, 2)).astype(dtype),
        joints3d=rng.normal(size=(T, 49, 3)).astype(dtype),
    )
    return rs.TrackResult.from_rotmats(
        frames=frames,
        transl=(rng.normal(size=(T, 3)) + [0, 0, 5]).astype(dtype),
        global_orient_rotmat=_random_rotmats(rng, (T,), dtype),
        body_pose_rotmat=_random_rotmats(rng, (T, 23), dtype),
        betas=rng.normal(size=(T, 10)).astype(dtype),
        confidence=rng.uniform(0.5, 1, size=T).astype(dtype),
        interpolated=interpolated, **extra)


def make_result(n_frames=40, partial=False, frames_done=None, seed=0):
    rng = np.random.default_rng(seed)
    frames_done = n_frames if frames_done is None else frames_done
    gaps = np.array([0, 1, 2, 5, 6, 7, 8, 20, 21, 30])  # gaps: 3-4, 9-19, 22-29
    gaps = gaps[gaps < frames_done]
    tracks = {
        "0": make_track(rng, np.arange(min(frames_done, n_frames))),
        "7": make_track(rng, gaps, dtype=np.float64,
                        interpolated=np.isin(gaps, [1, 6, 7])),
    }
    meta = rs.make_meta(
        video={"path": "/videos/clip ü.mp4", "width": 1280, "height": 720, "fps": 30.0,
               "frame_count": n_frames},
        camera={"focal_px": 1466.0, "principal_point": [640.0, 360.0]},
        partial=partial, frames_done=frames_done,
        provenance={"checkpoint_sha256": "ab" * 32, "body_model_sha256": "cd" * 32,
                    "body_model_source": "SMPL 1.1.0 neutral"},
        smoothing={"preset": "default", "min_cutoff": 1.0, "beta": 0.5},
        track_ids=sorted(tracks),
    )
    ts = np.arange(n_frames) / 30.0 + 0.0333 * (np.arange(n_frames) > 10)  # variable frame rate
    return rs.MotionResult(meta=meta, tracks=tracks, timestamps=ts)


def assert_results_equal(a, b):
    assert a.meta == b.meta
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert a.timestamps.dtype == b.timestamps.dtype
    assert sorted(a.tracks) == sorted(b.tracks)
    for tid in a.tracks:
        fa, fb = a.tracks[tid].arrays(), b.tracks[tid].arrays()
        assert sorted(fa) == sorted(fb)
        for name in fa:
            assert fa[name].dtype == fb[name].dtype, (tid, name)
            np.testing.assert_array_equal(fa[name], fb[name], err_msg=f"{tid}/{name}")


# --- round trip -----------------------------------------------------------------------------

def test_round_trip_with_gaps(tmp_path):
    res = make_result()
    assert np.any(np.diff(res.tracks["7"].frames) > 1)  # the track really has gaps
    path = tmp_path / "motion.npz"
    rs.write_result(res, path)
    back = rs.read_result(path)
    assert_results_equal(res, back)
    assert back.meta["video"]["path"] == "/videos/clip ü.mp4"
    assert back.tracks["7"].interpolated.dtype == np.bool_
    assert back.tracks["7"].interpolated.sum() == 3


def test_partial_round_trip(tmp_path):
    res = make_result(n_frames=40, partial=True, frames_done=12)
    res.validate()
    path = tmp_path / "partial.npz"
    rs.write_result(res, path)
    back = rs.read_result(path)
    assert back.partial and back.meta["frames_done"] == 12
    assert_results_equal(res, back)


def test_overwrite_replaces_old_file(tmp_path):
    path = tmp_path / "motion.npz"
    rs.write_result(make_result(partial=True, frames_done=5), path)
    rs.write_result(make_result(), path)
    assert not rs.read_result(path).partial
    assert os.listdir(tmp_path) == ["motion.npz"]


# --- plain arrays only (numpy 1.x compatibility) ------------------------------------------------

def test_no_object_arrays_and_allowed_dtypes_only(tmp_path):
    # Compatibility guarantee: only bool/int/uint8/float/'U' arrays, no pickles, and npy
    # format 1.0 headers, all of which numpy 1.x (Blender 4.5/5.0 ship 1.26) reads with
    # np.load(allow_pickle=False) exactly as numpy 2.x does.
    path = tmp_path / "motion.npz"
    rs.write_result(make_result(), path)
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        for k in keys:
            a = z[k]  # would raise ValueError if any member needed a pickle
            assert a.dtype.kind != "O", k
            assert a.dtype.kind in "biuf" or a.dtype.kind == "U", (k, a.dtype)
            assert a.dtype.fields is None, k  # no structured dtypes
            assert a.dtype.byteorder in "=<|", k
    assert "schema_version" in keys and "meta/json" in keys and "video/timestamps" in keys
    assert "tracks/7/pose_quat" in keys and "tracks/0/betas_robust" in keys
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            with zf.open(name) as f:
                assert np.lib.format.read_magic(f) == (1, 0), name
    # the metadata is plain UTF-8 JSON a human (or any language) can read
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta/json"]).decode("utf-8"))
    assert meta["schema_version"] == rs.SCHEMA_VERSION


def test_object_array_refused_before_writing(tmp_path):
    res = make_result()
    res.tracks["0"].confidence = np.array([object()] * res.tracks["0"].num_frames)
    with pytest.raises(rs.ResultError, match="confidence.*object"):
        rs.write_result(res, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


# --- validation -----------------------------------------------------------------------------

def test_valid_result_validates():
    assert make_result().validate() is not None


@pytest.mark.parametrize("mutate, match", [
    (lambda r: setattr(r.tracks["0"], "betas", r.tracks["0"].betas[:-1]),
     r"tracks/0/betas: expected shape \(T, 10\) with T = 40"),
    (lambda r: setattr(r.tracks["0"], "body_pose_rotmat", r.tracks["0"].body_pose_rotmat[:, :22]),
     r"tracks/0/body_pose_rotmat: expected shape"),
    (lambda r: r.tracks["0"].global_orient_rotmat.__setitem__((3, 0, 0), np.nan),
     r"tracks/0/global_orient_rotmat: contains NaN"),
    (lambda r: r.tracks["0"].body_pose_rotmat.__setitem__((2, 4), 2 * np.eye(3)),
     r"tracks/0/body_pose_rotmat: not orthonormal"),
    (lambda r: r.tracks["0"].pose_quat.__setitem__((5, 3), r.tracks["0"].pose_quat[5, 3] * 1.5),
     r"tracks/0/pose_quat: quaternions are not unit norm"),
    (lambda r: setattr(r.tracks["0"], "pose_quat", r.tracks["0"].pose_quat[..., [1, 2, 3, 0]]),
     r"tracks/0/pose_quat: disagrees"),
    (lambda r: r.tracks["0"].pose_axis_angle.__setitem__((0, 5), 1.0),
     r"tracks/0/pose_axis_angle: disagrees"),
    (lambda r: r.tracks["7"].frames.__setitem__(2, 1),
     r"tracks/7/frames: duplicate frame indices"),
    (lambda r: r.tracks["7"].frames.__setitem__(2, 0),
     r"tracks/7/frames: unsorted frame indices"),
    (lambda r: r.tracks["0"].frames.__setitem__(-1, 99),
     r"tracks/0/frames: frame index 99 >= frames_done = 40"),
    (lambda r: r.tracks.pop("7"), r"track_ids"),
    (lambda r: r.meta["camera"].__setitem__("convention", "opengl"), r"camera.convention"),
    (lambda r: r.meta.pop("video"), r"missing required key 'video'"),
    (lambda r: r.meta.__setitem__("frames_done", 39), r"frames_done == N = 40"),
    (lambda r: setattr(r, "timestamps", r.timestamps[::-1].copy()), r"video/timestamps"),
    (lambda r: setattr(r.tracks["0"], "interpolated", None), r"tracks/0/interpolated: required"),
])
def test_validation_names_the_problem(mutate, match):
    res = make_result()
    mutate(res)
    with pytest.raises(rs.ResultError, match=match):
        res.validate()


def test_result_error_is_value_error():
    assert issubclass(rs.ResultError, ValueError)


def _write_raw(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_unknown_newer_version_refused(tmp_path):
    arrays = make_result().to_arrays()
    meta = json.loads(bytes(arrays["meta/json"]).decode())
    meta["schema_version"], meta["engine_version"] = 2, "0.9.0"
    arrays["meta/json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    arrays["schema_version"] = np.array(2, np.int64)
    arrays.pop("tracks/0/pose_quat")  # a future layout may differ: the version check comes first
    path = tmp_path / "future.npz"
    _write_raw(path, arrays)
    with pytest.raises(rs.ResultError, match=r"schema version 2 .*engine 0\.9\.0.*newer.*engine >= 0\.9\.0"):
        rs.read_result(path)


def test_older_version_refused(tmp_path):
    arrays = make_result().to_arrays()
    arrays["schema_version"] = np.array(0, np.int64)
    path = tmp_path / "old.npz"
    _write_raw(path, arrays)
    with pytest.raises(rs.ResultError, match=r"schema version 0.*no longer supported"):
        rs.read_result(path)


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(rs.ResultError, match="no result file"):
        rs.read_result(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(rs.ResultError, match="not a PyMAF result file"):
        rs.read_result(tmp_path / "text.npz")
    good = tmp_path / "good.npz"
    rs.write_result(make_result(), good)
    data = good.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(rs.ResultError, match="corrupt"):
        rs.read_result(tmp_path / "trunc.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(rs.ResultError, match="single .npy"):
        rs.read_result(tmp_path / "single.npy")
    _write_raw(tmp_path / "other.npz", {"a": np.zeros(3)})
    with pytest.raises(rs.ResultError, match="not a PyMAF result"):
        rs.read_result(tmp_path / "other.npz")
    pickled = tmp_path / "pickled.npz"
    _write_raw(pickled, {**make_result().to_arrays(), "junk": np.array([{}], dtype=object)})
    with pytest.raises(rs.ResultError, match="corrupt|pickle"):
        rs.read_result(pickled)
    with pytest.raises(rs.ResultError, match="directory"):
        rs.read_result(tmp_path)


# --- atomic write ---------------------------------------------------------------------------

@pytest.mark.parametrize("fail_in", ["savez", "fsync"])
def test_disk_full_leaves_old_file_and_no_temp(tmp_path, monkeypatch, fail_in):
    path = tmp_path / "motion.npz"
    old = make_result(partial=True, frames_done=5)
    rs.write_result(old, path)
    old_bytes = path.read_bytes()

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail_in == "savez":

        def half_then_boom(f, **arrays):  # write some bytes first, like a real full disk
            f.write(b"PK\x03\x04partial")
            boom()
        monkeypatch.setattr(rs.np, "savez", half_then_boom)
    else:
        monkeypatch.setattr(rs.os, "fsync", boom)
    with pytest.raises(rs.ResultError, match="disk space") as ei:
        rs.write_result(make_result(), path)
    assert isinstance(ei.value.__cause__, OSError) and ei.value.__cause__.errno == errno.ENOSPC
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["motion.npz"]  # no temp file left behind
    monkeypatch.undo()
    assert_results_equal(rs.read_result(path), old)


def test_failure_without_previous_file_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(rs.os, "replace", boom)
    with pytest.raises(rs.ResultError, match="disk space"):
        rs.write_result(make_result(), tmp_path / "motion.npz")
    assert os.listdir(tmp_path) == []


def test_refuses_to_overwrite_directory(tmp_path):
    d = tmp_path / "motion.npz"
    d.mkdir()
    (d / "keep").write_text("x")
    with pytest.raises(rs.ResultError, match="directory"):
        rs.write_result(make_result(), d)
    assert (d / "keep").read_text() == "x"


def test_invalid_result_not_written(tmp_path):
    res = make_result()
    res.tracks["0"].pose_quat[0, 0] *= 2
    with pytest.raises(rs.ResultError, match="pose_quat"):
        rs.write_result(res, tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# --- Blender-safety -------------------------------------------------------------------------

def _torch_in_sys_modules(code):
    script = code + "\nimport sys\nprint('TORCH' if 'torch' in sys.modules else 'CLEAN')\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_module_imports_no_torch():
    assert _torch_in_sys_modules("import engine.common.result_schema") == "CLEAN"


def test_torch_probe_is_not_vacuous():
    pytest.importorskip("torch")
    assert _torch_in_sys_modules("import engine.common.result_schema, torch") == "TORCH"


def with_rig(res, seed=1, V=30):
    """Add the optional rig data (body section + rest mesh/joints per track)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(size=(V, 24))
    parents = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
    res.body = rs.BodyRig(faces=rng.integers(0, V, size=(20, 3)), weights=(w / w.sum(1, keepdims=True)).astype(np.float32),
                          parents=parents)
    for tr in res.tracks.values():
        tr.rest_vertices = rng.normal(size=(V, 3)).astype(np.float32)
        tr.rest_joints = rng.normal(size=(24, 3))
    return res


def test_rig_data_round_trip(tmp_path):
    res = with_rig(make_result())
    assert res.has_rig and not make_result().has_rig
    rs.write_result(res, tmp_path / "r.npz")
    back = rs.read_result(tmp_path / "r.npz")
    assert back.has_rig
    for name in rs.BODY_FIELDS:
        np.testing.assert_array_equal(getattr(back.body, name), getattr(res.body, name))
    for tid, tr in res.tracks.items():
        np.testing.assert_array_equal(back.tracks[tid].rest_vertices, tr.rest_vertices)
        np.testing.assert_array_equal(back.tracks[tid].rest_joints, tr.rest_joints)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: setattr(r.tracks["0"], "rest_vertices", np.zeros((29, 3))), "rest_vertices: 29 vertices"),
    (lambda r: setattr(r.tracks["0"], "rest_joints", np.zeros((23, 3))), r"rest_joints: expected shape \(24, 3\)"),
    (lambda r: setattr(r.body, "faces", np.full((2, 3), 30)), "faces: vertex index outside"),
    (lambda r: setattr(r.body, "parents", np.arange(24) - 1 + 2 * (np.arange(24) == 5)), "parents: not a kinematic tree"),
])
def test_rig_data_validation(mutate, match):
    res = with_rig(make_result())
    mutate(res)
    with pytest.raises(rs.ResultError, match=match):
        res.validate()


def test_body_section_is_all_or_nothing(tmp_path):
    arrays = with_rig(make_result()).to_arrays()
    del arrays["body/parents"]
    _write_raw(tmp_path / "r.npz", arrays)
    with pytest.raises(rs.ResultError, match="body/parents: required array is missing"):
        rs.read_result(tmp_path / "r.npz")
