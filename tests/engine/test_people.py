"""engine.people: detectors' file input, the tracker layer, and HOG on real footage."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.measure import tracking as mt
from engine.people import tracking as tk
from engine.people.detect import BoxesFromFile, HOGDetector

DANCER = Path(__file__).resolve().parents[3] / "shared" / "footage" / "dancer.mp4"


@pytest.fixture(scope="module")
def clip(egl):
    return mt.render_crossing_clip(60, 640, 360, seed=0)


def test_rendered_clip_people_cross(clip):
    frames, gt, visible = clip
    assert frames.shape == (60, 360, 640, 3) and gt.shape == (60, 2, 4)
    cx = (gt[..., 0] + gt[..., 2]) / 2
    assert cx[0, 0] < cx[0, 1] and cx[-1, 0] > cx[-1, 1]        # paths cross
    assert visible.min() < 0.6                                    # someone is occluded


def test_tracks_recover_boxes_from_file(clip, tmp_path):
    _, gt, _ = clip
    dets = mt.gt_detections(gt, np.random.default_rng(3), jitter=0.03, miss=0.1)
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({str(i): d.tolist() for i, d in enumerate(dets)}))
    src = BoxesFromFile(path)
    tracks = tk.track([src.detect(None, i) for i in range(len(gt))])
    ev = mt.evaluate(tracks, gt)
    assert len(tracks) == 2
    assert (ev["ious"] > 0.7).mean() >= 0.95, ev["ious"].min()
    for tr in tracks.values():                                   # square (cx, cy, side)
        w, h = tr.xyxy[:, 2] - tr.xyxy[:, 0], tr.xyxy[:, 3] - tr.xyxy[:, 1]
        np.testing.assert_allclose(tr.boxes[:, 2], np.maximum(w, h))


def test_crossing_keeps_ids(clip):
    _, gt, _ = clip
    for seed in range(3):
        rng = np.random.default_rng(seed)
        dets = mt.gt_detections(gt, rng, jitter=0.04, miss=0.1)
        for f in (28, 29, 30, 31):                               # both missed at the crossing
            dets[f] = dets[f][:0]
        tracks = tk.track(dets)
        ev = mt.evaluate(tracks, gt)
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


# ----------------------------------------------------------------------------- online tracker
def _random_detections(rng, T=120, P=4):
    """People on straight lines (paths cross), with random misses and gaps of 1-24 frames,
    low-score detections, jitter and short-lived false positives, in random order."""
    start, vel = rng.uniform(0, 400, (P, 2)), rng.uniform(-6, 6, (P, 2))
    half = rng.uniform(40, 120, (P, 1)) * np.array([[0.5, 1.0]])
    alive = [(rng.integers(0, T // 2), rng.integers(T // 2, T + 1)) for _ in range(P)]
    gaps = [set() for _ in range(P)]
    for p in range(P):
        for _ in range(rng.integers(0, 4)):
            g0 = rng.integers(0, T)
            gaps[p].update(range(g0, g0 + rng.integers(1, 25)))
    dets = []
    for t in range(T):
        rows = []
        for p in range(P):
            if alive[p][0] <= t < alive[p][1] and t not in gaps[p] and rng.random() >= 0.1:
                c = start[p] + vel[p] * t + rng.normal(0, 2, 2)
                score = rng.uniform(0.05, 1.0) if rng.random() < 0.3 else rng.uniform(0.5, 1.0)
                rows.append([*(c - half[p]), *(c + half[p]), score])
        for _ in range(rng.poisson(0.3)):
            c = rng.uniform(0, 500, 2)
            rows.append([*(c - 20), *(c + 30), rng.uniform(0.3, 1.0)])
        d = np.array(rows).reshape(-1, 5)
        dets.append(d[rng.permutation(len(d))])
    return dets


@pytest.mark.parametrize("params", [
    {},                                                            # the defaults (what engine run uses)
    dict(min_track_frames=3),
    dict(max_lost=5, max_gap=10, min_track_frames=20),
    dict(max_lost=20, max_gap=4, min_track_frames=6),              # gaps > max_gap: runs split, the longest kept
    dict(max_lost=0, max_gap=0, min_track_frames=1),
])
def test_online_tracker_equals_offline(params):
    seen = dict(tracks=0, interpolated=0, dropped=0)
    for seed in range(25):
        dets = _random_detections(np.random.default_rng(seed))
        ref = tk.track(dets, **params)
        online = tk.OnlineTracker(**params)
        out = []
        for d in dets:
            out += online.update(d)
            if online.max_lag is not None:
                assert online.lag <= online.max_lag
        out += online.close()
        assert [f.frame for f in out] == list(range(len(dets)))          # every frame once, in order
        got = tk.tracks_from_frames(out)
        assert list(got) == list(ref), seed                               # the same ids
        for tid, a in ref.items():
            b = got[tid]
            for k in ("frames", "xyxy", "scores", "interpolated"):
                np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"seed {seed} id {tid} {k}")
                assert getattr(a, k).dtype == getattr(b, k).dtype
        seen["tracks"] += len(ref)
        seen["interpolated"] += sum(t.interpolated.any() for t in ref.values())
        seen["dropped"] += max(ref, default=0) - len(ref)                 # ids started but too short
    tp = tk.TrackerParams(**params)                                       # the cases were exercised:
    assert seen["tracks"] >= 50 and (seen["interpolated"] >= 5 or tp.max_gap == 0), seen
    assert seen["dropped"] >= 5 or tp.min_track_frames == 1, seen
    assert (tk.OnlineTracker(**params).max_lag is None) == (params.get("max_lost", 15) > params.get("max_gap", 15))


def test_online_tracker_releases_frames_as_soon_as_final():
    # one person seen on frames 0-29, then gone: with min_track_frames=10 nothing is final
    # before frame 9 confirms the track; frames after its last sighting wait max_lost frames
    online = tk.OnlineTracker(min_track_frames=10, max_lost=5, max_gap=5)
    released = []
    for f in range(40):
        d = np.array([[10.0 + f, 10, 50 + f, 110, 0.9]]) if f < 30 else np.zeros((0, 5))
        released.append([ff.frame for ff in online.update(d)])
    assert released[:9] == [[]] * 9 and released[9] == list(range(10))
    assert all(r == [f] for f, r in enumerate(released[10:30], 10))
    assert released[30:35] == [[]] * 5 and released[35] == list(range(30, 36))   # the track ended
    assert released[36:] == [[36], [37], [38], [39]] and online.close() == []


# ----------------------------------------------------------------------------- appearance
def test_box_appearance_tells_clothes_apart():
    img = np.zeros((200, 300, 3), np.uint8)
    img[:, :100] = (200, 30, 30)                       # red
    img[:, 100:200] = (30, 30, 200)                    # blue
    img[:, 200:] = (215, 35, 30)                       # another red
    boxes = np.array([[0, 0, 100, 200], [100, 0, 200, 200], [200, 0, 300, 200], [5, 5, 5, 9]])
    a = tk.box_appearance(img, boxes)
    assert a.shape == (4, np.prod(tk.APPEARANCE_BINS)) and np.allclose(a.sum(1), 1)
    d = tk.appearance_distance(a, a)
    assert np.allclose(np.diag(d), 0, atol=1e-6)
    assert d[0, 2] < 0.1 and d[0, 1] > 0.9            # same colour vs. another
    assert np.allclose(a[3], 1 / a.shape[1])           # empty region: flat histogram
    with_app = tk.with_appearance(img, np.column_stack([boxes, np.ones(4)]))
    assert with_app.shape == (4, 5 + a.shape[1]) and np.allclose(with_app[:, 5:], a)


def test_appearance_keeps_ids_through_a_merged_detection(clip):
    """At the crossing the detector gives ONE box for both people for 9 frames (as the learned
    detector does, docs/people.md): with appearance descriptors both people keep their ids
    (the merged box overlaps both, so it must not pull either descriptor)."""
    frames, gt, _ = clip
    T = len(gt)
    rng = np.random.default_rng(0)
    dets = mt.gt_detections(gt, rng, jitter=0.03, miss=0.0)
    cx = (gt[..., 0] + gt[..., 2]) / 2
    cross = int(np.argmin(np.abs(cx[:, 0] - cx[:, 1])))
    for f in range(cross - 4, cross + 5):                          # the union of both boxes
        union = [*gt[f, :, :2].min(0), *gt[f, :, 2:].max(0), 0.9]
        dets[f] = np.array([union])
    ev = mt.evaluate(tk.track([tk.with_appearance(im, x) for im, x in zip(frames, dets)]), gt)
    assert ev["id_switches"] == 0, ev["ids"].T
    assert all(len(set(ev["ids"][:, p][ev["ids"][:, p] >= 0])) == 1 for p in (0, 1)), ev["ids"].T


def _turn_back_clip():
    """Two clothed 'people' (coloured boxes) on grey; red walks right, is hidden for frames
    20-29, and comes back walking LEFT (constant-velocity prediction overlaps nothing there);
    blue stands still on the right. -> (frames, (T, 2, 4) boxes, detections (N, 5))."""
    T, H, W = 50, 240, 480
    frames, gt, dets = [], np.zeros((T, 2, 4)), []
    for t in range(T):
        img = np.full((H, W, 3), 128, np.uint8)
        x = 40 + 4 * t if t < 20 else 120 - 3 * (t - 30) if t >= 30 else np.nan
        gt[t, 0] = [x, 60, x + 40, 180]
        gt[t, 1] = [380, 50, 420, 175]
        rows = [[*gt[t, 1], 0.9]]
        cv2.rectangle(img, (380, 50), (420, 175), (40, 60, 200), -1)
        if not np.isnan(x):
            cv2.rectangle(img, (int(x), 60), (int(x) + 40, 180), (200, 40, 40), -1)
            rows.append([*gt[t, 0], 0.9])
        frames.append(img)
        dets.append(np.array(rows))
    return frames, gt, dets


def test_appearance_reidentifies_a_person_who_turns_back():
    frames, gt, dets = _turn_back_clip()
    seen = ~np.isnan(gt[:, 0, 0])
    gt = np.nan_to_num(gt, nan=-1000.0)
    plain = mt.evaluate(tk.track(dets), gt)
    with_app = mt.evaluate(tk.track([tk.with_appearance(f, d) for f, d in zip(frames, dets)]), gt)
    assert plain["id_switches"] == 1                           # IoU alone: a new id after the turn
    assert with_app["id_switches"] == 0                        # appearance: the same person again
    assert len(set(with_app["ids"][seen, 0].tolist())) == 1 and (with_app["ious"][seen, 0] > 0.9).all()


def test_a_box_around_two_people_starts_no_track(clip):
    """Where people cross, the detector may give each person's box plus one around both (seen
    with the learned detector). That third box must not become a person: with ``birth_iou``
    it starts no track; without it (1.01), it does."""
    frames, gt, _ = clip
    dets = mt.gt_detections(gt, np.random.default_rng(1), jitter=0.02, miss=0.0)
    cx = (gt[..., 0] + gt[..., 2]) / 2
    cross = int(np.argmin(np.abs(cx[:, 0] - cx[:, 1])))
    for f in range(cross - 12, cross + 12):
        union = [*gt[f, :, :2].min(0), *gt[f, :, 2:].max(0), 0.95]
        dets[f] = np.vstack([dets[f], union])
    d = [tk.with_appearance(im, x) for im, x in zip(frames, dets)]
    kept = tk.track(d)
    assert len(kept) == 2 and mt.evaluate(kept, gt)["id_switches"] == 0
    assert len(tk.track(d, birth_iou=1.01)) == 3


def test_frames_the_detector_skips_are_interpolated_and_keep_ids():
    """``detect_every``: a frame given as None (not looked at) is a gap like a missed
    detection: two people keep their ids, every frame gets a box, the skipped ones the linear
    path, flagged as interpolated; the low-score second stage still extends a track across one."""
    from engine.pipeline import detect_every

    T = 30
    a, b = _moving(T), _moving(T)[:, [0, 1, 2, 3]] + np.array([300, 20, 300, 20])
    dets = [np.array([[*a[t], 0.9], [*b[t], 0.3 if t == 12 else 0.9]]) if t % 2 == 0 else None for t in range(T)]
    dets[-1] = np.array([[*a[-1], 0.9], [*b[-1], 0.9]])          # the range's last frame is always looked at
    tracks = tk.track(dets, min_track_frames=10)
    assert len(tracks) == 2
    for tr, truth in zip(sorted(tracks.values(), key=lambda t: t.xyxy[0, 0]), (a, b)):
        assert tr.frames.tolist() == list(range(T))
        np.testing.assert_allclose(tr.xyxy, truth, atol=1e-9)
        assert tr.interpolated[1:-1:2].all() and not tr.interpolated[0:-1:2].any()
    online = tk.OnlineTracker(min_track_frames=10)
    finals = [ff for d in dets for ff in online.update(d)] + online.close()
    assert [ff.frame for ff in finals] == list(range(T)) and all(len(ff.boxes) == 2 for ff in finals)

    class Slow:
        detections_per_second = 15.0
    assert detect_every(29.97, Slow()) == 2 and detect_every(10.0, Slow()) == 1 and detect_every(60, Slow()) == 4
    assert detect_every(30.0, object()) == 1 and detect_every(0.0, Slow()) == 1


def test_the_nearer_person_keeps_the_box_where_two_cross():
    """One box where two people overlap (the detector sees the one in front, its box pulled
    half-way to the hidden one): it goes to the nearer person's track (lower box bottom), the
    hidden one coasts and is found again: each keeps one id. Without the rule
    (``occluder_margin=0``) the near person's track is lost and they come out under a new id."""
    T = 40
    near = np.array([[100 + 8 * t, 100, 160 + 8 * t, 300] for t in range(T)], float)   # walks right, in front
    far = np.array([[420 - 8 * t, 110, 470 - 8 * t, 270] for t in range(T)], float)    # walks left, behind
    dets = [np.array([[*(near[t] + 0.5 * (far[t] - near[t])), 0.9]])
            if tk.iou_matrix(near[t:t + 1], far[t:t + 1])[0, 0] > 0.1 else
            np.array([[*near[t], 0.9], [*far[t], 0.9]]) for t in range(T)]

    def who(tracks, frame, path):
        return {tid for tid, tr in tracks.items() if frame in tr.frames
                and abs(tr.xyxy[list(tr.frames).index(frame), 0] - path[frame, 0]) < 2}

    tracks = tk.track(dets, min_track_frames=5)
    assert len(tracks) == 2
    assert who(tracks, 0, near) == who(tracks, T - 1, near) and who(tracks, 0, far) == who(tracks, T - 1, far)
    off = tk.track(dets, min_track_frames=5, occluder_margin=0.0)
    assert who(off, 0, near) != who(off, T - 1, near)


