"""``python -m engine.measure.accuracy``: how good the default estimator is, in numbers.

Writes ``docs/accuracy.md`` (``--out``). Two parts:

1. **Rendered clips with exact labels** (``engine/data/clips.py``: the mannequin doing the
   procedural motions at random headings, back views included, held out: seeds 1000+): per
   landmark model size, MPJPE / PA-MPJPE over 12 joints (shoulders, elbows, wrists, hips,
   knees, ankles; aligned at the hip midpoint) and PVE (all vertices, same alignment) of

   * the fitted body (BlazePose GHUM landmarks -> our fit, engine/fit),
   * BlazePose's raw world landmarks (its 12 corresponding points; no mesh, so no PVE),
   * the untrained PyMAF network (what ``--estimator pymaf`` gives without a checkpoint),
   * PyMAF's heads on the BlazePose trunk (``--estimator pymaf-blazepose``; ``--heads``),

   plus how often the landmark model found the person and how often its left and right were
   swapped before and after the fit's repair.
2. **Real footage** (dancer.mp4, vtest.avi, photos from scikit-image): ``engine run`` as a
   user runs it; the fitted rig's projected joints against the landmark model's own 2D
   landmarks (10 joints with the same meaning: shoulders, elbows, wrists, knees, ankles), as
   mean distance in % of the person's height and PCK@0.05 (share within 5 % of the height);
   jitter (mean second difference of those projected joints, % of height per frame^2) without
   and with the default smoothing; then the same for ``--estimator pymaf-blazepose``, scored on
   the person-frames both have against the landmark run's 2D landmarks.

   Sections of the file after ``KEEP_BELOW`` (made by other commands) are kept.

    python -m engine.measure.accuracy [--out docs/accuracy.md] [--sizes lite,full,heavy]
        [--clips-per-motion 3] [--frames 30] [--vtest-frames 300] [--heads PATH | --no-heads]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FOOTAGE = ROOT.parent / "shared" / "footage"
# 12 joints with the same meaning in SMPL and BlazePose: shoulders, elbows, wrists, hips, knees, ankles
SMPL_12 = [16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]
BLAZEPOSE_12 = [11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
HIPS_IN_12 = [6, 7]
# on real footage the hips are left out: BlazePose's hip points are not SMPL's hip joints
SMPL_10 = [16, 17, 18, 19, 20, 21, 4, 5, 7, 8]
BLAZEPOSE_10 = [11, 12, 13, 14, 15, 16, 25, 26, 27, 28]
SEED0 = 1000
# in docs/accuracy.md, everything from this line on is kept when the report is rewritten
KEEP_BELOW = "<!-- sections below: other commands (each names its own) -->"


# ----------------------------------------------------------------------------- metrics
def hip_aligned(points: np.ndarray, hips=HIPS_IN_12) -> np.ndarray:
    """(T, N, 3) -> the same with the midpoint of the two hip points at the origin."""
    return points - points[:, hips].mean(1, keepdims=True)


def procrustes_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-aligned predictions: (T, N, 3), (T, N, 3) -> (T, N, 3) (rotation, scale,
    translation per frame, least squares)."""
    out = np.empty_like(pred)
    for t in range(len(pred)):
        p, g = pred[t], gt[t]
        mp, mg = p.mean(0), g.mean(0)
        P, G = p - mp, g - mg
        U, S, Vt = np.linalg.svd(P.T @ G)
        d = np.sign(np.linalg.det(U @ Vt))
        D = np.diag([1, 1, d])
        R = (U @ D @ Vt).T
        s = (S * np.diag(D)).sum() / (P ** 2).sum()
        out[t] = s * P @ R.T + mg
    return out


def mpjpe_mm(pred, gt) -> float:
    return float(np.linalg.norm(hip_aligned(pred) - hip_aligned(gt), axis=-1).mean() * 1000)


def pa_mpjpe_mm(pred, gt) -> float:
    return float(np.linalg.norm(procrustes_aligned(pred, gt) - gt, axis=-1).mean() * 1000)


