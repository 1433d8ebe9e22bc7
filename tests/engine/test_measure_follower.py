"""engine.measure.follower: the counts of landmark crops on another person.

A scripted follower (the measurement's input, not the thing measured) puts track 1's
landmarks on track 2's box on one frame of a real 3-frame video file; the replay must count
exactly that frame, and the report must say so."""
import cv2
import numpy as np

from engine.landmarks.landmarker import Observation
from engine.measure import follower as mf
from engine.people.tracking import Track

BOX = {1: np.array([10.0, 10.0, 40.0, 90.0]), 2: np.array([60.0, 10.0, 90.0, 90.0])}


def _landmarks_filling(box) -> np.ndarray:
    """(33, 2) points spanning the box's middle 80 %."""
    x0, y0, x1, y1 = box
    t = np.linspace(0.1, 0.9, 33)
    return np.stack([x0 + t * (x1 - x0), y0 + t[::-1] * (y1 - y0)], 1)


class ScriptedFollower:
    def __init__(self, wrong_frame: int):
        self.wrong_frame, self.calls = wrong_frame, 0

    def step(self, image, boxes):
        frame, self.calls = self.calls, self.calls + 1
        out = {}
        for tid, _ in boxes:
            on = 2 if (tid == 1 and frame == self.wrong_frame) else tid
            out[tid] = Observation(image=_landmarks_filling(BOX[on]), depth=np.zeros(33), visibility=np.ones(33),
                                   world=np.zeros((33, 3)), presence=0.9, roi=np.zeros(4))
        return out


def _video(path, frames=3):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (100, 100))
    for _ in range(frames):
        w.write(np.full((100, 100, 3), 90, np.uint8))
    w.release()
    return path


def test_replay_counts_the_frame_on_the_other_person(tmp_path):
    video = _video(tmp_path / "clip.avi")
    tracks = {tid: Track(frames=np.arange(3), xyxy=np.tile(b, (3, 1)), scores=np.ones(3),
                         interpolated=np.zeros(3, bool)) for tid, b in BOX.items()}
    by_frame = mf.boxes_by_frame(tracks)
    assert sorted(by_frame) == [0, 1, 2] and [t for t, _ in by_frame[1]] == [1, 2]
    got = mf.replay(video, by_frame, ScriptedFollower(wrong_frame=1))
    assert (got["boxes"], got["seen"], got["on_other"]) == (6, 6, 1)
    assert np.sum(got["own_iou"] < 0.1) == 1 and np.sum(got["own_iou"] > 0.5) == 5
    text = mf.report({"scripted": got}, video, "python -m engine.measure.follower")
    assert "| scripted | 6 | 6 | 1 |" in text
    clean = mf.replay(video, by_frame, ScriptedFollower(wrong_frame=-1))
    assert clean["on_other"] == 0
