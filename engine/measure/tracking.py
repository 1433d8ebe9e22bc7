"""Measurement of the tracker and the detector candidates (never imported at run time).

Rendered test clips with exact boxes (``render_crossing_clip``: mannequins walking across
each other; ``render_motion_clip``: mannequins crouching, kicking, turning in place), a
detector stand-in from ground truth (``gt_detections``), CLEAR-MOT style scoring
(``evaluate``, ``matched_xyxy_iou``) and the candidates table of docs/people.md::

    python -m engine.measure.tracking --measure [--out docs/people.md]

renders the clips and runs each candidate on them and on ../shared/footage/dancer.mp4.
The tracker itself is engine/people/tracking.py (run time); this module imports the
renderer and the detector's training scene code, which run time must not.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine.people.tracking import box_iou, square_iou, track, with_appearance, xyxy_to_square


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
    """Match tracks to GT people per frame as CLEAR MOT does: a person keeps last frame's
    track while their square-box IoU stays above ``iou_ok``; the others are matched by
    Hungarian on square-box IoU.

    recall: fraction of (frame, person) with a track box IoU > iou_ok; mean_iou over all
    (frame, person), 0 where none; id_switches: times a person's matched track id changes."""
    gt = np.asarray(gt_xyxy, np.float64)
    T, P = gt.shape[:2]
    gsq = xyxy_to_square(gt)
    per_frame = [dict() for _ in range(T)]
    for tid, tr in tracks.items():
        for f, b in zip(tr.frames, tr.boxes):
            if 0 <= f < T:
                per_frame[f][tid] = b
    ious = np.zeros((T, P))
    ids = np.full((T, P), -1)
    last = np.full(P, -1)                 # each person's previous valid match
    for f in range(T):
        if not per_frame[f]:
            continue
        tids = list(per_frame[f])
        tb = np.array([per_frame[f][i] for i in tids])
        m = square_iou(gsq[f][:, None, :], tb[None, :, :])
        # CLEAR MOT: a match from the previous frame that is still valid is kept
        kept = {i: tids.index(last[i]) for i in range(P)
                if last[i] in tids and m[i, tids.index(last[i])] > iou_ok}
        if len(set(kept.values())) < len(kept):
            kept = {}
        rows = [i for i in range(P) if i not in kept]
        cols = [j for j in range(len(tids)) if j not in kept.values()]
        r, c = linear_sum_assignment(-m[np.ix_(rows, cols)]) if rows and cols else ([], [])
        pairs = list(kept.items()) + [(rows[a], cols[b]) for a, b in zip(r, c)]
        for i, j in pairs:
            if m[i, j] > 0:
                ious[f, i], ids[f, i] = m[i, j], tids[j]
                if m[i, j] > iou_ok:
                    last[i] = tids[j]
    switches = 0
    for p in range(P):
        seq = [i for i, ok in zip(ids[:, p], ious[:, p] > iou_ok) if ok]
        switches += sum(a != b for a, b in zip(seq, seq[1:]))
    return dict(recall=float((ious > iou_ok).mean()), mean_iou=float(ious.mean()), id_switches=int(switches),
                ious=ious, ids=ids)


# ------------------------------------------------------------------------- measurement
DANCER = Path(__file__).resolve().parents[3] / "shared" / "footage" / "dancer.mp4"


def candidates():
    """name -> (detector factory, tracker settings): the measured combinations."""
    from engine.people.detect import HaarDetector, HOGDetector, make_detector

    iou_only = dict(appearance_weight=0.0, reid_dist=-1.0)
    return {
        "HOG (long side 640) + tracker": (lambda: HOGDetector(max_side=640), {}),
        "HOG (long side 1280, upscale ≤2x) + tracker": (lambda: HOGDetector(max_side=1280, max_scale=2.0), {}),
        "Haar full body (long side 640) + tracker": (lambda: HaarDetector(max_side=640), {}),
        "Learned mannequin detector (long side 320) + tracker without appearance":
            (lambda: make_detector("mannequin", device="cpu"), iou_only),
        "Learned mannequin detector (long side 320) + tracker": (lambda: make_detector("mannequin", device="cpu"), {}),
        "HOG (long side 1280) + learned, merged + tracker": (lambda: make_detector("hog+mannequin", device="cpu"), {}),
        "MoveNet MultiPose (long side 384; the default) + tracker": (lambda: make_detector("movenet", device="cpu"), {}),
    }


