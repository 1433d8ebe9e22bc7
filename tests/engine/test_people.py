"""engine.people: detectors' file input, the tracker layer, and HOG on real footage."""
import json
from pathlib import Path

import numpy as np
import pytest

from engine.people import tracking as tk
from engine.people.detect import BoxesFromFile, HOGDetector

DANCER = Path(__file__).resolve().parents[3] / "shared" / "footage" / "dancer.mp4"


@pytest.fixture(scope="module")
def clip():
    pytest.importorskip("moderngl")
    try:
        return tk.render_crossing_clip(60, 640, 360, seed=0)
    except Exception as e:  # no EGL on this machine
        pytest.skip(f"cannot render: {e}")


def test_rendered_clip_people_cross(clip):
    frames, gt, visible = clip
    assert frames.shape == (60, 360, 640, 3) and gt.shape == (60, 2, 4)
    cx = (gt[..., 0] + gt[..., 2]) / 2
    assert cx[0, 0] < cx[0, 1] and cx[-1, 0] > cx[-1, 1]        # paths cross
    assert visible.min() < 0.6                                    # someone is occluded


def test_tracks_recover_boxes_from_file(clip, tmp_path):
    _, gt, _ = clip
    dets = tk.gt_detections(gt, np.random.default_rng(3), jitter=0.03, miss=0.1)
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({str(i): d.tolist() for i, d in enumerate(dets)}))
    src = BoxesFromFile(path)
    tracks = tk.track([src.detect(None, i) for i in range(len(gt))])
    ev = tk.evaluate(tracks, gt)
    assert len(tracks) == 2
    assert (ev["ious"] > 0.7).mean() >= 0.95, ev["ious"].min()
    for tr in tracks.values():                                   # square (cx, cy, side)
        w, h = tr.xyxy[:, 2] - tr.xyxy[:, 0], tr.xyxy[:, 3] - tr.xyxy[:, 1]
        np.testing.assert_allclose(tr.boxes[:, 2], np.maximum(w, h))


def test_crossing_keeps_ids(clip):
    _, gt, _ = clip
    for seed in range(3):
        rng = np.random.default_rng(seed)
        dets = tk.gt_detections(gt, rng, jitter=0.04, miss=0.1)
        for f in (28, 29, 30, 31):                               # both missed at the crossing
            dets[f] = dets[f][:0]
        tracks = tk.track(dets)
        ev = tk.evaluate(tracks, gt)
        assert len(tracks) == 2 and ev["id_switches"] == 0, (seed, ev["ids"].T)
        starts = {tid: tr.frames[[0, -1]].tolist() for tid, tr in tracks.items()}
        assert all(s[0] <= 2 and s[1] >= 57 for s in starts.values()), starts   # misses at the ends
        # the id that starts on the left person ends on it
        assert all(len(set(ev["ids"][:, p][ev["ids"][:, p] >= 0])) == 1 for p in (0, 1))


def _moving(T, x0=100.0, v=5.0):
    return np.array([[x0 + v * t, 50.0, x0 + v * t + 40, 150.0] for t in range(T)])


def test_gap_interpolation_and_short_tracks():
    T = 40
    a = _moving(T)
    dets = [np.array([[*a[t], 0.9]]) for t in range(T)]
    for t in range(10, 15):                                      # 5-frame gap
        dets[t] = np.zeros((0, 5))
    for t in range(20, 24):                                      # a 4-frame flash elsewhere
        dets[t] = np.vstack([dets[t], [500, 300, 540, 400, 0.9]])
    tracks = tk.track(dets, max_gap=8, min_track_frames=10)
    assert len(tracks) == 1
    tr = next(iter(tracks.values()))
    assert tr.frames.tolist() == list(range(T))
    assert tr.interpolated.tolist() == [10 <= t < 15 for t in range(T)]
    np.testing.assert_allclose(tr.xyxy, a, atol=1e-9)           # linear motion: exact
    assert (tr.scores[tr.interpolated] == 0).all()
    # the flash survives with a lower threshold
    assert len(tk.track(dets, max_gap=8, min_track_frames=4)) == 2
    # a gap longer than max_gap is not filled
    tr2 = next(iter(tk.track(dets, max_gap=3, max_lost=20, min_track_frames=10).values()))
    assert not tr2.interpolated.any()


def test_boxes_from_csv(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text("frame,x1,y1,x2,y2,score\n0,1,2,3,4,0.5\n0,5,6,7,8,\n2,1,1,2,2,1\n")
    src = BoxesFromFile(p)
    assert src.detect(None, 0).tolist() == [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 1.0]]
    assert src.detect(None, 1).shape == (0, 5)
    with pytest.raises(ValueError):
        src.detect(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.skipif(not DANCER.exists(), reason="dancer.mp4 absent")
def test_hog_tracks_the_dancer():
    from engine.video.decode import iter_frames

    frames = [f.image for f in iter_frames(DANCER, step=3)]     # 30 of 89 frames, to keep this quick
    det = HOGDetector()
    tracks = tk.track([det.detect(f) for f in frames], min_track_frames=5, max_lost=5, max_gap=5)
    best = max(tracks.values(), key=lambda t: len(t.frames))
    assert len(best.frames) >= 0.9 * len(frames), {k: t.frames[[0, -1]] for k, t in tracks.items()}
