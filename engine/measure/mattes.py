"""``python -m engine.measure.mattes``: how good and how fast the mattes of ``engine mattes`` are.

Writes ``docs/mattes.md`` (``--out``). Three parts:

1. **Rendered clips with exact labels** (``engine/data/clips.py``: the mannequin doing the
   procedural motions at random headings, 640x480, seeds 2000+): each clip is written as a video,
   ``engine run`` (the default landmark estimator) makes its result, and the mattes made from that
   result (``engine.mattes.MatteMaker``, exactly what the command writes) are compared with the
   renderer's mask of the true mesh: IoU, boundary error (mean symmetric distance between the two
   outlines, px) and edge flicker (below). The same with the true pose put through the matte
   pipeline ("true pose" rows): what the matte pipeline itself loses (no pose correctives in the
   rig), without estimation error.
2. **dancer.mp4** (real footage): the mattes of ``engine run``'s result against BlazePose's own
   person segmentation (the landmark network's segmentation output on the person's crops, which
   follow the person as in ``engine run``; logits warped back to the frame, threshold 0.5); IoU,
   boundary error, edge flicker of both.
3. **Speed**: ``make_mattes`` (the command's work, files included) on the 1080p dancer result, per
   output format, and on a 3-person 1080p result (the dancer's track three times, side by side).

Edge flicker (px): for frames t-1, t, t+1 of a person, the signed distance fields of the
matte's outline at t-1 and t+1 are averaged (their mid-way outline); flicker is the mean
absolute value of that average at the outline pixels of frame t. An outline that moves at a
steady speed scores about 0 (the motion explains it); one that jumps back and forth scores
the size of the jumps. It is a second temporal difference of the edge position, so real
accelerations count too: on renders the true masks' own figure is that floor.
Area flicker (%): mean |A(t+1) - 2 A(t) + A(t-1)| / A(t), the same idea for the matte's area.

    python -m engine.measure.mattes [--out docs/mattes.md] [--clips-per-motion 2] [--frames 30]
        [--dancer-result /tmp/dancer_lm.npz] [--cache DIR] [--skip-renders] [--skip-dancer] [--skip-speed]
        [--json FIGURES.json]
    python -m engine.measure.mattes --report-from FIGURES.json     (the report again, no measuring)
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.measure.report import write_section

ROOT = Path(__file__).resolve().parents[2]
FOOTAGE = ROOT.parent / "shared" / "footage"
SEED0 = 2000
GOAL_RENDERS, GOAL_DANCER = 0.9, 0.8


# ----------------------------------------------------------------------------- metrics
def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it (frame borders do not count)."""
    m = np.asarray(mask, bool)
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def _distance_to(pixels: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``pixels``."""
    import cv2

    return cv2.distanceTransform((~pixels).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def boundary_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean symmetric distance between the outlines of two non-empty masks (px)."""
    oa, ob = outline(a), outline(b)
    if not oa.any() or not ob.any():
        return float("nan")
    return 0.5 * (float(_distance_to(ob)[oa].mean()) + float(_distance_to(oa)[ob].mean()))


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """+ inside, - outside, 0 on the outline between pixel centres (px), as engine.mattes.soften."""
    import cv2

    m = np.asarray(mask, bool)
    d_in = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.where(m, d_in - 0.5, 0.5 - d_out)


def edge_flicker(masks: list) -> tuple:
    """Per-frame masks (None = no matte) -> (edge flicker px, area flicker fraction), over the
    frames whose two neighbours have a matte too; (nan, nan) when there are none."""
    edge, area = [], []
    for t in range(1, len(masks) - 1):
        a, b, c = masks[t - 1], masks[t], masks[t + 1]
        if a is None or b is None or c is None or not (a.any() and b.any() and c.any()):
            continue
        box = _union_box([a, b, c], margin=8)
        a, b, c = (m[box] for m in (a, b, c))
        mid = 0.5 * (signed_distance(a) + signed_distance(c))
        o = outline(b)
        edge.append(float(np.abs(mid[o]).mean()))
        na, nb, nc = (np.count_nonzero(m) for m in (a, b, c))
        area.append(abs(na - 2 * nb + nc) / nb)
    if not edge:
        return float("nan"), float("nan")
    return float(np.mean(edge)), float(np.mean(area))


def _union_box(masks, margin: int):
    m = np.logical_or.reduce(masks)
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    h, w = m.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)))