RED, BLACK = np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.1, 0.1, 0.1, 0.7])   # appearance descriptors


def _with(rows, apps) -> np.ndarray:
    """Detections [x1, y1, x2, y2, score] with the given appearance descriptors -> (N, 5 + K)."""
    return np.array([[*r, *a] for r, a in zip(rows, apps)]).reshape(-1, 5 + len(RED))


def test_a_person_going_out_of_view_is_found_again():
    """A person walks behind a wall: the box's bottom rises by 20 px a frame for 3 frames (the
    legs hidden), then no box for 6 frames, then the whole person again where their walk leads.
    The lost track is predicted at its last size (moved by the centre's velocity), so it is
    re-identified: one id. Extrapolating each edge shrank the predicted box to nothing within
    those frames, and the person came back under a new id."""
    T, rows = 30, []
    for t in range(T):
        x = 100 + 6 * t
        bottom = 300 - (20 * (t - 9) if 10 <= t < 13 else 0)
        rows.append([] if 13 <= t < 19 else [[x, 100, x + 50, bottom, 0.9]])
    dets = [_with(r, [RED] * len(r)) for r in rows]
    tracks = tk.track(dets, min_track_frames=5)
    assert len(tracks) == 1 and list(tracks.values())[0].frames.tolist() == list(range(T))