def pve_mm(pred_v, gt_v, pred_hips, gt_hips) -> float:
    """Vertices (T, V, 3) aligned at their own hip midpoints (T, 3)."""
    return float(np.linalg.norm((pred_v - pred_hips[:, None]) - (gt_v - gt_hips[:, None]), axis=-1).mean() * 1000)


def person_height_px(track) -> np.ndarray:
    """A result track -> (T,) the person's size in pixels as BlazePose's alignment estimates it:
    the crop side / 1.25 (the crop is 1.25 x the circle around the whole body). Unlike nose to
    heel it holds when the legs are out of view or the person crouches."""
    from engine.landmarks.roi import SCALE

    return np.asarray(track.boxes, np.float64)[:, 2] / SCALE


def landmark_distances(res, tid) -> np.ndarray:
    """Projected rig joints vs the landmark model's 2D landmarks of the same track, over the
    joints BlazePose calls visible (>= 0.5): distances in units of the person's size (flat)."""
    tr = res.tracks[tid]
    uv = projected_10(res, tid)
    lm = tr.landmarks2d[:, BLAZEPOSE_10]
    d = np.linalg.norm(uv - lm[..., :2], axis=-1) / person_height_px(tr)[:, None]
    return d[lm[..., 2] >= 0.5]


def jitter_rel(uv: np.ndarray, height: np.ndarray, frames: np.ndarray) -> float:
    """Mean |second difference| of projected joints (T, N, 2) over runs of consecutive frames,
    in % of the person's height per frame^2."""
    ok = (np.diff(frames[:-1]) == 1) & (np.diff(frames[1:]) == 1)
    if not ok.any():
        return float("nan")
    acc = np.linalg.norm(uv[2:] - 2 * uv[1:-1] + uv[:-2], axis=-1)[ok] / height[1:-1][ok, None]
    return float(acc.mean() * 100)


# ----------------------------------------------------------------------------- synthetic
def _posed_vertices(smpl, rotmat, betas):
    import torch

    with torch.no_grad():
        out = smpl.pose(torch.as_tensor(rotmat, dtype=torch.float32),
                        torch.as_tensor(np.repeat(np.asarray(betas, np.float32)[None], len(rotmat), 0)
                                        if np.ndim(betas) == 1 else betas, dtype=torch.float32))
    return out.vertices.double().numpy()


def _landmarks_on_clip(clip, follower):
    """The follower over a clip with its true boxes -> (observations list with None gaps)."""
    follower.next_roi.clear()
    return [follower.step(frame, [(1, box)]).get(1) for frame, box in zip(clip.frames, clip.boxes)]


def _swapped_fraction(world: np.ndarray, gt12: np.ndarray) -> float:
    """Share of frames whose left/right (shoulders..ankles) fit the truth better exchanged.

    Compared in camera axes at the hip midpoint, without a rotation: a similarity alignment
    would turn a front/back confusion (left and right exchanged and the body turned round)
    into a match."""
    from engine.fit.correspondence import swap_permutation

    perm = swap_permutation()
    g = hip_aligned(gt12)
    e0 = np.linalg.norm(hip_aligned(world[:, BLAZEPOSE_12]) - g, axis=-1).mean(1)
    e1 = np.linalg.norm(hip_aligned(world[:, perm][:, BLAZEPOSE_12]) - g, axis=-1).mean(1)
    return float((e1 < e0 - 0.02).mean())


