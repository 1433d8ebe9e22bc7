"""``python -m engine.measure.silhouette``: what a silhouette term would add to the landmark fit.

The fit (engine/fit/fit.py) places the body by 33 landmarks; its outline then misses the
person's by a few pixels along every limb (docs/mattes.md). This measures a prototype of the
missing term, not yet in the engine: each frame's pose and translation of an ``engine run``
result are refined so that the body's projected surface lies inside a person mask and covers
it, from the result's own rotations, with a pull back to them:

    E = mean_v rho(D_out(pi(v))) + mean_e rho(min_v |e - pi(v)|)
        + w_R |6D - 6D_0|^2 + w_t |t - t_0|^2 + w_z |z_J - z_J0|^2

v: surface points of the result's rig (sampled vertices, skinned with the fit's own
``skin_points``), pi the result's camera, D_out the distance (px) outside the mask, e points on
the mask's outline, rho the Charbonnier cost (scale 2 px), z_J the joints' depths (a mask says
nothing about depth; the fit's 3D landmarks do). The mask is the BlazePose landmark
network's segmentation of the person on the plate (``engine.measure.mattes.segmentation_masks``,
what ``engine mattes --alpha segmentation`` uses); the body mattes of the refined result are
scored against the renderer's true masks (rendered clips) and, not independently, against that
segmentation (dancer.mp4). 3D: the refined joints against the clips' true joints.

    python -m engine.measure.silhouette [--out docs/mattes.md] [--frames 30] [--step 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.measure.report import command_line, publish

ROOT = Path(__file__).resolve().parents[2]
DANCER_STEP = 4      # refine every 4th frame of dancer.mp4


@dataclasses.dataclass(frozen=True)
class RefineParams:
    iterations: int = 60
    learning_rate: float = 0.01      # Adam, on the 6D entries and metres
    weight_rotation: float = 50.0    # pull to the fit's 6D rotations (mean square)
    weight_translation: float = 2000.0   # pull to the fit's translation (mean square, metres)
    weight_depth: float = 5000.0     # pull to the fit's joint depths (mean square, metres): a mask says
    #                                  nothing about them, the fit's 3D landmarks do
    robust_px: float = 2.0
    points: int = 3000               # surface points sampled from the rig's vertices
    outline_points: int = 400        # mask outline points per frame
    margin_px: int = 40              # distance fields cover the mask and body boxes grown by this


def surface_rig(rest_vertices: np.ndarray, rest_joints: np.ndarray, weights: np.ndarray, parents, count: int,
                seed: int = 0):
    """A fit ``Rig`` whose points are ``count`` vertices of the rest mesh, each skinned by its 4
    strongest joints (the fit's ``skin_points``). -> (Rig, vertex indices)."""
    import torch

    from engine.fit.fit import MAX_INFLUENCES, Rig, joint_levels

    idx = np.sort(np.random.RandomState(seed).choice(len(rest_vertices), min(count, len(rest_vertices)), replace=False))
    w = np.asarray(weights, np.float64)[idx]
    top = np.argsort(-w, 1)[:, :MAX_INFLUENCES]
    tw = np.take_along_axis(w, top, 1)
    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    return Rig(f32(rest_joints), f32(np.asarray(rest_vertices)[idx]), torch.as_tensor(top),
               f32(tw / tw.sum(1, keepdims=True)), torch.as_tensor(np.asarray(parents, np.int64)),
               joint_levels(np.asarray(parents, np.int64))), idx


def mask_targets(mask: np.ndarray, around: np.ndarray, params: RefineParams, rng) -> tuple:
    """A person mask (H, W) bool and points to keep in view (P, 2) px -> (outside-distance
    field over a window (h, w) float32, window origin (x0, y0), outline points (K, 2) px)."""
    import cv2

    ys, xs = np.nonzero(mask)
    x0 = int(max(min(xs.min(), around[:, 0].min()) - params.margin_px, 0))
    y0 = int(max(min(ys.min(), around[:, 1].min()) - params.margin_px, 0))
    x1 = int(max(xs.max(), around[:, 0].max()) + params.margin_px)
    y1 = int(max(ys.max(), around[:, 1].max()) + params.margin_px)
    window = np.zeros((y1 - y0, x1 - x0), np.uint8)
    part = mask[y0:y1, x0:x1]
    window[:part.shape[0], :part.shape[1]] = part
    field = cv2.distanceTransform(1 - window, cv2.DIST_L2, 5).astype(np.float32)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    edge = np.concatenate([c[:, 0] for c in contours], 0).astype(np.float32) + 0.5    # pixel centres
    edge = edge[rng.choice(len(edge), min(params.outline_points, len(edge)), replace=False)]
    return field, (x0, y0), edge


def _sample(field, origin, uv):
    """Bilinear values of an (h, w) field at (P, 2) frame pixel positions (torch)."""
    import torch

    h, w = field.shape
    g = torch.stack([(uv[:, 0] - origin[0] - 0.5) / max(w - 1, 1) * 2 - 1,
                     (uv[:, 1] - origin[1] - 0.5) / max(h - 1, 1) * 2 - 1], -1)
    return torch.nn.functional.grid_sample(field[None, None], g[None, None], align_corners=True,
                                           padding_mode="border")[0, 0, 0]


def refine_poses(rotmat: np.ndarray, transl: np.ndarray, rig, masks: list, focal: float, principal_point,
                 params: RefineParams = RefineParams(), seed: int = 0) -> tuple:
    """Each frame's pose moved to fit its person mask (module docstring).

    rotmat (T, 24, 3, 3) local, transl (T, 3) (camera frame = FK(rotmat) + transl), masks T
    (H, W) bool, the result's camera. -> (rotmat (T, 24, 3, 3), transl (T, 3)) float64."""
    import torch

    from engine.fit.fit import assemble_rotations, charbonnier, forward_kinematics, project, skin_points
    from engine.model.geometry import rotmat_to_rot6d

    f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    R0, t0 = f32(rotmat), f32(transl)
    T = len(R0)
    focal_t, pp = torch.full((T,), float(focal)), f32(principal_point).expand(T, 2)
    with torch.no_grad():
        J, Rw = forward_kinematics(R0, rig)
        uv0 = project(skin_points(J, Rw, rig) + t0[:, None], focal_t, pp).numpy()
        depth0 = J[..., 2] + t0[:, None, 2]
    rng = np.random.RandomState(seed)
    targets = [mask_targets(m, uv0[k], params, rng) for k, m in enumerate(masks)]
    fields = [torch.as_tensor(f) for f, _, _ in targets]
    edges = [torch.as_tensor(e) for _, _, e in targets]
    six0 = rotmat_to_rot6d(R0[:, :22]).detach()
    six = six0.clone().requires_grad_(True)
    dt = torch.zeros(T, 3, requires_grad=True)
    opt = torch.optim.Adam([six, dt], lr=params.learning_rate)
    for _ in range(params.iterations):
        R = assemble_rotations(six)
        J, Rw = forward_kinematics(R, rig)
        uv = project(skin_points(J, Rw, rig) + (t0 + dt)[:, None], focal_t, pp)
        inside = sum(charbonnier(_sample(fields[k], targets[k][1], uv[k]), params.robust_px).mean() for k in range(T))
        cover = sum(charbonnier(torch.cdist(edges[k], uv[k]).min(1).values, params.robust_px).mean() for k in range(T))
        loss = ((inside + cover) / T + params.weight_rotation * ((six - six0) ** 2).mean()
                + params.weight_translation * (dt ** 2).mean()
                + params.weight_depth * ((J[..., 2] + t0[:, None, 2] + dt[:, None, 2] - depth0) ** 2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        R = assemble_rotations(six)
        R[:, 22:] = R0[:, 22:]          # the hands are not fitted: as they were
        return R.double().numpy(), (t0 + dt).double().numpy()


def refined_result(result, tid: str, frames: list, masks: list, params: RefineParams = RefineParams()):
    """``result`` with track ``tid``'s poses on ``frames`` (result frames) refined to ``masks``."""
    from engine.common.result_schema import TrackResult

    tr = result.tracks[tid]
    rows = [int(np.flatnonzero(tr.frames == f)[0]) for f in frames]
    rot = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1).astype(np.float64)
    transl = np.asarray(tr.transl, np.float64).copy()
    rig, _ = surface_rig(tr.rest_vertices, tr.rest_joints, result.body.weights, result.body.parents, params.points)
    cam = result.meta["camera"]
    rot[rows], transl[rows] = refine_poses(rot[rows], transl[rows], rig, masks, cam["focal_px"],
                                           cam["principal_point"], params)
    fields = {f.name: getattr(tr, f.name) for f in dataclasses.fields(tr)}
    for key in ("global_orient_rotmat", "body_pose_rotmat", "pose_axis_angle", "pose_quat", "transl"):
        fields.pop(key, None)
    new = TrackResult.from_rotmats(frames=tr.frames, transl=transl, global_orient_rotmat=rot[:, 0],
                                   body_pose_rotmat=rot[:, 1:], **{k: v for k, v in fields.items()
                                                                   if k not in ("frames",)})
    return dataclasses.replace(result, tracks={**result.tracks, tid: new})


def posed_joints_of(result, tid: str, frames: list) -> np.ndarray:
    """(F, 24, 3) camera-frame joints of track ``tid`` on result ``frames``."""
    from engine.common.kinematics import posed_joints

    tr = result.tracks[tid]
    rows = [int(np.flatnonzero(tr.frames == f)[0]) for f in frames]
    rot = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)[rows]
    return posed_joints(rot, tr.rest_joints, result.body.parents, np.asarray(tr.transl)[rows])


# ----------------------------------------------------------------------------------- measure
def _mean_iou(masks, refs) -> float:
    from engine.measure.mattes import iou

    return float(np.mean([0.0 if m is None else iou(m, r) for m, r in zip(masks, refs)]))


def measure_renders(frames: int, step: int, log, params: RefineParams) -> list:
    from engine.body.mannequin import build_mannequin
    from engine.common.result_schema import read_result
    from engine.data.clips import MOTIONS, render_person_clip
    from engine.measure.mattes import SEED0, _engine_run, _write_video, result_masks, segmentation_masks
    from engine.render.renderer import Renderer

    body = build_mannequin()
    rows = []
    renderer = Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for m, motion in enumerate(MOTIONS):
                seed = SEED0 + 100 * m
                clip = render_person_clip(body, motion, frames, seed, renderer=renderer)
                gt = [renderer.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
                video, res_path = _write_video(clip.frames, Path(tmp) / f"{seed}.avi"), Path(tmp) / f"{seed}.npz"
                _engine_run(video, res_path)
                res = read_result(res_path)
                tid = max(res.tracks, key=lambda t: len(res.tracks[t].frames))
                seg = segmentation_masks(video, res, tid)
                have = set(res.tracks[tid].frames.tolist())
                use = [f for f in range(0, frames, step) if f in have and seg[f] is not None and seg[f].any()]
                t0 = time.perf_counter()
                refined = refined_result(res, tid, use, [seg[f] for f in use], params)
                secs = (time.perf_counter() - t0) / max(len(use), 1)
                true_j = clip.joints[use]
                err = lambda r: float(np.linalg.norm(posed_joints_of(r, tid, use) - true_j, axis=-1).mean() * 1000)  # noqa: E731

                def rel(r):    # root-relative: the pose without the position's depth error
                    j = posed_joints_of(r, tid, use)
                    return float(np.linalg.norm((j - j[:, :1]) - (true_j - true_j[:, :1]), axis=-1).mean() * 1000)
                row = {"motion": motion, "seed": seed, "frames": len(use),
                       "iou_fit": _mean_iou(result_masks(res, tid, use), [gt[f] for f in use]),
                       "iou_refined": _mean_iou(result_masks(refined, tid, use), [gt[f] for f in use]),
                       "iou_segmentation": _mean_iou([seg[f] for f in use], [gt[f] for f in use]),
                       "joints_fit_mm": err(res), "joints_refined_mm": err(refined),
                       "relative_fit_mm": rel(res), "relative_refined_mm": rel(refined), "s_per_frame": secs}
                rows.append(row)
                log(f"{motion}: {row}")
    finally:
        renderer.close()
    return rows


def measure_dancer(step: int, log, params: RefineParams) -> dict:
    from engine.common.result_schema import read_result
    from engine.measure.mattes import FOOTAGE, _engine_run, result_masks, segmentation_masks

    video = FOOTAGE / "dancer.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        _engine_run(video, Path(tmp) / "dancer.npz")
        res = read_result(Path(tmp) / "dancer.npz")
    tid = max(res.tracks, key=lambda t: len(res.tracks[t].frames))
    seg = segmentation_masks(video, res, tid)
    have = set(res.tracks[tid].frames.tolist())
    use = [f for f in range(0, int(res.meta["frames_done"]), step) if f in have and seg[f] is not None]
    t0 = time.perf_counter()
    refined = refined_result(res, tid, use, [seg[f] for f in use], params)
    secs = (time.perf_counter() - t0) / max(len(use), 1)
    row = {"frames": len(use), "iou_fit": _mean_iou(result_masks(res, tid, use), [seg[f] for f in use]),
           "iou_refined": _mean_iou(result_masks(refined, tid, use), [seg[f] for f in use]), "s_per_frame": secs}
    log(f"dancer: {row}")
    return row


def report(renders: list, dancer: dict | None, command: str, params: RefineParams) -> str:
    lines = ["### Silhouette term (prototype, not in the engine yet)", "",
             f"`{command}` (engine/measure/silhouette.py): each frame of an `engine run` result (defaults) "
             "refined from its own pose to the BlazePose segmentation of the person on the plate (the module's "
             f"docstring: {params.iterations} Adam steps, {params.points} surface points, pulls to the fit's "
             f"rotations {params.weight_rotation:g}, translation {params.weight_translation:g} and joint depths "
             f"{params.weight_depth:g}), then its body "
             "matte made as `engine mattes` makes it. Rendered clips: 640x480, one clip per motion (seeds as in the "
             "tables above), every other frame; IoU against the renderer's true masks; joints: mean distance of the "
             "24 joints to the true ones, in the camera frame (position included) and root-relative (the pose). "
             "Seconds per frame: the refinement alone, "
             "2 CPU threads, while other measurements shared the cores.", "",
             "| clip | frames | body matte IoU, fit | refined | the segmentation itself | joints mm, fit | refined "
             "| root-relative mm, fit | refined | s per frame |", "|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, frames, r, bold=""):
        return (f"| {name} | {frames} | {bold}{r['iou_fit']:.3f}{bold} | {bold}{r['iou_refined']:.3f}{bold} | "
                f"{r['iou_segmentation']:.3f} | {r['joints_fit_mm']:.0f} | {r['joints_refined_mm']:.0f} | "
                f"{r['relative_fit_mm']:.0f} | {r['relative_refined_mm']:.0f} | {r['s_per_frame']:.2f} |")

    for r in renders:
        lines.append(row(f"{r['motion']} (seed {r['seed']})", r["frames"], r))
    if renders:
        mean = {k: float(np.mean([r[k] for r in renders])) for k in renders[0] if k not in ("motion", "seed")}
        lines.append(row("**mean**", sum(r["frames"] for r in renders), mean, "**"))
    if dancer:
        lines += ["", f"dancer.mp4 (every {DANCER_STEP}th frame, {dancer['frames']} frames), against the same segmentation the "
                  "refinement fitted to (so not independent; the renders above are the evidence): body matte IoU "
                  f"{dancer['iou_fit']:.3f} -> {dancer['iou_refined']:.3f}, {dancer['s_per_frame']:.2f} s per frame."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the section into this markdown page")
    p.add_argument("--frames", type=int, default=30, help="frames per rendered clip")
    p.add_argument("--step", type=int, default=2, help="refine every STEP-th frame of the clips")
    p.add_argument("--skip-dancer", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    params = RefineParams()
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    renders = measure_renders(args.frames, args.step, log, params)
    dancer = None if args.skip_dancer else measure_dancer(DANCER_STEP, log, params)
    publish(report(renders, dancer, command_line("engine.measure.silhouette", argv), params), args.out,
            "engine.measure.silhouette")
    return 0


if __name__ == "__main__":
    sys.exit(main())