def _woman_passes_man(her_after=RED) -> list:
    """A man (black) walks left and stops at x = 180 behind a woman (red) walking right, in
    front of him: for 11 frames one box around both, then both boxes again, hers with a low
    score for the first frames and the descriptor ``her_after``. -> detections per frame."""
    rows, apps, merged = [], [], None
    for t in range(40):
        xw, xm = 100 + 4 * t, max(260 - 4 * t, 180)
        if abs(xw - xm) < 30:                                       # one box around both
            merged = t
            rows.append([[min(xw, xm), 100, max(xw, xm) + 40, 240, 0.9]])
            apps.append([(RED + BLACK) / 2])
        else:
            low = merged is not None and t - merged <= 2
            rows.append([[xm, 100, xm + 40, 220, 0.9], [xw, 110, xw + 40, 240, 0.3 if low else 0.9]])
            apps.append([BLACK, RED if merged is None else her_after])
    return [_with(r, a) for r, a in zip(rows, apps)]


def _who(tracks, frame) -> dict:
    """{track id: 'man' / 'woman'} of the boxes at ``frame`` of ``_woman_passes_man``."""
    return {tid: "man" if abs(tr.xyxy[list(tr.frames).index(frame), 0] - max(260 - 4 * frame, 180)) < 1
            else "woman" for tid, tr in tracks.items() if frame in tr.frames}