def network_on_clips(clips, predictor, body) -> dict:
    """A PyMAF ``Predictor`` on official crops from the clips' true boxes -> {frames, mpjpe,
    pa_mpjpe, pve, frames_per_s} (the network alone, 2 threads)."""
    from engine.common.kinematics import forward_kinematics
    from engine.people.tracking import xyxy_to_square
    from engine.preprocess import crop_person

    pj, gj, pv, gv, ph, gh, seconds = [], [], [], [], [], [], 0.0
    for clip in clips:
        sq = xyxy_to_square(clip.boxes)
        crops = np.stack([crop_person(f, s[:2], s[2]) for f, s in zip(clip.frames, sq)])
        t0 = time.perf_counter()
        fin = predictor.predict(crops).final
        seconds += time.perf_counter() - t0
        R = fin.rotmat.numpy().astype(np.float64)
        betas = fin.betas.numpy().astype(np.float64)
        joints = np.stack([forward_kinematics(R[i], body.rest_shape(betas[i])[1], body.parents)[0]
                           for i in range(len(R))])
        pj.append(joints[:, SMPL_12])
        gj.append(clip.joints[:, SMPL_12])
        pv.append(fin.vertices.numpy().astype(np.float64))
        ph.append(joints[:, [1, 2]].mean(1))
        gv.append(clip.vertices)
        gh.append(clip.joints[:, [1, 2]].mean(1))
    pj, gj = np.concatenate(pj), np.concatenate(gj)
    return {"frames": len(pj), "mpjpe": mpjpe_mm(pj, gj), "pa_mpjpe": pa_mpjpe_mm(pj, gj),
            "pve": pve_mm(np.concatenate(pv), np.concatenate(gv), np.concatenate(ph), np.concatenate(gh)),
            "frames_per_s": len(pj) / max(seconds, 1e-9)}


def measure_synthetic(sizes, clips_per_motion: int, frames: int, log, heads=None, image_weight=None) -> dict:
    """-> {size: {...metrics...}, "pymaf": {...}, "heads": {...} (with ``heads``, a weights
    file of PyMAF's heads on the BlazePose trunk)} on the same rendered clips. ``image_weight``:
    the landmark fit's ``FitParams.weight_2d`` (default: the shipped one)."""
    import torch

    from engine.body.mannequin import build_mannequin
    from engine.body.smpl_torch import SMPL
    from engine.fit.correspondence import landmark_basis
    from engine.fit.fit import FitParams, fit_track
    from engine.landmarks.assets import converted_path
    from engine.landmarks.landmarker import Landmarker, PersonFollower
    from engine.data.clips import MOTIONS, render_person_clip
    from engine.model.inference import Predictor
    from engine.model.pymaf import ModelConfig, PyMAF
    from engine.render.renderer import Renderer

    fit_params = FitParams() if image_weight is None else FitParams(weight_2d=image_weight)
    body = build_mannequin()
    smpl = SMPL(body).eval()
    basis = landmark_basis(body)
    renderer = Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1)
    clips = []
    try:
        for m, motion in enumerate(MOTIONS):
            for k in range(clips_per_motion):
                clips.append(render_person_clip(body, motion, frames, SEED0 + 100 * m + k, renderer=renderer))
    finally:
        renderer.close()
    log(f"rendered {len(clips)} clips x {frames} frames")
    out = {}
    for size in sizes:
        follower = PersonFollower(Landmarker(converted_path(size), size, device="cpu"))
        acc = {k: [] for k in ("fit_j", "gt_j", "raw_j", "fit_v", "gt_v", "fit_h", "gt_h", "gt12_raw")}
        found = total = 0
        swaps_raw, swaps_fit, t_fit, n_fit = [], [], 0.0, 0
        for clip in clips:
            obs = _landmarks_on_clip(clip, follower)
            seen = np.array([o is not None for o in obs])
            total += len(obs)
            found += int(seen.sum())
            if seen.sum() < 2:
                continue
            ob = [o for o in obs if o is not None]
            world = np.stack([o.world for o in ob])
            t0 = time.perf_counter()
            fit = fit_track(world, np.stack([o.image for o in ob]), np.stack([o.visibility for o in ob]),
                            np.array([o.presence for o in ob]), clip.focal_px, (320, 240), body=basis,
                            params=fit_params)
            t_fit += time.perf_counter() - t0
            n_fit += len(ob)
            v = fit.valid
            gt_j = clip.joints[seen][v]
            acc["fit_j"].append(fit.joints[v][:, SMPL_12])
            acc["gt_j"].append(gt_j[:, SMPL_12])
            acc["raw_j"].append(world[v][:, BLAZEPOSE_12])
            pv = _posed_vertices(smpl, fit.rotmat[v], fit.betas)
            acc["fit_v"].append(pv)
            acc["fit_h"].append(fit.joints[v][:, [1, 2]].mean(1) - fit.transl[v])   # posed without transl
            acc["gt_v"].append(clip.vertices[seen][v])
            acc["gt_h"].append(gt_j[:, [1, 2]].mean(1))
            swaps_raw.append(_swapped_fraction(world[v], gt_j[:, SMPL_12]) * v.sum())
            swaps_fit.append(_swapped_fraction(_fit_points_world(fit, v), gt_j[:, SMPL_12]) * v.sum())
        cat = {k: np.concatenate(a) for k, a in acc.items() if a}
        n = len(cat["fit_j"])
        out[size] = {
            "frames": total, "found": found, "fitted": n,
            "fit": {"mpjpe": mpjpe_mm(cat["fit_j"], cat["gt_j"]), "pa_mpjpe": pa_mpjpe_mm(cat["fit_j"], cat["gt_j"]),
                    "pve": pve_mm(cat["fit_v"], cat["gt_v"], cat["fit_h"], cat["gt_h"])},
            "raw": {"mpjpe": mpjpe_mm(cat["raw_j"], cat["gt_j"]), "pa_mpjpe": pa_mpjpe_mm(cat["raw_j"], cat["gt_j"])},
            "swapped_raw": sum(swaps_raw) / max(n, 1), "swapped_fit": sum(swaps_fit) / max(n, 1),
            "fit_frames_per_s": n_fit / max(t_fit, 1e-9),
        }
        log(f"{size}: {out[size]}")
    # networks on the same clips (official crops from the true boxes): the untrained PyMAF,
    # and PyMAF's heads on the BlazePose trunk when their weights are given
    torch.manual_seed(0)
    out["pymaf"] = network_on_clips(clips, Predictor(PyMAF(body, ModelConfig()).eval(), device="cpu"), body)
    log(f"pymaf (untrained): {out['pymaf']}")
    if heads is not None:
        from engine.model.checkpoint import load_pymaf
        out["heads"] = network_on_clips(clips, Predictor(load_pymaf(heads, body=body)[0], device="cpu"), body)
        log(f"pymaf-blazepose: {out['heads']}")
    out["clips"] = len(clips)
    out["clip_frames"] = frames
    return out


