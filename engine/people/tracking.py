"""Multi-person tracking by detection, and its measurement.

``track(detections) -> {id: Track}``: ``detections`` is one (N, 5) ``[x1, y1, x2, y2,
score]`` array per frame. Association is ByteTrack-style: each live track predicts its
box with a constant velocity (exponentially smoothed), high-score detections are matched
first (Hungarian on 1 - IoU, scipy), then low-score ones to the tracks still unmatched;
unmatched high-score detections start tracks; a track unmatched for more than
``max_lost`` frames ends. Gaps of at most ``max_gap`` frames inside a track are filled by
linear interpolation (``Track.interpolated``); tracks with fewer than
``min_track_frames`` frames (detected + interpolated) are dropped. ``Track.boxes`` are the
official PyMAF square boxes ``(cx, cy, side = max(w, h))``.

Why hand-written: supervision 0.31 no longer has ByteTrack (it moved to ``trackers``),
and both ``trackers`` 2.6.1 and ``supervision`` 0.26.1 require ``opencv-python`` 5.0,
which replaces cv2 and has no ``HOGDescriptor``; ``norfair`` 2.3.0 pulls numpy 1.26.
See docs/people.md.

``python -m engine.people.tracking --measure [--out docs/people.md]`` renders a clip of two
mannequins crossing and runs each candidate on it and on ../shared/footage/dancer.mp4.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
        b = self.xyxy
        return square_box(np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]]))


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


class _Live:
    def __init__(self, tid, frame, box, score):
        self.id, self.last, self.box = tid, frame, np.asarray(box, np.float64)
        self.vel = np.zeros(4)
        self.obs = [(frame, self.box.copy(), float(score))]

    def predict(self, frame):
        return self.box + self.vel * (frame - self.last)

    def update(self, frame, box, score, alpha):
        box = np.asarray(box, np.float64)
        dt = frame - self.last
        if len(self.obs) == 1:
            self.vel = (box - self.box) / dt
        else:
            self.vel = alpha * (box - self.box) / dt + (1 - alpha) * self.vel
        self.box, self.last = box, frame
        self.obs.append((frame, box.copy(), float(score)))


def _match(tracks, boxes, frame, iou_thresh):
    if not tracks or len(boxes) == 0:
        return [], list(range(len(tracks))), list(range(len(boxes)))
    pred = np.array([t.predict(frame) for t in tracks])
    iou = iou_matrix(pred, boxes)
    r, c = linear_sum_assignment(1.0 - iou)
    pairs = [(i, j) for i, j in zip(r, c) if iou[i, j] >= iou_thresh]
    mi, mj = {i for i, _ in pairs}, {j for _, j in pairs}
    return pairs, [i for i in range(len(tracks)) if i not in mi], [j for j in range(len(boxes)) if j not in mj]


def track(detections, *, high_thresh: float = 0.5, low_thresh: float = 0.1, new_thresh: float | None = None,
          iou_thresh: float = 0.2, max_lost: int = 15, max_gap: int = 15, min_track_frames: int = 10,
          velocity_alpha: float = 0.4) -> dict:
    """detections: sequence over frames of (N, 5) arrays -> {id: Track} (ids 1, 2, ... by start).

    ``max_lost``: frames a track survives unmatched (occlusion); ``max_gap``: longest gap
    filled by interpolation (longer gaps split the track's output into separate runs
    kept under the same id only if each is long enough; see ``_finish``);
    ``min_track_frames``: shorter tracks are dropped."""
    new_thresh = high_thresh if new_thresh is None else new_thresh
    live, done, next_id = [], [], 1
    for f, d in enumerate(detections):
        d = np.asarray(d, np.float64).reshape(-1, 5)
        d = d[(d[:, 4] >= low_thresh) & (d[:, 2] > d[:, 0]) & (d[:, 3] > d[:, 1])]
        hi, lo = d[d[:, 4] >= high_thresh], d[d[:, 4] < high_thresh]
        pairs, rest, new = _match(live, hi[:, :4], f, iou_thresh)
        for i, j in pairs:
            live[i].update(f, hi[j, :4], hi[j, 4], velocity_alpha)
        recent = [live[i] for i in rest if live[i].last == f - 1]   # stage 2: only tracks seen last frame
        pairs2, _, _ = _match(recent, lo[:, :4], f, max(iou_thresh, 0.3))
        for i, j in pairs2:
            recent[i].update(f, lo[j, :4], lo[j, 4], velocity_alpha)
        for j in new:
            if hi[j, 4] >= new_thresh:
                live.append(_Live(next_id, f, hi[j, :4], hi[j, 4]))
                next_id += 1
        keep = []
        for t in live:
            (keep if f - t.last <= max_lost else done).append(t)
        live = keep
    done.extend(live)
    out = {}
    for t in sorted(done, key=lambda t: t.id):
        tr = _finish(t.obs, max_gap)
        if tr is not None and len(tr.frames) >= min_track_frames:
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
    run = max(runs, key=lambda r: r[-1][0] - r[0][0])
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


def square_iou(a_sq: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Elementwise IoU of (..., 3) square boxes (cx, cy, side)."""
    def xyxy(s):
        s = np.asarray(s, np.float64)
        return np.concatenate([s[..., :2] - s[..., 2:3] / 2, s[..., :2] + s[..., 2:3] / 2], -1)
    return box_iou(xyxy(a_sq), xyxy(b_sq))


