"""engine.measure.people: the tracker replayed on recorded detections gives exactly the tracks
of the live run (detector + tracker on a real video file), and the changed settings are the
ones applied."""
import cv2
import numpy as np
import pytest

from engine.measure import people as mp
from engine.people.tracking import APPEARANCE_BINS

FRAMES, MISSED = 24, range(8, 11)      # person 1 is missed on frames 8-10


def _people(index: int) -> np.ndarray:
    """Two people walking towards each other on a 160 x 120 frame: (2, 5) boxes and scores."""
    return np.array([[20 + 3 * index, 30, 44 + 3 * index, 100, 0.9],
                     [130 - 2 * index, 25, 152 - 2 * index, 100, 0.8]], np.float64)


def _boxes(index: int) -> np.ndarray:
    """What the scripted detector finds: person 1 not on the MISSED frames."""
    return _people(index)[1:] if index in MISSED else _people(index)


class ScriptedDetector:
    name = "scripted"

    def detect(self, image, index=None):
        return _boxes(index)

    def detect_batch(self, images, indices=None):
        return [self.detect(im, i) for im, i in zip(images, indices)]


def _video(path):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(FRAMES):
        frame = np.full((120, 160, 3), 60, np.uint8)
        for (x1, y1, x2, y2, _), colour in zip(_people(i).astype(int), ((40, 40, 220), (220, 120, 40))):
            frame[y1:y2, x1:x2] = colour
        w.write(frame)
    w.release()
    return path


def _same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(
        np.array_equal(a[t][0], b[t][0]) and np.allclose(a[t][1], b[t][1], atol=0) for t in a)


def test_replay_gives_the_live_tracks_and_applies_changed_settings(tmp_path):
    video = _video(tmp_path / "walk.avi")
    given = []
    live, _, verdict = mp.run_tracker(video, ScriptedDetector(), FRAMES, verify=False, record=given)
    assert verdict is None and len(given) == FRAMES
    assert all(d.shape == (len(_boxes(i)), 5 + int(np.prod(APPEARANCE_BINS))) for i, d in enumerate(given))
    assert len(live) == 2 and {len(f) for f, _ in live.values()} == {FRAMES}   # the gap is bridged

    packed = mp.pack_detections(given)
    back = mp.unpack_detections(packed["rows"], packed["count"])
    assert all(np.array_equal(a, b) for a, b in zip(given, back))
    assert _same(mp.replay_tracks(back, 10.0), live)

    # a tracker that lets a person go after one missed frame splits person 1
    short = mp.replay_tracks(back, 10.0, max_lost=1, max_gap=1, min_track_frames=3)
    assert len(short) == 3 and not _same(short, live)


def test_skipped_frames_survive_packing():
    given = [np.ones((2, 7)), None, np.zeros((0, 7)), np.full((1, 7), 3.0)]
    packed = mp.pack_detections(given)
    assert packed["count"].tolist() == [2, -1, 0, 1] and packed["rows"].shape == (3, 7)
    back = mp.unpack_detections(packed["rows"], packed["count"])
    assert back[1] is None and back[2].shape == (0, 7) and np.array_equal(back[3], given[3])


def test_tracker_overrides_take_each_fields_type():
    got = mp.tracker_overrides("take_back=false, max_lost=3,reid_dist=0.4")
    assert got == {"take_back": False, "max_lost": 3, "reid_dist": 0.4}
    assert isinstance(got["max_lost"], int) and isinstance(got["reid_dist"], float)
    for bad in ("no_such=1", "reid_dist", "max_lost="):
        with pytest.raises(ValueError, match="FIELD=VALUE"):
            mp.tracker_overrides(bad)