def _fit_points_world(fit, valid) -> np.ndarray:
    """The fitted rig's 12 joints placed in BlazePose landmark slots (T, 33, 3), so that the
    swap check reads them like landmarks."""
    pts = np.zeros((int(valid.sum()), 33, 3))
    pts[:, BLAZEPOSE_12] = fit.joints[valid][:, SMPL_12]
    return pts


# ----------------------------------------------------------------------------- real footage
def _engine_run(video, out, *extra) -> dict:
    from engine.run import Progress, build_parser, run

    args = build_parser("run").parse_args([str(video), "-o", str(out), *map(str, extra)])
    return run(args, Progress(None), {"flag": False})


def projected_10(res, tid) -> np.ndarray:
    from engine.common.camera import perspective_project
    from engine.common.kinematics import forward_kinematics

    tr = res.tracks[tid]
    R = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)
    J, _ = forward_kinematics(R, tr.rest_joints, res.body.parents)
    cam = res.meta["camera"]
    return perspective_project(J[:, SMPL_10], tr.transl, cam["focal_px"], np.array(cam["principal_point"]))


def frame_weighted_mean(pairs) -> float:
    """[(value, frames)] -> the mean weighted by frames, NaN values (too few frames) left out."""
    return float(np.nansum([j * n for j, n in pairs]) / max(sum(n for j, n in pairs if j == j), 1))