# ------------------------------------------------------------------------- test clips
def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def render_crossing_clip(num_frames: int = 60, width: int = 640, height: int = 360, seed: int = 0,
                         fov_deg: float = 55.0, people: int = 2):
    """Two mannequins walking across the frame in opposite directions (paths cross; the
    nearer one occludes the farther) over a textured background.

    -> (frames (T, H, W, 3) uint8 RGB, gt_xyxy (T, P, 4) from projected vertices,
        visible (T, P) fraction of each person's pixels not occluded)."""
    import torch

    from engine.body.mannequin import build_mannequin
    from engine.body.smpl_torch import SMPL
    from engine.data import appearance, poses
    from engine.render.renderer import Renderer

    rng = np.random.default_rng(seed)
    body = build_mannequin()
    smpl = SMPL(body).eval()
    focal = width / 2 / np.tan(np.radians(fov_deg) / 2)
    bg = appearance.random_background(rng, width, height, kind="tiling")
    rend = Renderer(width, height, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1)
    T = int(num_frames)
    specs = [(-2.2, 2.2, 6.0, +1), (2.4, -2.0, 7.0, -1)][:people]
    verts, colours = [], []
    for x0, x1, z, direction in specs:
        m = poses.motion("walk", T, rng)
        rot = np.array(m.poses, np.float64)
        rot[:, 0] = _rot_x(np.pi) @ _rot_y(direction * np.pi / 2)
        with torch.no_grad():
            v = smpl.pose(torch.as_tensor(rot, dtype=torch.float32),
                          torch.zeros(T, 10)).vertices.double().numpy()
        foot = v[:, :, 1].max()                 # camera y down: feet have the largest y
        xs = np.linspace(x0, x1, T)
        v = v + np.stack([xs, np.full(T, 1.1 - foot), np.full(T, z)], 1)[:, None, :]
        verts.append(v)
        colours.append(appearance.random_clothing(rng, body.v_template, body.vertex_parts, body.vertex_uv))
    P = len(specs)
    frames = np.zeros((T, height, width, 3), np.uint8)
    gt = np.zeros((T, P, 4))
    masks = np.zeros((T, P, height, width), bool)
    for t in range(T):
        img = bg
        order = sorted(range(P), key=lambda p: -verts[p][t, :, 2].mean())   # far first
        for p in order:
            out = rend.render(verts[p][t][None], focal, None, colours[p][None], img[None])
            img, masks[t, p] = out.rgb[0].copy(), out.mask[0].astype(bool)
        frames[t] = img
        for p in range(P):
            v = verts[p][t]
            uv = focal * v[:, :2] / v[:, 2:3] + np.array([width / 2, height / 2])
            gt[t, p] = [*uv.min(0), *uv.max(0)]
    # visibility: own mask minus what nearer people cover
    visible = np.ones((T, P))
    for t in range(T):
        for p in range(P):
            near = [q for q in range(P) if verts[q][t, :, 2].mean() < verts[p][t, :, 2].mean()]
            cover = np.zeros((height, width), bool)
            for q in near:
                cover |= masks[t, q]
            area = masks[t, p].sum()
            visible[t, p] = (masks[t, p] & ~cover).sum() / max(area, 1)
    rend.release() if hasattr(rend, "release") else None
    return frames, gt, visible


def gt_detections(gt_xyxy, rng, jitter: float = 0.04, miss: float = 0.1, score=(0.6, 1.0)):
    """Detector stand-in: GT boxes (T, P, 4) + jitter (fraction of box size), dropped at
    rate ``miss``, shuffled order per frame."""
    out = []
    for boxes in gt_xyxy:
        ds = []
        for b in boxes:
            if rng.random() < miss:
                continue
            s = np.r_[b[2] - b[0], b[3] - b[1], b[2] - b[0], b[3] - b[1]]
            ds.append([*(b + rng.normal(0, jitter, 4) * s), rng.uniform(*score)])
        ds = np.array(ds).reshape(-1, 5)
        out.append(ds[rng.permutation(len(ds))])
    return out