def scores(pred: list, ref: list) -> dict:
    """Per-frame predicted masks (None: no matte) against reference masks."""
    ious, be, height = [], [], []
    for p, r in zip(pred, ref):
        if r is None or not r.any():
            continue
        if p is None or not p.any():
            ious.append(0.0)
            continue
        ious.append(iou(p, r))
        be.append(boundary_error(p, r))
        rows = np.flatnonzero(r.any(1))
        height.append(rows[-1] - rows[0] + 1)
    seen = [i for i, p, r in zip(range(len(pred)), pred, ref) if p is not None and p.any() and r is not None and r.any()]
    return {"frames": len(ious), "matted": len(seen), "iou": float(np.mean(ious)) if ious else float("nan"),
            "iou_matted": float(np.mean([x for x in ious if x > 0])) if be else float("nan"),
            "iou_p10": float(np.percentile(ious, 10)) if ious else float("nan"),
            "boundary_px": float(np.nanmean(be)) if be else float("nan"),
            "height_px": float(np.mean(height)) if height else float("nan")}


# ----------------------------------------------------------------------------- mattes of a result
def result_masks(result, tid: str, frames, options=None, video=None) -> list:
    """The visible matte of track ``tid`` on result frames ``frames`` (consecutive; None where
    not shown), made by engine.mattes exactly as the command makes it (all people of the result
    rendered). ``video``: the plate, for ``options.alpha == "segmentation"``."""
    from engine.common.result_schema import track_order
    from engine.mattes import MatteMaker, Options, plate_frames

    options = options or Options(formats=("png",))
    maker = MatteMaker(result, sorted(result.tracks, key=track_order), options)
    frames = [int(f) for f in frames]
    off = int(result.meta.get("frame_start") or 0)
    plate = (plate_frames(video, off + frames[0], off + frames[-1] + 1)
             if options.alpha == "segmentation" and frames else None)
    maker.open()
    try:
        out = []
        for f in frames:
            fm = maker.frame(f, None if plate is None else next(plate))
            m = fm.visible[tid]
            out.append(m if m.any() else None)
        return out
    finally:
        maker.close()


def _engine_run(video, out, *extra) -> dict:
    from engine.run import Progress, build_parser, run

    args = build_parser("run").parse_args([str(video), "-o", str(out), *map(str, extra)])
    return run(args, Progress(None), {"flag": False})


def _write_video(frames: np.ndarray, path: Path, fps: float = 30.0) -> Path:
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def true_result(body, clip, fps: float = 30.0):
    """A result holding the clip's true pose (rig from the body), for the 'true pose' rows."""
    from engine.common import result_schema as rs

    T = len(clip.rotmat)
    rest_v, rest_j = body.rest_shape(clip.betas)
    # clips.py places the smplx mesh (root joint at its rest position) with an offset: recover it
    # from the joints (FK keeps joint 0 at rest_j[0]).
    transl = clip.joints[:, 0] - rest_j[0]
    track = rs.TrackResult.from_rotmats(
        frames=np.arange(T), transl=transl, global_orient_rotmat=clip.rotmat[:, 0], body_pose_rotmat=clip.rotmat[:, 1:],
        betas=np.repeat(clip.betas[None], T, 0), confidence=np.ones(T), rest_vertices=rest_v.astype(np.float32),
        rest_joints=rest_j)
    h, w = clip.frames.shape[1:3]
    meta = rs.make_meta(video={"path": "clip", "width": w, "height": h, "fps": fps, "frame_count": T},
                        camera={"focal_px": clip.focal_px, "principal_point": [w / 2, h / 2]}, frames_done=T,
                        track_ids=["1"], frame_start=0)
    return rs.MotionResult(meta=meta, tracks={"1": track}, timestamps=np.arange(T) / fps,
                           body=rs.BodyRig(faces=body.faces, weights=body.weights.astype(np.float32), parents=body.parents))