def footage_scores(raw, smooth) -> dict:
    """Two results of one video (--smoothing none, default) -> the scores over every track."""
    rel_raw, rel_smooth, jit_raw, jit_smooth, people, off = [], [], [], [], 0, 0
    for tid, tr in raw.tracks.items():
        h = person_height_px(tr)
        rel_raw.append(landmark_distances(raw, tid))
        off += int(rel_raw[-1].mean() > 0.05)
        jit_raw.append((jitter_rel(projected_10(raw, tid), h, tr.frames), len(tr.frames)))
        if tid in smooth.tracks:
            rel_smooth.append(landmark_distances(smooth, tid))
            jit_smooth.append((jitter_rel(projected_10(smooth, tid), h, smooth.tracks[tid].frames),
                               len(smooth.tracks[tid].frames)))
        people += 1
    r, s = np.concatenate(rel_raw), np.concatenate(rel_smooth)
    return {"people": people, "tracks_off": off,
            "person_frames": int(sum(len(t.frames) for t in raw.tracks.values())),
            "mean_rel": float(r.mean()), "pck05": float((r < 0.05).mean()),
            "mean_rel_smooth": float(s.mean()), "pck05_smooth": float((s < 0.05).mean()),
            "jitter_raw": frame_weighted_mean(jit_raw), "jitter_smooth": frame_weighted_mean(jit_smooth)}


def _matched(a, b) -> tuple:
    """Indices of the frames two tracks share -> (ia, ib, frames)."""
    frames, ia, ib = np.intersect1d(a.frames, b.frames, return_indices=True)
    return ia, ib, frames


def heads_footage_scores(lm_raw, lm_smooth, raw, smooth) -> dict:
    """PyMAF's heads (results ``raw`` / ``smooth``) and the landmark fit (``lm_raw`` /
    ``lm_smooth``) of one video, on the person-frames both have (same detector and tracker,
    so the same track ids): projected joints against BlazePose's 2D landmarks of the landmark
    run, in units of the person's size there; jitter on those frames.
    -> {"person_frames", "fit": {...}, "heads": {...}} with mean_rel, pck05, jitter_raw,
    jitter_smooth."""
    acc = {k: {"rel": [], "jit_raw": [], "jit_smooth": []} for k in ("fit", "heads")}
    person_frames = 0
    for tid, ref in lm_raw.tracks.items():
        if tid not in raw.tracks:
            continue
        ia, ib, frames = _matched(ref, raw.tracks[tid])
        if len(frames) == 0:
            continue
        person_frames += len(frames)
        h = person_height_px(ref)[ia]
        lm = ref.landmarks2d[ia][:, BLAZEPOSE_10]
        seen = lm[..., 2] >= 0.5
        for key, r_raw, r_smooth, idx in (("fit", lm_raw, lm_smooth, ia), ("heads", raw, smooth, ib)):
            uv = projected_10(r_raw, tid)[idx]
            acc[key]["rel"].append((np.linalg.norm(uv - lm[..., :2], axis=-1) / h[:, None])[seen])
            acc[key]["jit_raw"].append((jitter_rel(uv, h, frames), len(frames)))
            keep = np.isin(r_smooth.tracks[tid].frames, frames) if tid in r_smooth.tracks else np.zeros(0, bool)
            if keep.sum() == len(frames):      # the smoothed run kept the same frames
                uv_s = projected_10(r_smooth, tid)[keep]
                acc[key]["jit_smooth"].append((jitter_rel(uv_s, h, frames), len(frames)))
    out = {"person_frames": person_frames}
    for key, a in acc.items():
        r = np.concatenate(a["rel"]) if a["rel"] else np.zeros(0)
        out[key] = {"mean_rel": float(r.mean()) if r.size else float("nan"),
                    "pck05": float((r < 0.05).mean()) if r.size else float("nan"),
                    "jitter_raw": frame_weighted_mean(a["jit_raw"]),
                    "jitter_smooth": frame_weighted_mean(a["jit_smooth"])}
    return out