def evaluate(tracks: dict, gt_xyxy: np.ndarray, iou_ok: float = 0.5) -> dict:
    """Match tracks to GT people per frame (Hungarian on square-box IoU).

    recall: fraction of (frame, person) with a track box IoU > iou_ok; mean_iou over all
    (frame, person), 0 where none; id_switches: times a person's matched track id changes."""
    gt = np.asarray(gt_xyxy, np.float64)
    T, P = gt.shape[:2]
    gsq = square_box(np.concatenate([gt[..., :2], gt[..., 2:] - gt[..., :2]], -1))
    per_frame = [dict() for _ in range(T)]
    for tid, tr in tracks.items():
        for f, b in zip(tr.frames, tr.boxes):
            if 0 <= f < T:
                per_frame[f][tid] = b
    ious = np.zeros((T, P))
    ids = np.full((T, P), -1)
    for f in range(T):
        if not per_frame[f]:
            continue
        tids = list(per_frame[f])
        tb = np.array([per_frame[f][i] for i in tids])
        m = square_iou(gsq[f][:, None, :], tb[None, :, :])
        r, c = linear_sum_assignment(-m)
        for i, j in zip(r, c):
            if m[i, j] > 0:
                ious[f, i], ids[f, i] = m[i, j], tids[j]
    switches = 0
    for p in range(P):
        seq = [i for i, ok in zip(ids[:, p], ious[:, p] > iou_ok) if ok]
        switches += sum(a != b for a, b in zip(seq, seq[1:]))
    return dict(recall=float((ious > iou_ok).mean()), mean_iou=float(ious.mean()), id_switches=int(switches),
                ious=ious, ids=ids)


# ------------------------------------------------------------------------- measurement
DANCER = Path(__file__).resolve().parents[3] / "shared" / "footage" / "dancer.mp4"


def candidates():
    from engine.people.detect import HaarDetector, HOGDetector

    return {
        "HOG (long side 640) + IoU tracker": lambda: HOGDetector(max_side=640),
        "HOG (long side 1280, upscale ≤2x) + IoU tracker": lambda: HOGDetector(max_side=1280, max_scale=2.0),
        "Haar full body (long side 640) + IoU tracker": lambda: HaarDetector(max_side=640),
    }


def _run(det, frames):
    t0 = time.perf_counter()
    dets = [det.detect(f, i) for i, f in enumerate(frames)]
    det_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    tracks = track(dets, min_track_frames=5)
    return dets, tracks, len(frames) / (time.perf_counter() - t0), time.perf_counter() - t1


def measure(out_md=None, clip_frames: int = 60) -> list:
    rows = []
    frames, gt, _vis = render_crossing_clip(clip_frames)
    dancer = None
    if DANCER.exists():
        from engine.video.decode import iter_frames
        dancer = [f.image for f in iter_frames(DANCER)]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    tr = track(gt_detections(gt, rng, jitter=0.04, miss=0.1))
    fps_t = len(gt) / (time.perf_counter() - t0)
    ev = evaluate(tr, gt)
    rows.append(dict(name="GT boxes + 4 % jitter + 10 % misses + IoU tracker (tracker layer only)",
                     recall=ev["recall"], mean_iou=ev["mean_iou"], ids=ev["id_switches"], fps=fps_t,
                     dancer=None, dancer_fps=None))
    for name, make in candidates().items():
        det = make()
        dets, tracks, fps, _ = _run(det, frames)
        ev = evaluate(tracks, gt)
        row = dict(name=name, recall=ev["recall"], mean_iou=ev["mean_iou"], ids=ev["id_switches"], fps=fps,
                   dets=float(np.mean([len(d) for d in dets])), dancer=None, dancer_fps=None)
        if dancer is not None:
            ddets, dtracks, dfps, _ = _run(det, dancer)
            row["dancer_det"] = float(np.mean([len(d) > 0 for d in ddets]))
            best = max(dtracks.values(), key=lambda t: len(t.frames), default=None)
            row["dancer"] = 0.0 if best is None else len(best.frames) / len(dancer)
            row["dancer_tracks"] = len(dtracks)
            row["dancer_fps"] = dfps
        rows.append(row)
        print(row, flush=True)
    if out_md:
        write_doc(rows, out_md, len(frames), None if dancer is None else len(dancer))
    return rows


def _fmt(x, pct=True):
    return "—" if x is None else (f"{100 * x:.0f} %" if pct else f"{x:.1f}")


def write_doc(rows, path, clip_frames, dancer_frames):
    lines = [
        "| candidate | clip recall (IoU>0.5) | clip mean IoU | clip id switches | clip frames/s | "
        "dancer: frames with a detection | dancer: longest track covers | dancer frames/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {_fmt(r['recall'])} | {r['mean_iou']:.2f} | {r['ids']} | {r['fps']:.1f} | "
                     f"{_fmt(r.get('dancer_det'))} | {_fmt(r.get('dancer'))} | {_fmt(r.get('dancer_fps'), False)} |")
    table = "\n".join(lines)
    p = Path(path)
    text = p.read_text() if p.exists() else ""
    start, end = "<!-- measure:begin -->", "<!-- measure:end -->"
    block = (f"{start}\nClip: {clip_frames} frames, 640x360, two mannequins crossing (rendered); dancer.mp4: "
             f"{dancer_frames or 'absent'} frames, 1920x1080.\n\n{table}\n{end}")
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + ("\n" if text else "") + block + "\n"
    p.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", action="store_true", help="measure the candidates (docs/people.md table)")
    ap.add_argument("--out", default=None, help="markdown file to write the table into")
    a = ap.parse_args(argv)
    if a.measure:
        measure(a.out)
        return 0
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