def test_a_track_gives_back_a_box_it_took_over():
    """The woman keeps the shared box (the nearer person; his track coasts on left, past where
    he stopped); when they separate her track, overlapping his box most, takes it; by
    appearance it gives it back and takes hers, and his lost track re-identifies his box: each
    keeps one id. Without that (``take_back=False``) his track ends and she comes out under a
    new id."""
    dets = _woman_passes_man()
    tracks = tk.track(dets, min_track_frames=5)
    assert _who(tracks, 0) == _who(tracks, 39) and sorted(_who(tracks, 0).values()) == ["man", "woman"]
    off = tk.track(dets, min_track_frames=5, take_back=False)
    assert len(off) == 3 and _who(off, 0) != _who(off, 39)


def test_a_track_takes_back_its_person_who_looks_less_alike_after():
    """The same walk, but after the shared box the woman's descriptor differs from before (light
    from the side: on vtest.avi the holder's distance to its own person's box was 0.36-0.40
    after a shared box). Her track's descriptor has learned from the shared box too, so she is
    about as far from it as the man's box is; the lost man's track is close to his. The holder's
    looser gate (``take_back_dist``) still gives each their id back; with the re-identification
    gate (0.35) her track keeps his box (the hand-over, which would also give it back to him, off)."""
    dets = _woman_passes_man(her_after=np.array([0.2, 0.6, 0.1, 0.1]))
    tracks = tk.track(dets, min_track_frames=5)
    assert len(tracks) == 2 and _who(tracks, 0) == _who(tracks, 39)
    strict = tk.track(dets, min_track_frames=5, take_back_dist=0.35, hand_over_margin=0.0)
    assert _who(strict, 0) != _who(strict, 39)


def test_square_and_xyxy_boxes_convert_both_ways():
    sq = np.array([[100.0, 50.0, 40.0], [7.5, 9.0, 3.0]])
    np.testing.assert_array_equal(tk.square_to_xyxy(sq), [[80, 30, 120, 70], [6, 7.5, 9, 10.5]])
    np.testing.assert_array_equal(tk.xyxy_to_square(tk.square_to_xyxy(sq)), sq)