def measure_footage(vtest_frames: int, log, heads=None) -> dict:
    from engine.common.result_schema import read_result

    videos = {}
    if (FOOTAGE / "dancer.mp4").is_file():
        videos["dancer.mp4"] = (FOOTAGE / "dancer.mp4", [])
    if (FOOTAGE / "vtest.avi").is_file():
        videos["vtest.avi"] = (FOOTAGE / "vtest.avi", ["--stop", vtest_frames])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (video, extra) in videos.items():
            a, b = Path(tmp) / "raw.npz", Path(tmp) / "smooth.npz"
            done = _engine_run(video, a, "--smoothing", "none", *extra)
            _engine_run(video, b, *extra)
            lm_raw, lm_smooth = read_result(a), read_result(b)
            out[name] = {**footage_scores(lm_raw, lm_smooth), "frames": done["frames"], "fps": done["fps"]}
            if heads is not None:
                c, d = Path(tmp) / "heads_raw.npz", Path(tmp) / "heads_smooth.npz"
                net = ("--estimator", "pymaf-blazepose", "--checkpoint", heads)
                done_h = _engine_run(video, c, "--smoothing", "none", *net, *extra)
                _engine_run(video, d, *net, *extra)
                out[name]["heads"] = {**heads_footage_scores(lm_raw, lm_smooth, read_result(c), read_result(d)),
                                      "fps": done_h["fps"]}
            log(f"{name}: {out[name]}")
        photos = _photos(Path(tmp))
        if photos:
            raw, raw_heads = [], []
            for p, boxes in photos:
                try:
                    _engine_run(p, Path(tmp) / "photo.npz", "--smoothing", "none", "--boxes", boxes)
                except Exception as e:  # noqa: BLE001 - a photo without a person is reported, not fatal
                    log(f"{p.name}: {e}")
                    continue
                raw.append(read_result(Path(tmp) / "photo.npz"))
                if heads is not None:
                    _engine_run(p, Path(tmp) / "photo_heads.npz", "--smoothing", "none", "--boxes", boxes,
                                "--estimator", "pymaf-blazepose", "--checkpoint", heads)
                    raw_heads.append(read_result(Path(tmp) / "photo_heads.npz"))
            rel = [landmark_distances(res, tid) for res in raw for tid in res.tracks]
            if rel:
                r = np.concatenate(rel)
                out["photos"] = {"names": [p.name for p, _ in photos], "people": len(rel), "mean_rel": float(r.mean()),
                                 "pck05": float((r < 0.05).mean())}
                if raw_heads:
                    scores = [heads_footage_scores(a, a, b, b) for a, b in zip(raw, raw_heads)]
                    out["photos"]["heads"] = {
                        k: {m: float(np.mean([sc[k][m] for sc in scores])) for m in ("mean_rel", "pck05")}
                        for k in ("fit", "heads")}
                    out["photos"]["heads"]["person_frames"] = sum(sc["person_frames"] for sc in scores)
                log(f"photos: {out['photos']}")
    return out


def _photos(folder: Path) -> list:
    """Single-frame videos of the photos of people shipped in scikit-image (astronaut: waist up,
    camera: the cameraman, three-quarter body), each with the whole image as the person's box
    (-> [(video, boxes file)]): the box measures the landmark model and the fit, not the
    detector (docs/people.md measures that)."""
    try:
        import cv2
        from skimage import data
    except ImportError:
        return []
    out = []
    for name in ("astronaut", "camera"):
        img = getattr(data, name)()
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        path = folder / f"{name}.avi"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 1, (img.shape[1], img.shape[0]))
        w.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        w.release()
        boxes = folder / f"{name}_boxes.json"
        boxes.write_text(json.dumps({"0": [[0, 0, img.shape[1], img.shape[0], 1.0]]}))
        out.append((path, boxes))
    return out