def measure_renders(clips_per_motion: int, frames: int, log, cache=None) -> dict:
    from engine.body.mannequin import build_mannequin
    from engine.common.result_schema import read_result
    from engine.data.clips import MOTIONS, render_person_clip
    from engine.render.renderer import Renderer

    from engine.mattes import Options

    body = build_mannequin()
    est, true, gt_flicker, est_flicker, true_flicker = [], [], [], [], []
    seg, seg_flicker = [], []
    n_clips = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(cache) if cache else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        renderer = Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1)
        try:
            for m, motion in enumerate(MOTIONS):
                for k in range(clips_per_motion):
                    seed = SEED0 + 100 * m + k
                    clip = render_person_clip(body, motion, frames, seed, renderer=renderer)
                    gt = [renderer.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
                    n_clips += 1
                    # the estimator's result (cached by seed and length)
                    res_path = folder / f"clip_{seed}_{frames}.npz"
                    video = folder / f"clip_{seed}_{frames}.avi"
                    if not video.is_file():
                        _write_video(clip.frames, video)
                    if not res_path.is_file():
                        try:
                            _engine_run(video, res_path)
                        except Exception as exc:  # noqa: BLE001 - no person found: every frame scores 0
                            log(f"{motion} seed {seed}: engine run failed ({exc})")
                    if res_path.is_file():
                        res = read_result(res_path)
                        tid = max(res.tracks, key=lambda t: len(res.tracks[t].frames))
                        pred = result_masks(res, tid, range(frames))
                        pred_seg = result_masks(res, tid, range(frames), Options(formats=("png",),
                                                                                 alpha="segmentation"), video)
                    else:
                        pred = pred_seg = [None] * frames
                    tr = result_masks(true_result(body, clip), "1", range(frames))
                    est.append(scores(pred, gt))
                    seg.append(scores(pred_seg, gt))
                    seg_flicker.append(edge_flicker(pred_seg))
                    true.append(scores(tr, gt))
                    gt_flicker.append(edge_flicker(gt))
                    est_flicker.append(edge_flicker(pred))
                    true_flicker.append(edge_flicker(tr))
                    log(f"{motion} seed {seed}: estimated {est[-1]}, segmentation alpha {seg[-1]}, true pose {true[-1]}, "
                        f"flicker gt {gt_flicker[-1]} est {est_flicker[-1]}")
        finally:
            renderer.close()
    return {"clips": n_clips, "frames": frames, "estimated": _pool(est, est_flicker),
            "segmentation": _pool(seg, seg_flicker), "true_pose": _pool(true, true_flicker),
            "ground_truth_flicker": _mean_pairs(gt_flicker)}


def _pool(rows: list, flicker: list) -> dict:
    """Frame-weighted means of per-clip scores."""
    n = np.array([r["frames"] for r in rows], float)
    nm = np.array([r["matted"] for r in rows], float)

    def wmean(key, w):
        v = np.array([r[key] for r in rows], float)
        ok = np.isfinite(v) & (w > 0)
        return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else float("nan")

    return {"frames": int(n.sum()), "matted": int(nm.sum()), "iou": wmean("iou", n), "iou_matted": wmean("iou_matted", nm),
            "iou_p10_worst_clip": float(np.nanmin([r["iou_p10"] for r in rows])),
            "boundary_px": wmean("boundary_px", nm), "height_px": wmean("height_px", n),
            "edge_flicker_px": _mean_pairs(flicker)[0], "area_flicker": _mean_pairs(flicker)[1]}


def _mean_pairs(pairs) -> tuple:
    a = np.array([p[0] for p in pairs], float)
    b = np.array([p[1] for p in pairs], float)
    return (float(np.nanmean(a)) if np.isfinite(a).any() else float("nan"),
            float(np.nanmean(b)) if np.isfinite(b).any() else float("nan"))


# ----------------------------------------------------------------------------- dancer
def segmentation_masks(video, result, tid: str, size: str = "full") -> list:
    """BlazePose's person segmentation for track ``tid`` on each result frame (None where the
    track has no box or the model sees nobody): ``engine.landmarks.segmentation``, the crops
    following the person as engine run crops, probability > 0.5."""
    from engine.landmarks.assets import converted_path
    from engine.landmarks.landmarker import Landmarker
    from engine.landmarks.segmentation import PersonSegmenter
    from engine.people.tracking import square_to_xyxy
    from engine.video.decode import iter_frames

    tr = result.tracks[tid]
    off = int(result.meta.get("frame_start") or 0)
    boxes = {int(f): b for f, b in zip(tr.frames, tr.boxes)}
    segmenter = PersonSegmenter(Landmarker(converted_path(size), size, device="cpu"))
    out = []
    n = int(result.meta["frames_done"])
    for frame in iter_frames(video, start=off, stop=off + n):
        b = boxes.get(frame.index - off)
        if b is None:
            segmenter.step(frame.image, [])
            out.append(None)
            continue
        got = segmenter.step(frame.image, [(1, square_to_xyxy(b))])[1]
        out.append(None if got is None else got.mask(*frame.image.shape[:2]))
    return out


def measure_dancer(result_path, log) -> dict:
    from engine.common.result_schema import read_result

    video = FOOTAGE / "dancer.mp4"
    res = read_result(result_path)
    tid = max(res.tracks, key=lambda t: len(res.tracks[t].frames))
    n = int(res.meta["frames_done"])
    from engine.mattes import Options

    ref = segmentation_masks(video, res, tid)
    pred = result_masks(res, tid, range(n))
    out = {"frames": n, "track": tid, **scores(pred, ref)}
    out["edge_flicker_px"], out["area_flicker"] = edge_flicker(pred)
    pred_seg = result_masks(res, tid, range(n), Options(formats=("png",), alpha="segmentation"), video)
    out["segmentation"] = scores(pred_seg, ref)
    out["segmentation"]["edge_flicker_px"], out["segmentation"]["area_flicker"] = edge_flicker(pred_seg)
    out["ref_edge_flicker_px"], out["ref_area_flicker"] = edge_flicker(ref)
    out["ref_frames"] = int(sum(r is not None and r.any() for r in ref))
    log(f"dancer: {out}")
    return out


# ----------------------------------------------------------------------------- speed
def measure_speed(result_path, log) -> list:
    from engine.common import result_schema as rs
    from engine.mattes import Options, make_mattes

    rows = []
    res = rs.read_result(result_path)
    with tempfile.TemporaryDirectory() as tmp:
        three = Path(tmp) / "three.npz"
        tid = next(iter(res.tracks))
        tr = res.tracks[tid]
        tracks = {}
        for k, dx in enumerate((-0.7, 0.0, 0.7)):
            t = rs.TrackResult(**{**tr.arrays(), "transl": tr.transl + np.array([dx, 0.0, 0.4 * k])})
            tracks[str(k + 1)] = t
        meta = dict(res.meta, track_ids=list(tracks))
        rs.write_result(rs.MotionResult(meta=meta, tracks=tracks, timestamps=res.timestamps, body=res.body), three)
        cases = [("1 person", result_path, "png", "body"), ("1 person", result_path, "png16", "body"),
                 ("1 person", result_path, "exr", "body"), ("1 person", result_path, "all", "body"),
                 ("3 people", three, "all", "body"), ("1 person", result_path, "png", "segmentation")]
        for label, path, fmt, alpha in cases:
            from engine.mattes import FORMATS
            out = Path(tmp) / f"out_{fmt}_{label[0]}_{alpha}"
            t0 = time.perf_counter()
            done = make_mattes(path, out, video=FOOTAGE / "dancer.mp4",
                               options=Options(formats=FORMATS[fmt], alpha=alpha))
            secs = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in out.iterdir()) / done["frames"]
            rows.append({"people": label, "format": fmt, "alpha": alpha, "frames": done["frames"], "seconds": secs,
                         "fps": done["frames"] / secs, "mb_per_frame": size / 1e6,
                         "size": f"{res.meta['video']['width']}x{res.meta['video']['height']}"})
            log(f"speed: {rows[-1]}")
    return rows


