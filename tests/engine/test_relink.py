"""A person the detector misses for up to a second keeps their id, at any frame rate."""
from __future__ import annotations

import numpy as np

from engine.people.tracking import OnlineTracker, relink_frames, track


def _walker(frames: int, missed: range, fps: float) -> list:
    """One person walking right at 1 m/s-ish (60 px/s), missed on ``missed`` frames."""
    out = []
    for f in range(frames):
        x = 100 + 60.0 * f / fps
        out.append(np.zeros((0, 5)) if f in missed else np.array([[x, 100, x + 50, 250, 0.9]]))
    return out


def test_relink_window_is_a_second_of_video():
    assert relink_frames(30.0) == 30 and relink_frames(60.0) == 60
    assert relink_frames(10.0) == 15 and relink_frames(0.0) == 15   # never below the frame default


def test_missed_for_most_of_a_second_keeps_the_id():
    fps = 30.0
    dets = _walker(120, range(40, 67), fps)                       # 27 frames = 0.9 s without a detection
    lost = relink_frames(fps)
    tracks = track(dets, max_lost=lost, max_gap=lost)
    assert list(tracks) == [1]
    tr = tracks[1]
    np.testing.assert_array_equal(tr.frames, np.arange(120))      # the gap is filled
    assert tr.interpolated[40:67].all() and not tr.interpolated[:40].any()
    np.testing.assert_allclose(tr.xyxy[53, 0], 100 + 60.0 * 53 / fps, atol=1.0)
    # the frame-count default alone (15 frames = 0.5 s at 30 fps) splits the person in two
    assert len(track(dets)) == 2
    # the online tracker agrees, frame by frame
    online = OnlineTracker(max_lost=lost, max_gap=lost)
    finals = [f for d in dets for f in online.update(d)] + online.close()
    assert {b.id for f in finals for b in f.boxes} == {1}


def test_longer_than_a_second_is_a_new_track():
    fps = 30.0
    lost = relink_frames(fps)
    tracks = track(_walker(150, range(40, 80), fps), max_lost=lost, max_gap=lost)   # 40 frames = 1.33 s
    assert len(tracks) == 2