# ----------------------------------------------------------------------------- report
def report(syn: dict, real: dict, command: str) -> str:
    lines = ["# Accuracy of the default estimator", "",
             "BlazePose GHUM 3D landmarks (Google, Apache-2.0; ported to torch, `engine/landmarks/`) and our fit "
             "onto the SMPL-format rig (`engine/fit/`), measured as a user runs it. Figures from this machine "
             "(2 CPU cores), made by:", "", f"    {command}", ""]
    if syn:
        lines += ["## Rendered clips with exact labels", "",
                  f"{syn['clips']} held-out clips x {syn['clip_frames']} frames: the mannequin doing each procedural "
                  "motion (walk in place, turn, reach, crouch, kick) at a random heading (back views included), 2.6-4 m "
                  "from a 55 degree camera, 640x480, random backgrounds (`engine/data/clips.py`); the landmark model "
                  "crops from the true box on the first frame and follows the person from there. Joints: shoulders, "
                  "elbows, wrists, hips, knees, ankles (12), aligned at the hip midpoint (MPJPE) or by a similarity "
                  "transform (PA-MPJPE); PVE over all vertices at the same alignment. Millimetres.", "",
                  "| estimator | model | frames found | MPJPE | PA-MPJPE | PVE | left/right swapped |",
                  "|---|---|---|---|---|---|---|"]
        for size in [s for s in ("lite", "full", "heavy") if s in syn]:
            r = syn[size]
            lines.append(f"| fitted body (ours) | {size} | {r['found']}/{r['frames']} | {r['fit']['mpjpe']:.0f} | "
                         f"{r['fit']['pa_mpjpe']:.0f} | {r['fit']['pve']:.0f} | {r['swapped_fit']:.1%} |")
            lines.append(f"| raw world landmarks | {size} | {r['found']}/{r['frames']} | {r['raw']['mpjpe']:.0f} | "
                         f"{r['raw']['pa_mpjpe']:.0f} | - | {r['swapped_raw']:.1%} |")
        p = syn["pymaf"]
        lines += [f"| PyMAF, untrained network | - | {p['frames']}/{p['frames']} (true boxes) | {p['mpjpe']:.0f} | "
                  f"{p['pa_mpjpe']:.0f} | {p['pve']:.0f} | - |"]
        if "heads" in syn:
            h = syn["heads"]
            lines += [f"| PyMAF heads on BlazePose (ours, `--estimator pymaf-blazepose`) | full | {h['frames']}/{h['frames']} "
                      f"(true boxes) | {h['mpjpe']:.0f} | {h['pa_mpjpe']:.0f} | {h['pve']:.0f} | - |"]
        lines += ["",
                  "The raw landmarks' hip points follow BlazePose's convention, not SMPL's hip joints; that difference "
                  "is part of what the fit removes. \"left/right swapped\": share of fitted frames whose left and right "
                  "limbs match the truth better exchanged. Fit speed (the fit alone, 2 threads): "
                  + ", ".join(f"{s} {syn[s]['fit_frames_per_s']:.0f} person-frames/s"
                              for s in ("lite", "full", "heavy") if s in syn) + ". Network speed on the "
                  "224 crops (the network alone, one clip's 30 crops a batch, 2 threads): untrained PyMAF "
                  f"(ResNet-50) {syn['pymaf']['frames_per_s']:.1f} person-frames/s"
                  + (f", PyMAF heads on BlazePose {syn['heads']['frames_per_s']:.1f}" if "heads" in syn else "")
                  + ".", ""]
    if real:
        lines += ["## Real footage", "",
                  "`python -m engine run` with the defaults (`full` model, the MoveNet person detector and our tracker), once with "
                  "`--smoothing none` and once with the default smoothing. The fitted rig's projected joints against "
                  "the landmark model's own 2D landmarks, over the shoulders, elbows, wrists, knees and ankles it "
                  "calls visible (visibility >= 0.5; hips left out: different conventions); distance in % of the "
                  "person's size as BlazePose's alignment estimates it (crop side / 1.25: about the standing "
                  "height, and defined when the legs are out of view); PCK@0.05: share of those joints within 5 % "
                  "of it. Jitter: mean second difference of the projected joints, % of the size per frame^2. "
                  "Goal: mean <= 3 %, PCK@0.05 >= 90 %.", "",
                  "| footage | frames | people fitted | tracks over 5 % | person-frames | mean distance (raw / smoothed) | "
                  "PCK@0.05 (raw / smoothed) | jitter raw | jitter smoothed |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in real.items():
            if name == "photos":
                continue
            lines.append(f"| {name} | {r['frames']} | {r['people']} | {r['tracks_off']} | {r['person_frames']} | "
                         f"{r['mean_rel']:.1%} / "
                         f"{r['mean_rel_smooth']:.1%} | {r['pck05']:.1%} / {r['pck05_smooth']:.1%} | "
                         f"{r['jitter_raw']:.2f} % | {r['jitter_smooth']:.2f} % |")
        if "photos" in real:
            r = real["photos"]
            lines.append(f"| photos ({', '.join(r['names'])}; scikit-image; whole image as the box) | 1 each | "
                         f"{r['people']} | - | {r['people']} | {r['mean_rel']:.1%} | {r['pck05']:.1%} | - | - |")
        lines += ["", "\"tracks over 5 %\": tracks whose mean distance exceeds 5 % of the height. On vtest.avi the "
                  "people are 60-120 px tall; the run leaves out tracks the landmark model sees a person in under "
                  "a quarter of their boxes, the others stay in these figures. Jitter includes the "
                  "people's real accelerations (vtest.avi runs at 10 frames/s).", ""]
        heads = {k: r["heads"] for k, r in real.items() if "heads" in r}
        if heads:
            lines += ["### PyMAF heads on BlazePose against the landmark fit", "",
                      "The same runs with `--estimator pymaf-blazepose` (same detector and tracker, so the same "
                      "people), scored on the person-frames both estimators have, against the same reference: the "
                      "landmark model's own 2D landmarks of the landmark run. That reference favours the landmark "
                      "fit, which is fitted to those very points (the heads are not). Jitter as above, on "
                      "those frames. fps: whole `engine run` (decode, detection, tracking, estimator, write) on "
                      "these 2 cores.", "",
                      "| footage | person-frames | mean distance (fit / heads) | PCK@0.05 (fit / heads) | "
                      "jitter raw (fit / heads) | jitter smoothed (fit / heads) | fps (landmarks / heads) |",
                      "|---|---|---|---|---|---|---|"]
            for name, h in heads.items():
                f, n = h["fit"], h["heads"]
                if name == "photos":
                    lines.append(f"| photos (mean over {', '.join(real['photos']['names'])}) | {h['person_frames']} | "
                                 f"{f['mean_rel']:.1%} / {n['mean_rel']:.1%} | {f['pck05']:.1%} / {n['pck05']:.1%} "
                                 "| - | - | - |")
                    continue
                lines.append(f"| {name} | {h['person_frames']} | {f['mean_rel']:.1%} / {n['mean_rel']:.1%} | "
                             f"{f['pck05']:.1%} / {n['pck05']:.1%} | {f['jitter_raw']:.2f} / {n['jitter_raw']:.2f} % | "
                             f"{f['jitter_smooth']:.2f} / {n['jitter_smooth']:.2f} % | {real[name]['fps']:.1f} / "
                             f"{h['fps']:.1f} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "accuracy.md"))
    p.add_argument("--sizes", default="lite,full,heavy")
    p.add_argument("--clips-per-motion", type=int, default=3)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--vtest-frames", type=int, default=300)
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--skip-footage", action="store_true")
    p.add_argument("--heads", default=None,
                   help="weights of PyMAF's heads on the BlazePose trunk to measure next to the landmark fit "
                        "(default: the shipped ones, engine/model/weights/pymaf_blazepose_full.pt, when present)")
    p.add_argument("--no-heads", action="store_true", help="measure the landmark fit only")
    p.add_argument("--image-weight", type=float, default=None,
                   help="the landmark fit's image term weight on the rendered clips (FitParams.weight_2d; "
                        "default: the shipped one): how it was chosen, docs/landmark-fit.md")
    args = p.parse_args(argv)
    from engine.run import BLAZE_HEADS

    heads = None if args.no_heads else (args.heads or (str(BLAZE_HEADS) if BLAZE_HEADS.is_file() else None))
    import torch

    torch.set_num_threads(2)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    syn = {} if args.skip_synthetic else measure_synthetic(args.sizes.split(","), args.clips_per_motion,
                                                           args.frames, log, heads, args.image_weight)
    real = {} if args.skip_footage else measure_footage(args.vtest_frames, log, heads)
    command = "python -m engine.measure.accuracy " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(syn, real, command.strip())
    out = Path(args.out)
    if out.is_file() and KEEP_BELOW in out.read_text():   # sections other commands made stay
        text = text.rstrip("\n") + "\n\n" + out.read_text()[out.read_text().index(KEEP_BELOW):]
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
