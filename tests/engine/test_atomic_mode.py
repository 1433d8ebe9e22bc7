"""Files written through atomic_file (results, tracks files, ...) get the mode a plain open()
would give them: 0666 & ~umask, not tempfile.mkstemp's 0600."""
from __future__ import annotations

import os
import stat

import pytest

from engine.common.atomic import atomic_file


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_file_honours_the_umask(tmp_path, umask, mask, want):
    umask(mask)
    with atomic_file(tmp_path / "a.bin") as f:
        f.write(b"x")
    with open(tmp_path / "plain.bin", "wb") as f:    # what a plain open() gives
        f.write(b"x")
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "plain.bin") == want
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and len(os.listdir(tmp_path)) == 2  # no temp left


@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o077, 0o600)])
def test_result_and_tracks_files_honour_the_umask(tmp_path, umask, mask, want):
    from engine.common import result_schema as rs
    from engine.people.tracks_file import read_tracks, tracks_document, write_tracks
    from engine.people.tracking import Track
    import numpy as np

    umask(mask)
    doc = tracks_document({1: Track(np.arange(3), np.tile([1.0, 2.0, 30.0, 60.0], (3, 1)), np.ones(3), np.zeros(3, bool))},
                          video={"path": "/v.mp4", "width": 64, "height": 48, "fps": 10.0, "frame_count": 3},
                          frame_start=0, timestamps=np.arange(3) / 10, detector="test", tracker={}, partial=False)
    write_tracks(tmp_path / "t.json", doc)
    assert _mode(tmp_path / "t.json") == want
    assert 1 in read_tracks(tmp_path / "t.json")[1]

    res = _tiny_result(rs)
    rs.write_result(res, tmp_path / "r.npz")
    assert _mode(tmp_path / "r.npz") == want
    assert rs.read_result(tmp_path / "r.npz").tracks.keys() == res.tracks.keys()


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "a.bin") as f:
            f.write(b"x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def _tiny_result(rs):
    import numpy as np

    T = 3
    eye = np.broadcast_to(np.eye(3), (T, 23, 3, 3)).copy()
    tr = rs.TrackResult.from_rotmats(frames=np.arange(T), transl=np.zeros((T, 3)),
                                     global_orient_rotmat=np.broadcast_to(np.eye(3), (T, 3, 3)).copy(),
                                     body_pose_rotmat=eye, betas=np.zeros((T, 10)), confidence=np.ones(T))
    meta = rs.make_meta(video={"path": "/v.mp4", "width": 64, "height": 48, "fps": 10.0, "frame_count": T},
                        camera={"focal_px": 60.0, "principal_point": [32.0, 24.0]}, track_ids=["1"],
                        frames_done=T)
    return rs.MotionResult(meta=meta, tracks={"1": tr}, timestamps=np.arange(T) / 10.0)