# ----------------------------------------------------------------------------- report
def _f(x, fmt="{:.3f}"):
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def report(renders, dancer, speed, command: str) -> str:
    lines = ["## Accuracy and speed (measured)", "",
             "`python -m engine mattes` (docs/engine-cli.md, \"mattes\"): each person's fitted body rendered through "
             "the result's camera at the plate's size (`--alpha body`, the default), or the person as the landmark "
             "network segments them on the plate near that body (`--alpha segmentation`). Figures from this machine "
             "(2 CPU cores, Mesa llvmpipe), made by:",
             "", f"    {command}", "",
             "IoU: intersection over union of a person's visible matte and the reference mask, mean over the frames "
             "where the reference has the person (a frame without a matte scores 0). Boundary error: mean symmetric "
             "distance between the two outlines, pixels, over the frames with both. Edge flicker: the matte's outline "
             "at frame t against the mid-way outline of frames t-1 and t+1 (mean |average of their signed distance "
             "fields| on the outline of t, pixels): a steadily moving edge scores about 0, one that jumps back and "
             "forth scores the size of the jumps; real accelerations count too, so on renders the true masks' own "
             "figure is the floor. Area flicker: mean |A(t+1) - 2 A(t) + A(t-1)| / A(t).", ""]
    if renders:
        e, t = renders["estimated"], renders["true_pose"]
        gf = renders["ground_truth_flicker"]
        lines += ["### Rendered clips (against the renderer's ground-truth masks)", "",
                  f"{renders['clips']} clips x {renders['frames']} frames (`engine/data/clips.py`: the mannequin doing "
                  "walk / turn / reach / crouch / kick at random headings, back views included, 2.6-4 m from a 55 "
                  "degree camera, 640x480, random backgrounds; seeds 2000+), each written as an MJPG video and run "
                  "through `python -m engine run` (defaults: landmark estimator, `full` model, default smoothing). "
                  "\"true pose\": the clip's exact pose and shape put through the same matte code (a result holding the "
                  "true rotations, translation and rest mesh): what the matte pipeline itself loses (posing from the "
                  "rig, camera, compositing); the mannequin has no pose correctives, so it can be exact. Person "
                  f"height about {e['height_px']:.0f} px.", "",
                  "| mattes from | frames (with a matte) | IoU | IoU where matted | worst clip's 10th pct IoU | "
                  "boundary error px | edge flicker px | area flicker |",
                  "|---|---|---|---|---|---|---|---|"]
        sg = renders.get("segmentation")
        rows = [("`engine run` result (estimated)", e)] + (
            [("`engine run` result, `--alpha segmentation`", sg)] if sg else []) + [("true pose", t)]
        for name, r in rows:
            lines.append(f"| {name} | {r['frames']} ({r['matted']}) | {_f(r['iou'])} | {_f(r['iou_matted'])} | "
                         f"{_f(r['iou_p10_worst_clip'])} | {_f(r['boundary_px'], '{:.2f}')} | "
                         f"{_f(r['edge_flicker_px'], '{:.2f}')} | {_f(r['area_flicker'], '{:.1%}')} |")
        lines.append(f"| ground-truth masks (floor of the flicker figures) | - | - | - | - | - | "
                     f"{_f(gf[0], '{:.2f}')} | {_f(gf[1], '{:.1%}')} |")
        met = e["iou"] >= GOAL_RENDERS
        lines += ["", f"Goal IoU >= {GOAL_RENDERS} on renders, body mattes: **{'met' if met else 'not met'}** "
                  f"({_f(e['iou'])} for the estimated result; {_f(t['iou'])} for the true pose)."
                  + ("" if met else " The matte code reproduces the renderer's mask on the true pose, so the gap is "
                     "the estimator's pose and shape error (docs/accuracy.md): limbs a few pixels off on a "
                     f"{e['height_px']:.0f} px person cost much of their thin area.") + " Edge flicker beyond what the "
                  f"motion explains: {_f(e['edge_flicker_px'] - gf[0], '{:.2f}')} px (estimated minus the true masks' "
                  "floor)."]
        if sg:
            lines += ["", f"With `--alpha segmentation`: **{'met' if sg['iou'] >= GOAL_RENDERS else 'not met'}** "
                      f"({_f(sg['iou'])}): the segmentation follows the mannequin on the plate where the fitted body is "
                      "off, and the body only bounds it (0.1 body heights around it)."]
        lines.append("")
    if dancer:
        d = dancer
        lines += ["### dancer.mp4 (against BlazePose's own segmentation)", "",
                  f"1920x1080, {d['frames']} frames, the result of `python -m engine run dancer.mp4` (defaults). "
                  "Reference: the segmentation output of the BlazePose GHUM `full` landmark network (the same network "
                  "the estimator runs) on the person's crops, the crops following the person as `engine run` does, "
                  "logits warped back to the frame and thresholded at probability 0.5. It is an independent-enough "
                  "reference for the outline (a separate output head, trained on real people, with hair and "
                  "clothes), not ground truth: it includes loose clothing and hair the body model does not have.", "",
                  "| | frames (with a matte) | IoU | IoU p10 | boundary error px | edge flicker px | area flicker |",
                  "|---|---|---|---|---|---|---|",
                  f"| mattes (`engine mattes`) | {d['frames']} ({d['matted']}) | {_f(d['iou'])} | {_f(d['iou_p10'])} | "
                  f"{_f(d['boundary_px'], '{:.2f}')} | {_f(d['edge_flicker_px'], '{:.2f}')} | {_f(d['area_flicker'], '{:.1%}')} |",
                  *([f"| mattes, `--alpha segmentation` (not independent: made from the reference) | "
                     f"{d['frames']} ({d['segmentation']['matted']}) | {_f(d['segmentation']['iou'])} | "
                     f"{_f(d['segmentation']['iou_p10'])} | {_f(d['segmentation']['boundary_px'], '{:.2f}')} | "
                     f"{_f(d['segmentation']['edge_flicker_px'], '{:.2f}')} | "
                     f"{_f(d['segmentation']['area_flicker'], '{:.1%}')} |"] if d.get("segmentation") else []),
                  f"| BlazePose segmentation (reference) | {d['ref_frames']} | - | - | - | "
                  f"{_f(d['ref_edge_flicker_px'], '{:.2f}')} | {_f(d['ref_area_flicker'], '{:.1%}')} |", "",
                  f"Person height about {d['height_px']:.0f} px. Goal IoU >= {GOAL_DANCER} against the segmentation, "
                  f"body mattes: **{'met' if d['iou'] >= GOAL_DANCER else 'not met'}** ({_f(d['iou'])}). The "
                  "`--alpha segmentation` row only shows what the body bound and the binarisation leave of the "
                  "reference; it is no evidence of accuracy on real footage (the renders above are).", ""]
    if speed:
        lines += ["### Speed", "",
                  "`engine.mattes.make_mattes` (what the command does: posing, rendering, compositing, contours, "
                  "encoding and writing every file with fsync and rename) on the dancer result at 1920x1080, all "
                  "its frames; \"3 people\": the dancer's track three times side by side at different depths; "
                  "`segmentation`: `--alpha segmentation`, which adds the landmark network on each person's crop "
                  "(one or two runs a person and frame, as `engine run` follows people). On these 2 CPU cores the "
                  "same case varied by up to 40 % between runs while other work shared them: read the table as "
                  "the order of magnitude and the ratios between cases. Per frame at 1080p, unloaded: render "
                  "(llvmpipe, 2 threads) about 40 ms a person, compositing and feathering 15 ms, 10-20 ms a PNG, "
                  "about 70 ms the EXR (ZIP).", "",
                  "| people | format | alpha | frames | frames/s | MB per frame |", "|---|---|---|---|---|---|"]
        for r in speed:
            lines.append(f"| {r['people']} | {r['format']} | {r.get('alpha', 'body')} | {r['frames']} | {r['fps']:.1f} | "
                         f"{r['mb_per_frame']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "mattes.md"))
    p.add_argument("--clips-per-motion", type=int, default=2)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--dancer-result", default="/tmp/dancer_lm.npz",
                   help="result of `python -m engine run dancer.mp4` (made there when missing)")
    p.add_argument("--cache", default=None, help="keep the rendered clips' results in this folder")
    p.add_argument("--skip-renders", action="store_true")
    p.add_argument("--skip-dancer", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--json", default=None, help="also write the raw figures here")
    p.add_argument("--report-from", default=None, help="no measuring: rewrite the report from a --json file")
    args = p.parse_args(argv)
    command = "python -m engine.measure.mattes " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        write_section(Path(args.out), report(saved["renders"], saved["dancer"], saved["speed"], saved["command"]),
                      "engine.measure.mattes")
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    dancer_result = Path(args.dancer_result)
    if not (args.skip_dancer and args.skip_speed) and not dancer_result.is_file():
        log(f"running engine on dancer.mp4 -> {dancer_result}")
        _engine_run(FOOTAGE / "dancer.mp4", dancer_result)
    renders = None if args.skip_renders else measure_renders(args.clips_per_motion, args.frames, log, args.cache)
    dancer = None if args.skip_dancer else measure_dancer(dancer_result, log)
    speed = None if args.skip_speed else measure_speed(dancer_result, log)
    if args.json:                                       # first: the figures survive a failing report
        Path(args.json).write_text(json.dumps({"renders": renders, "dancer": dancer, "speed": speed,
                                               "command": command.strip()}, indent=1, default=float))
    write_section(Path(args.out), report(renders, dancer, speed, command.strip()), "engine.measure.mattes")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