def render_motion_clip(num_frames: int = 60, width: int = 640, height: int = 360, seed: int = 1,
                       motions=("crouch", "kick", "turn"), fov_deg: float = 55.0):
    """People in place doing ``motions`` (crouching, kicking, turning; one each, side by side
    at different depths, various headings) over a random background; the second measured clip.
    -> (frames (T, H, W, 3) uint8, gt_xyxy (T, P, 4) projected vertices clipped to the frame,
    visible (T, P) fraction of each person's pixels not hidden by another)."""
    import torch

    from engine.body.smpl_torch import SMPL
    from engine.data import appearance, poses
    from engine.people.train_detector import SceneGenerator, appearance_clothing, composite, projected_box

    rng = np.random.default_rng(seed)
    gen = SceneGenerator(seed)
    smpl = SMPL(gen.body).eval()
    T, P = int(num_frames), len(motions)
    focal = width / 2 / np.tan(np.radians(fov_deg) / 2)
    xs, zs = np.linspace(-1.6, 1.6, P), rng.uniform(5.0, 7.5, P)
    verts = np.zeros((P, T, gen.body.num_vertices, 3))
    for p, name in enumerate(motions):
        m = poses.motion(name, T, rng)
        rot = np.array(m.poses, np.float64)
        heading = rng.uniform(-np.pi / 2, np.pi / 2)
        rot[:, 0] = [_rot_x(np.pi) @ _rot_y(heading + y) for y in m.yaw]
        with torch.no_grad():
            v = smpl.pose(torch.as_tensor(rot, dtype=torch.float32), torch.zeros(T, 10)).vertices.double().numpy()
        root = m.root @ (_rot_x(np.pi) @ _rot_y(heading)).T      # SMPL world offset -> camera axes
        verts[p] = v + root[:, None] + np.array([xs[p], 1.1 - v[0, :, 1].max(), zs[p]])
    colours = np.array([appearance_clothing(rng, gen.body) for _ in range(P)])
    bg = appearance.random_background(rng, width, height)
    rend = gen.renderer(width, height)
    frames = np.zeros((T, height, width, 3), np.uint8)
    gt, visible = np.zeros((T, P, 4)), np.zeros((T, P))
    for t in range(T):
        r = rend.render(verts[:, t], focal, None, colours)
        owner = composite(r.mask, r.depth)
        frames[t] = bg
        for p in range(P):
            frames[t][owner == p] = r.rgb[p][owner == p]
            gt[t, p] = projected_box(verts[p, t], focal, width, height)[0]
            visible[t, p] = (owner == p).sum() / max(r.mask[p].sum(), 1)
    gen.close()
    return frames, gt, visible


def clip_to_frame(gt_xyxy, width: int, height: int) -> np.ndarray:
    """(..., 4) boxes -> clipped to the frame [0, width] x [0, height]."""
    g = np.array(gt_xyxy, np.float64)
    g[..., [0, 2]] = g[..., [0, 2]].clip(0, width)
    g[..., [1, 3]] = g[..., [1, 3]].clip(0, height)
    return g


