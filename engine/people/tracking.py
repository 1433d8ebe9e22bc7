"""Multi-person tracking by detection (run time; its measurement is engine/measure/tracking.py).

``track(detections) -> {id: Track}``: ``detections`` is one (N, 5) ``[x1, y1, x2, y2,
score]`` array per frame. ``OnlineTracker`` is the same tracker frame by frame: ``update(dets)``
hands out each frame (``FinalFrame(frame, [TrackBox(id, xyxy, score, interpolated)])``) as
soon as no later frame can change it, with the same ids and boxes, so a video streams
through with a bounded look-ahead (``max_lag`` frames).

Association is ByteTrack-style: each live track predicts its
box (its last box moved by the centre's exponentially smoothed velocity), high-score
detections are matched first (Hungarian on 1 - IoU, plus an appearance distance when the
detections carry descriptors, ``with_appearance``), then low-score ones to the tracks still
unmatched; a track holding a box that looks less like it than a spare box beside it gives
it back (``_take_back``: where two people separated after overlapping); lost tracks are
re-identified by appearance; the remaining high-score detections start tracks
unless they overlap a live track (``birth_iou``); a track unmatched for more than
``max_lost`` frames ends. Gaps of at most ``max_gap`` frames inside a track are filled by
linear interpolation (``Track.interpolated``); tracks with fewer than
``min_track_frames`` frames (detected + interpolated) are dropped. ``Track.boxes`` are the
official PyMAF square boxes ``(cx, cy, side = max(w, h))``.

Why hand-written: supervision 0.31 no longer has ByteTrack (it moved to ``trackers``),
and both ``trackers`` 2.6.1 and ``supervision`` 0.26.1 require ``opencv-python`` 5.0,
which replaces cv2 and has no ``HOGDescriptor``; ``norfair`` 2.3.0 pulls numpy 1.26.
See docs/people.md.

The measurement (rendered test clips, CLEAR-MOT style evaluation, the candidates table:
``python -m engine.measure.tracking --measure [--out docs/people.md]``) lives in
engine/measure/tracking.py, so that nothing at run time imports the renderer or the
detector's training code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.preprocess import square_box


@dataclass
class Track:
    frames: np.ndarray        # (T,) int, consecutive frame indices
    xyxy: np.ndarray          # (T, 4) float64
    scores: np.ndarray        # (T,) detection score, 0 where interpolated
    interpolated: np.ndarray  # (T,) bool

    @property
    def boxes(self) -> np.ndarray:
        """(T, 3) square boxes (cx, cy, side), side = max(w, h)."""
        return xyxy_to_square(self.xyxy)


def square_to_xyxy(square) -> np.ndarray:
    """(..., 3) square boxes (cx, cy, side) -> (..., 4) boxes (x1, y1, x2, y2)."""
    s = np.asarray(square, np.float64)
    half = s[..., 2:3] / 2
    return np.concatenate([s[..., :2] - half, s[..., :2] + half], -1)


def xyxy_to_square(xyxy) -> np.ndarray:
    """(..., 4) boxes (x1, y1, x2, y2) -> (..., 3) official square boxes (cx, cy, side = max(w, h))."""
    b = np.asarray(xyxy, np.float64)
    return square_box(np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], -1))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of broadcastable (..., 4) boxes (x1, y1, x2, y2); 0 for empty unions."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter = np.prod(np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None), -1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), -1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) xyxy boxes -> (N, M) IoU."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return box_iou(a[:, None, :], b[None, :, :])


# ------------------------------------------------------------------------- appearance
APPEARANCE_BINS = (8, 4, 4)          # HSV histogram: hue, saturation, value


def box_appearance(image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 image, (N, 4) boxes -> (N, K) L1-normalised HSV histograms
    (K = 8 x 4 x 4) of each box's inner part (x 25-75 %, y 15-85 %: mostly clothes, little
    background), read at most 64 px tall. An empty region gives a flat histogram."""
    import cv2

    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    k = int(np.prod(APPEARANCE_BINS))
    out = np.full((len(boxes), k), 1.0 / k, np.float32)
    h, w = image.shape[:2]
    for n, (x1, y1, x2, y2) in enumerate(boxes):
        bw, bh = x2 - x1, y2 - y1
        xa, xb = int(np.clip(x1 + 0.25 * bw, 0, w)), int(np.clip(x1 + 0.75 * bw, 0, w))
        ya, yb = int(np.clip(y1 + 0.15 * bh, 0, h)), int(np.clip(y1 + 0.85 * bh, 0, h))
        if xb - xa < 2 or yb - ya < 2:
            continue
        roi = image[ya:yb, xa:xb]
        if roi.shape[0] > 64:
            roi = cv2.resize(roi, (max(2, round(roi.shape[1] * 64 / roi.shape[0])), 64),
                             interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(np.ascontiguousarray(roi), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, list(APPEARANCE_BINS), [0, 180, 0, 256, 0, 256]).ravel()
        out[n] = hist / max(hist.sum(), 1.0)
    return out


def with_appearance(image: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """(N, 5) detections of a frame -> (N, 5 + K): each with its ``box_appearance``."""
    d = np.asarray(dets, np.float64).reshape(-1, 5)
    return np.concatenate([d, box_appearance(image, d[:, :4]).astype(np.float64)], 1)


def appearance_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, K), (M, K) L1-normalised histograms -> (N, M) Hellinger distance in [0, 1]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bc = np.sqrt(np.clip(a, 0, None)) @ np.sqrt(np.clip(b, 0, None)).T
    return np.sqrt(np.clip(1.0 - bc, 0.0, 1.0))


@dataclass(frozen=True)
class TrackerParams:
    """Tracker settings (``track(dets, **params)``, ``OnlineTracker(**params)``).

    ``max_lost``: frames a track survives unmatched (occlusion); ``max_gap``: longest gap
    filled by interpolation (a longer gap splits the track's observations into runs and
    only the longest run is kept; see ``_finish``); ``min_track_frames``: shorter tracks
    (detected + interpolated frames) are dropped; ``new_thresh``: score needed to start a
    track (default ``high_thresh``).

    Appearance (used only when detections carry descriptors, ``with_appearance``): the
    association cost is ``1 - IoU + appearance_weight * distance``; a track lost for a few
    frames is re-identified by a detection that would otherwise start a track when their
    distance is at most ``reid_dist`` and the detection's centre is within ``reid_reach``
    box heights of the track's predicted centre; a track's descriptor is a running mean
    (weight ``appearance_alpha``) of its detections that overlap no other detection.

    ``birth_iou``: a detection overlapping a live track's box by more than this starts no
    track (where people cross, the detector may give a box for each person plus one around
    both; that third box must not become a person).

    ``occluder_margin``: where people cross and one box fits both tracks (association costs
    within this margin; 0 = off), the nearer person (lower box bottom) keeps it
    (``_prefer_occluders``).

    ``take_back``: after two people separate, a track holding a box takes a spare one that
    looks like it (appearance distance at most ``take_back_dist``) instead when a lost track
    looks like the box it holds (at most ``reid_dist``; appearance pairs the two people the
    other way round, ``_take_back``). The holder's own gate is looser than re-identification's:
    its descriptor has just been learning from the box both people shared.

    ``hand_over_margin``: a track lost under another's box takes a box that other track got by
    overlap when it looks like it within ``reid_dist`` and by this much more than the holder
    does (``_hand_over``; 0 = off). ``late_reid_frames``: a track lost under another's box
    takes over a track started at most this many frames after it when that one's box
    re-identifies it (``_late_reidentify``; 0 = off)."""
    high_thresh: float = 0.5
    low_thresh: float = 0.1
    new_thresh: float | None = None
    iou_thresh: float = 0.2
    max_lost: int = 15
    max_gap: int = 15
    min_track_frames: int = 10
    velocity_alpha: float = 0.4
    appearance_weight: float = 1.0
    reid_dist: float = 0.35
    reid_reach: float = 1.0
    appearance_alpha: float = 0.2
    birth_iou: float = 0.3
    occluder_margin: float = 0.15
    take_back: bool = True
    take_back_dist: float = 0.45
    hand_over_margin: float = 0.1
    late_reid_frames: int = 3


RELINK_SECONDS = 1.0   # a person the detector misses for up to this long keeps their id


def relink_frames(fps: float, base: int = TrackerParams.max_lost) -> int:
    """How many frames a lost track waits for its person (``max_lost``, and ``max_gap``, the
    longest gap filled): RELINK_SECONDS at the video's frame rate, never fewer than ``base``
    (the frame-count default, which covers 1.5 s at 10 frames/s)."""
    return max(int(base), int(round(fps * RELINK_SECONDS))) if fps and fps > 0 else int(base)


def _centre(xyxy: np.ndarray) -> np.ndarray:
    """(..., 4) boxes -> (..., 2) centres."""
    return (xyxy[..., :2] + xyxy[..., 2:4]) / 2


class _Live:
    def __init__(self, tid, frame, box, score, app=None):
        self.id, self.first, self.last, self.box = tid, frame, frame, np.asarray(box, np.float64)
        self.vel = np.zeros(2)   # the box centre's velocity, px per frame (exponentially smoothed)
        self.seen = 1
        self.sent = frame   # OnlineTracker: first frame not handed to _ready yet
        self.obs = [(frame, self.box.copy(), float(score))]
        self.app = app      # (K,) appearance descriptor or None
        self.hidden_by = None   # the track whose box covered this one's place when it was first missed

    def predict(self, frame):
        """The box expected at ``frame``: the last one moved by the centre's velocity, same size.
        Extrapolating each edge on its own collapses the box of a person going out of view
        (their box shrinks as they go) within a few frames, and then nothing re-links to it."""
        return self.box + np.tile(self.vel, 2) * (frame - self.last)

    def update(self, frame, box, score, alpha):
        box = np.asarray(box, np.float64)
        dt = frame - self.last
        step = (_centre(box) - _centre(self.box)) / dt
        self.vel = step if self.seen == 1 else alpha * step + (1 - alpha) * self.vel
        self.box, self.last = box, frame
        self.seen += 1
        self.obs.append((frame, box.copy(), float(score)))

    def absorb(self, other, alpha):
        """Take over a younger track's observations (all after this one's last)."""
        for frame, box, score in other.obs:
            self.update(frame, box, score, alpha)
        self.hidden_by = None

    def learn_appearance(self, app, alpha):
        """Running mean of the descriptors of clean (unoverlapped) detections."""
        if app is not None:
            self.app = app.copy() if self.app is None else (1 - alpha) * self.app + alpha * app


def _app_distance(tracks, apps) -> np.ndarray:
    """(N tracks, M detections) appearance distance; 0 where either has no descriptor."""
    if apps is None:
        return 0.0
    out = np.zeros((len(tracks), len(apps)))
    if not len(apps):
        return out
    have = [i for i, t in enumerate(tracks) if t.app is not None]
    if have:
        out[have] = appearance_distance(np.array([tracks[i].app for i in have]), apps)
    return out


def _match(tracks, boxes, frame, iou_thresh, apps=None, weight=0.0, occluder_margin=0.0):
    """Hungarian on ``1 - IoU + weight * appearance distance``, pairs gated by IoU >= iou_thresh,
    then ``_prefer_occluders``. -> (pairs (track i, detection j), unmatched tracks, unmatched
    detections)."""
    if not tracks or len(boxes) == 0:
        return [], list(range(len(tracks))), list(range(len(boxes)))
    pred = np.array([t.predict(frame) for t in tracks])
    iou = iou_matrix(pred, boxes)
    cost = 1.0 - iou + weight * _app_distance(tracks, apps)
    r, c = linear_sum_assignment(cost)
    pairs = [(i, j) for i, j in zip(r, c) if iou[i, j] >= iou_thresh]
    if occluder_margin > 0:
        pairs = _prefer_occluders(pairs, pred, cost, iou >= iou_thresh, occluder_margin)
    mi, mj = {i for i, _ in pairs}, {j for _, j in pairs}
    return pairs, [i for i in range(len(tracks)) if i not in mi], [j for j in range(len(boxes)) if j not in mj]


def _prefer_occluders(pairs, pred, cost, allowed, margin: float) -> list:
    """Where two tracks' predicted boxes overlap and one detection could be either person
    (the unmatched track's cost at most ``margin`` above the matched one's), the detection
    goes to the nearer person, the one whose box reaches lower in the frame (people on a
    floor, camera above it): a detector sees the occluder, and the hidden person's track
    coasts on its velocity until they reappear instead of taking over the occluder's box."""
    pairs = list(pairs)
    free = [k for k in range(len(pred)) if k not in {i for i, _ in pairs}]
    for n, (i, j) in enumerate(pairs):
        h = pred[i, 3] - pred[i, 1]
        for k in free:
            if (allowed[k, j] and cost[k, j] <= cost[i, j] + margin and pred[k, 3] > pred[i, 3] + 0.05 * h
                    and iou_matrix(pred[i:i + 1], pred[k:k + 1])[0, 0] > 0.2):
                pairs[n] = (k, j)
                free[free.index(k)] = i
                break
    return pairs


def _near(tracks, boxes, frame, reach) -> np.ndarray:
    """(T, N) bool: detection ``boxes`` (N, 4) whose centre lies within ``reach`` predicted box
    heights of each track's predicted centre."""
    pred = np.array([t.predict(frame) for t in tracks]).reshape(-1, 4)
    far = np.linalg.norm(_centre(pred)[:, None] - _centre(np.asarray(boxes).reshape(-1, 4))[None], axis=-1)
    return far <= reach * (pred[:, 3] - pred[:, 1])[:, None]


def _reidentify(tracks, boxes, apps, frame, max_dist, reach) -> list:
    """Lost tracks vs. detections that would start tracks: Hungarian on appearance distance,
    pairs with distance <= max_dist and the detection's centre within ``reach`` predicted box
    heights of the track's predicted centre. -> [(track i, detection j)]."""
    if not tracks or apps is None or not len(boxes):
        return []
    dist = _app_distance(tracks, apps)
    ok = (dist <= max_dist) & _near(tracks, boxes, frame, reach) \
        & np.array([t.app is not None for t in tracks])[:, None]
    r, c = linear_sum_assignment(np.where(ok, dist, 10.0))
    return [(i, j) for i, j in zip(r, c) if ok[i, j]]


def _take_back(tracks, pairs, spare, lost, boxes, apps, frame, p) -> tuple:
    """After two people overlapped, a track may hold the other person's box while its own
    person's box, reappearing beside it, is left over (or only found with a low score). A
    track A holding box j takes a spare box u instead when appearance pairs the two people
    the other way round: u is near A's predicted box (``reid_reach`` box heights) and looks
    like A (appearance distance <= ``take_back_dist``), a lost track B near j looks like j
    (<= ``reid_dist``), and d(A, u) + d(B, j) < d(A, j) + d(B, u). The box given up becomes
    spare, for B to re-identify.
    ``tracks``: the live tracks; ``pairs``: [(track index, detection index)]; ``spare``:
    unmatched detection indices; ``lost``: indices of lost tracks; ``boxes`` (N, 4), ``apps``
    (N, K): all detections. -> (pairs, spare)."""
    pairs, spare = list(pairs), list(spare)
    lost = [tracks[k] for k in lost if tracks[k].app is not None]
    for n, (i, j) in enumerate(pairs):
        a = tracks[i]
        if a.app is None or not spare or not lost:
            continue
        cand = np.array(spare)
        d_a = appearance_distance(a.app[None], apps[np.append(cand, j)])[0]
        ok = _near([a], boxes[cand], frame, p.reid_reach)[0] & (d_a[:-1] <= p.take_back_dist)
        if not ok.any():
            continue
        k = int(np.flatnonzero(ok)[np.argmin(d_a[:-1][ok])])
        u, d_au, d_aj = int(cand[k]), d_a[k], d_a[-1]
        for b in lost:
            d_b = appearance_distance(b.app[None], apps[[j, u]])[0]
            if _near([b], boxes[j:j + 1], frame, p.reid_reach)[0, 0] and d_b[0] <= p.reid_dist \
                    and d_au + d_b[0] < d_aj + d_b[1]:
                pairs[n] = (i, u)
                spare[spare.index(u)] = j
                break
    return pairs, spare


def _late_reidentify(live, pairs, apps, frame, p) -> list:
    """Young tracks (started at most ``late_reid_frames`` frames ago, nothing handed out yet)
    whose box on this frame a track lost before they started re-identifies (appearance
    distance <= ``reid_dist``, within ``reid_reach`` box heights): a person coming back from
    behind something is often only half seen on their first frame, too unlike their track to
    be re-identified there, and a new id started. -> [(young, lost track)], each once."""
    out, used = [], set()
    for i, j in pairs:
        y = live[i]
        if not (0 < frame - y.first <= p.late_reid_frames and y.sent == y.first):
            continue
        olds = [t for t in live if t.last < y.first and t.hidden_by is not None and id(t) not in used]
        for k, _ in _reidentify(olds, y.box[None], apps[j:j + 1], frame, p.reid_dist, p.reid_reach):
            out.append((y, olds[k]))
            used.add(id(olds[k]))
    return out


HIDDEN_IOU = 0.3   # a missed track's predicted box under another's new box by more: hidden by them


def _note_hiding(tracks, pairs, boxes, frame, examined) -> None:
    """A track missed for the first time whose predicted box another track's new box covers
    (IoU > HIDDEN_IOU) is taken to be hidden by (or merged into) that person: ``hidden_by``
    (their id) until it is matched again."""
    if not pairs:
        return
    held = np.array([boxes[j] for _, j in pairs])
    for t in tracks:
        if t.last == examined and t.last < frame:
            iou = iou_matrix(t.predict(frame)[None], held)[0]
            k = int(np.argmax(iou))
            t.hidden_by = tracks[pairs[k][0]].id if iou[k] > HIDDEN_IOU else None


def _hand_over(tracks, pairs, lost, boxes, apps, frame, p) -> list:
    """A box matched by overlap to track A goes to a lost track B instead when B was lost under
    A's box (``hidden_by``), is near it (``reid_reach`` box heights), looks like it
    (appearance distance <= ``reid_dist``) and clearly more than A does (by
    ``hand_over_margin``): where two people walked together under one box, the hidden one's
    track coasts on its old speed, and when that person's box comes back the track that held
    the shared box is often the nearer one. A then coasts (hidden by B) and can be handed the
    next box that looks like it. ``lost``: indices of lost tracks. -> pairs."""
    pairs, lost = list(pairs), list(lost)
    for n, (i, j) in enumerate(pairs):
        a = tracks[i]
        cand = [k for k in lost if tracks[k].hidden_by == a.id]
        if a.app is None or not cand:
            continue
        for b, _ in _reidentify([tracks[k] for k in cand], boxes[j:j + 1], apps[j:j + 1], frame, p.reid_dist,
                                p.reid_reach):
            d_a, d_b = _app_distance([a, tracks[cand[b]]], apps[j:j + 1])[:, 0]
            if d_b + p.hand_over_margin <= d_a:
                pairs[n] = (cand[b], j)
                lost = [k for k in lost if k != cand[b]] + [i]
    return pairs


class _Associator:
    """The per-frame association step shared by ``track`` and ``OnlineTracker``."""

    def __init__(self, p: TrackerParams):
        self.p = p
        self.new_thresh = p.high_thresh if p.new_thresh is None else p.new_thresh
        self.live, self.next_id, self.frame, self.examined = [], 1, 0, -1

    def step(self, d) -> list:
        """Associate the next frame's (N, 5) detections; -> the tracks that ended. ``d`` None:
        the detector skipped this frame (``detect_every``): tracks coast, and their boxes there
        are interpolated like a missed detection's."""
        p, f, live = self.p, self.frame, self.live
        if d is None:
            self.live = [t for t in live if f - t.last <= p.max_lost]
            self.frame += 1
            return [t for t in live if f - t.last > p.max_lost]
        d = np.asarray(d, np.float64)
        d = d.reshape(-1, d.shape[1] if d.ndim == 2 and d.shape[1] > 5 else 5)    # (N, 5) or (N, 5 + K)
        d = d[(d[:, 4] >= p.low_thresh) & (d[:, 2] > d[:, 0]) & (d[:, 3] > d[:, 1])]
        apps = d[:, 5:] if d.shape[1] > 5 else None
        clean = (iou_matrix(d[:, :4], d[:, :4]) > 0.05).sum(1) <= 1      # overlaps no other detection
        hi_i, lo_i = np.flatnonzero(d[:, 4] >= p.high_thresh), np.flatnonzero(d[:, 4] < p.high_thresh)
        app = (lambda idx: None if apps is None else apps[idx])  # noqa: E731

        def take(t, j):          # track t gets detection j (a row of d)
            t.update(f, d[j, :4], d[j, 4], p.velocity_alpha)
            t.hidden_by = None
            if clean[j]:
                t.learn_appearance(app(j), p.appearance_alpha)

        pairs, rest, _ = _match(live, d[hi_i, :4], f, p.iou_thresh, app(hi_i), p.appearance_weight,
                                p.occluder_margin)
        # stage 2: low-score detections, only for tracks seen on the last frame the detector looked at
        recent = [i for i in rest if live[i].last == self.examined]
        pairs2, _, _ = _match([live[i] for i in recent], d[lo_i, :4], f, max(p.iou_thresh, 0.3), app(lo_i),
                              p.appearance_weight, p.occluder_margin)
        pairs = [(i, hi_i[j]) for i, j in pairs] + [(recent[i], lo_i[j]) for i, j in pairs2]   # rows of d
        held = {j for _, j in pairs}
        spare = [j for j in range(len(d)) if j not in held]
        if p.take_back and apps is not None:
            def unmatched_lost(pairs):
                paired = {i for i, _ in pairs}
                return [i for i in range(len(live)) if live[i].last < self.examined and i not in paired]

            pairs, spare = _take_back(live, pairs, spare, unmatched_lost(pairs), d[:, :4], apps, f, p)
            if p.hand_over_margin > 0:
                pairs = _hand_over(live, pairs, unmatched_lost(pairs), d[:, :4], apps, f, p)
        for i, j in pairs:
            take(live[i], j)
        _note_hiding(live, pairs, d[:, :4], f, self.examined)
        if p.late_reid_frames > 0 and apps is not None:
            for young, old in _late_reidentify(live, pairs, apps, f, p):
                old.absorb(young, p.velocity_alpha)
                live.remove(young)
        lost = [t for t in live if t.last < f]
        new_i = np.array([j for j in spare if d[j, 4] >= max(p.high_thresh, self.new_thresh)], int)
        revived = set()
        for i, j in _reidentify(lost, d[new_i, :4], app(new_i), f, p.reid_dist, p.reid_reach):
            take(lost[i], new_i[j])
            revived.add(j)
        taken = np.array([t.predict(f) for t in live]).reshape(-1, 4)
        for j in (new_i[k] for k in range(len(new_i)) if k not in revived):
            if len(taken) and iou_matrix(d[j:j + 1, :4], taken).max() > p.birth_iou:
                continue
            live.append(_Live(self.next_id, f, d[j, :4], d[j, 4], app(j) if clean[j] else None))
            self.next_id += 1
        keep, ended = [], []
        for t in live:
            (keep if f - t.last <= p.max_lost else ended).append(t)
        self.live = keep
        self.examined = f
        self.frame += 1
        return ended


def track(detections, **params) -> dict:
    """detections: sequence over frames of (N, 5) arrays -> {id: Track} (ids 1, 2, ... by start).

    ``params``: ``TrackerParams`` fields (``high_thresh=0.5, low_thresh=0.1, new_thresh=None,
    iou_thresh=0.2, max_lost=15, max_gap=15, min_track_frames=10, velocity_alpha=0.4``, and
    the appearance settings, used when the detections carry descriptors).
    Offline: every observation is kept until the end; ``OnlineTracker`` gives the same tracks
    frame by frame with bounded memory."""
    p = TrackerParams(**params)
    assoc = _Associator(p)
    done = []
    for d in detections:
        done.extend(assoc.step(d))
    done.extend(assoc.live)
    out = {}
    for t in sorted(done, key=lambda t: t.id):
        tr = _finish(t.obs, p.max_gap)
        if len(tr.frames) >= p.min_track_frames:
            out[t.id] = tr
    return out


def _finish(obs, max_gap):
    """Observations -> Track with gaps <= max_gap interpolated; a longer gap ends the track
    there (the longest run is kept)."""
    runs, cur = [], [obs[0]]
    for o in obs[1:]:
        if o[0] - cur[-1][0] - 1 > max_gap:
            runs.append(cur)
            cur = []
        cur.append(o)
    runs.append(cur)
    return _fill(max(runs, key=lambda r: r[-1][0] - r[0][0]))


def _fill(run):
    """One run of observations (frame, xyxy, score) -> Track over its first..last frame, the
    frames in between linearly interpolated (score 0, flagged). A frame's box depends only
    on the two observations around it, so any window of a run gives the same values."""
    fr = np.array([o[0] for o in run])
    bx = np.array([o[1] for o in run])
    sc = np.array([o[2] for o in run])
    frames = np.arange(fr[0], fr[-1] + 1)
    xyxy = np.column_stack([np.interp(frames, fr, bx[:, k]) for k in range(4)])
    scores = np.zeros(len(frames))
    scores[fr - fr[0]] = sc
    interp = np.ones(len(frames), bool)
    interp[fr - fr[0]] = False
    return Track(frames, xyxy, scores, interp)


class TrackBox(NamedTuple):
    """One track's final box in one frame."""
    id: int
    xyxy: np.ndarray      # (4,) float64
    score: float          # 0 where interpolated
    interpolated: bool


class FinalFrame(NamedTuple):
    frame: int            # 0-based index of the frame in the stream given to the tracker
    boxes: list           # [TrackBox], ascending id


class OnlineTracker:
    """``track`` one frame at a time, handing out each frame once its boxes are final.

        tracker = OnlineTracker(**params)
        for dets in detections_per_frame:
            for final in tracker.update(dets):   # FinalFrame(frame, [TrackBox, ...]), in frame order
                ...
        for final in tracker.close(): ...        # end of the stream: the remaining frames

    Every frame comes out exactly once, in order, with exactly the boxes, scores, flags and
    ids ``track`` gives for the whole sequence. A frame is final when no future frame can
    change it: no live track may still fill a gap over it (frames after a track's last
    observation wait) or still be dropped as too short (a track's frames wait until it has
    ``min_track_frames``). With ``max_lost <= max_gap`` (the defaults) a track never has a
    gap longer than ``max_gap``, so at most ``max_lag = max_lost + min_track_frames - 1``
    frames wait; with ``max_lost > max_gap`` a later run of a track could still replace an
    earlier one, so a live track's frames wait until it ends (``max_lag`` is None: unbounded).
    Each track keeps only the observations it still needs."""

    def __init__(self, **params):
        self.params = TrackerParams(**params)
        self._assoc = _Associator(self.params)
        self._single_run = self.params.max_lost <= self.params.max_gap
        self._ready = {}       # frame -> [TrackBox] not yet handed out
        self._released = 0     # frames < this were handed out
        self._closed = False

    @property
    def max_lag(self):
        p = self.params
        return p.max_lost + p.min_track_frames - 1 if self._single_run else None

    @property
    def lag(self) -> int:
        """Frames given to ``update`` but not handed out yet."""
        return self._assoc.frame - self._released

    def update(self, detections) -> list:
        """Associate the next frame's (N, 5) detections (None: a frame the detector skipped);
        -> the frames that became final."""
        if self._closed:
            raise RuntimeError("OnlineTracker.update after close()")
        for t in self._assoc.step(detections):
            self._end(t)
        if self._single_run:
            for t in self._assoc.live:
                self._send_if_kept(t)
        upto = min([self._assoc.frame] + [t.sent for t in self._assoc.live])
        return self._release(upto)

    def close(self) -> list:
        """End of the stream: every live track ends; -> all remaining frames."""
        if not self._closed:
            for t in self._assoc.live:
                self._end(t)
            self._assoc.live, self._closed = [], True
        return self._release(self._assoc.frame)

    def _send_if_kept(self, t):
        """Single run: a track long enough to be kept sends its frames up to its last observation."""
        if t.sent <= t.last and t.last - t.first + 1 >= self.params.min_track_frames:
            self._send(t, _fill(t.obs))

    def _end(self, t):
        if self._single_run:
            self._send_if_kept(t)
            return
        tr = _finish(t.obs, self.params.max_gap)
        if len(tr.frames) >= self.params.min_track_frames:
            self._send(t, tr)

    def _send(self, t, tr: Track):
        for i in np.flatnonzero(tr.frames >= t.sent):
            f = int(tr.frames[i])
            if f < self._released:   # would mean a frame was handed out too early
                raise AssertionError(f"track {t.id}: frame {f} changed after it was final")
            self._ready.setdefault(f, []).append(
                TrackBox(t.id, tr.xyxy[i], float(tr.scores[i]), bool(tr.interpolated[i])))
        t.sent = t.last + 1
        t.obs = t.obs[-1:]   # the left neighbour of the next gap is all a sent run still needs

    def _release(self, upto: int) -> list:
        out = [FinalFrame(f, sorted(self._ready.pop(f, []), key=lambda b: b.id))
               for f in range(self._released, upto)]
        self._released = max(self._released, upto)
        return out


def tracks_from_frames(final_frames) -> dict:
    """[FinalFrame] -> {id: Track}, the form ``track`` returns."""
    rows = {}
    for ff in final_frames:
        for b in ff.boxes:
            rows.setdefault(b.id, []).append((ff.frame, b))
    return {tid: Track(np.array([f for f, _ in r], np.int64), np.array([b.xyxy for _, b in r], np.float64),
                       np.array([b.score for _, b in r], np.float64),
                       np.array([b.interpolated for _, b in r], bool))
            for tid, r in sorted(rows.items())}


def square_iou(a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Elementwise IoU of (..., 3) square boxes (cx, cy, side)."""
    def xyxy(s):
        s = np.asarray(s, np.float64)
        return np.concatenate([s[..., :2] - s[..., 2:3] / 2, s[..., :2] + s[..., 2:3] / 2], -1)
    return box_iou(xyxy(a_sq), xyxy(b_sq))