def matched_xyxy_iou(tracks: dict, ids: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """IoU (T, P) of each person's GT xyxy box with the xyxy box of the track ``evaluate``
    matched to it in that frame (``ids`` (T, P), -1 = none: IoU 0)."""
    out = np.zeros(ids.shape)
    for (f, p), tid in np.ndenumerate(ids):
        if tid in tracks:
            tr = tracks[tid]
            k = np.searchsorted(tr.frames, f)
            if k < len(tr.frames) and tr.frames[k] == f:
                out[f, p] = box_iou(tr.xyxy[k], gt_xyxy[f, p])
    return out


def _run(det, frames, params=None):
    t0 = time.perf_counter()
    dets = [with_appearance(f, d) for f, d in zip(frames, det.detect_batch(list(frames)))]
    tracks = track(dets, min_track_frames=5, **(params or {}))
    return dets, tracks, len(frames) / (time.perf_counter() - t0)


CROSSING_SEEDS, IN_PLACE_SEEDS = (0, 1, 2, 3, 4), (1, 2, 3)


def _clip_scores(tracks, gt, visible) -> dict:
    """Scores on one clip, over the (frame, person) pairs with at least half the person visible."""
    ev = evaluate(tracks, gt)
    mostly = visible >= 0.5
    iou = matched_xyxy_iou(tracks, ev["ids"], gt)
    return dict(recall=float((ev["ious"] > 0.5)[mostly].mean()), sq70=float((ev["ious"] > 0.7)[mostly].mean()),
                iou70=float((iou > 0.7)[mostly].mean()), ids=ev["id_switches"], tracks=len(tracks))


def _pooled(scores: list) -> dict:
    """Per-clip scores -> means of the rates, sums of id switches and tracks."""
    return {k: (sum(s[k] for s in scores) if k in ("ids", "tracks") else float(np.mean([s[k] for s in scores])))
            for k in scores[0]}


def measure(out_md=None, clip_frames: int = 60) -> list:
    """Every candidate on the rendered clips (crossing: CROSSING_SEEDS, in place:
    IN_PLACE_SEEDS) and on dancer.mp4; -> rows, written to ``out_md`` between the markers."""
    crossing = []
    for seed in CROSSING_SEEDS:
        frames, gt, vis = render_crossing_clip(clip_frames, seed=seed)
        crossing.append((frames, clip_to_frame(gt, frames.shape[2], frames.shape[1]), vis))
    in_place = [render_motion_clip(clip_frames, seed=seed) for seed in IN_PLACE_SEEDS]
    dancer = None
    if DANCER.exists():
        from engine.video.decode import iter_frames
        dancer = [f.image for f in iter_frames(DANCER)]
    rng = np.random.default_rng(0)
    rows = [dict(name="GT boxes + 4 % jitter + 10 % misses + tracker (tracker layer only)", fps=None,
                 crossing=_pooled([_clip_scores(track(gt_detections(g, rng, jitter=0.04, miss=0.1)), g, v)
                                   for _, g, v in crossing]))]
    for name, (make, params) in candidates().items():
        det = make()
        runs = [(_run(det, f, params), g, v) for f, g, v in crossing]
        row = dict(name=name, fps=float(np.mean([r[2] for r, _, _ in runs])),
                   crossing=_pooled([_clip_scores(r[1], g, v) for r, g, v in runs]),
                   in_place=_pooled([_clip_scores(_run(det, f, params)[1], g, v) for f, g, v in in_place]))
        if dancer is not None:
            ddets, dtracks, dfps = _run(det, dancer, params)
            best = max(dtracks.values(), key=lambda t: len(t.frames), default=None)
            row.update(dancer_det=float(np.mean([len(d) > 0 for d in ddets])),
                       dancer=0.0 if best is None else len(best.frames) / len(dancer),
                       dancer_tracks=len(dtracks), dancer_fps=dfps)
        rows.append(row)
        print(row, flush=True)
    if out_md:
        write_doc(rows, out_md, clip_frames, None if dancer is None else len(dancer))
    return rows


def _fmt(x, pct=True):
    return "—" if x is None else (f"{100 * x:.0f} %" if pct else f"{x:.1f}")


def _score_cells(sc) -> str:
    if sc is None:
        return "— | — | — | — | —"
    return f"{_fmt(sc['recall'])} | {_fmt(sc['sq70'])} | {_fmt(sc['iou70'])} | {sc['ids']} | {sc['tracks']}"


def write_doc(rows, path, clip_frames, dancer_frames):
    head = "recall (IoU>0.5) | square IoU>0.7 | box IoU>0.7 | id switches | tracks"
    lines = [f"Rendered clips, {clip_frames} frames each, 640x360: **crossing** = two mannequins walking across "
             f"each other (`render_crossing_clip`, seeds {', '.join(map(str, CROSSING_SEEDS))}: 10 people); "
             f"**in place** = three mannequins crouching, kicking, turning (`render_motion_clip`, seeds "
             f"{', '.join(map(str, IN_PLACE_SEEDS))}: 9 people). Rates over the (frame, person) pairs with at least "
             f"half the person visible, averaged over the clips; id switches and tracks summed. dancer.mp4: "
             f"{dancer_frames or 'absent'} frames, 1920x1080. Frames/s: detection + tracking, CPU, 2 threads.", "",
             f"| candidate | crossing: {head.replace(' | ', ' | crossing: ')} | detection frames/s (640x360) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {_score_cells(r['crossing'])} | {_fmt(r['fps'], False)} |")
    lines += ["", f"| candidate | in place: {head.replace(' | ', ' | in place: ')} | dancer: frames with a detection | "
              "dancer: longest track covers | dancer: tracks | dancer frames/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows[1:]:
        lines.append(f"| {r['name']} | {_score_cells(r.get('in_place'))} | {_fmt(r.get('dancer_det'))} | "
                     f"{_fmt(r.get('dancer'))} | {r.get('dancer_tracks', '—')} | {_fmt(r.get('dancer_fps'), False)} |")
    p = Path(path)
    text = p.read_text() if p.exists() else ""
    start, end = "<!-- measure:begin -->", "<!-- measure:end -->"
    block = f"{start}\n" + "\n".join(lines) + f"\n{end}"
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
