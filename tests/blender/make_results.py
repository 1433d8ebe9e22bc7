"""Result files and reference arrays for the Blender tests. Runs in the ENGINE environment.

    .venvs/engine/bin/python tests/blender/make_results.py OUTDIR            # test fixtures
    .venvs/engine/bin/python tests/blender/make_results.py OUTDIR --long N   # benchmark input

Never imported into Blender (it uses torch and smplx): the Blender tests run it through
``subprocess`` with ``conftest.engine_python()`` and read what it writes with numpy only.

Fixtures (OUTDIR):

* ``video.mp4``: 1280x720 at 30000/1001 fps, 72 frames. Frame k shows k in binary as 8 vertical
  stripes (stripe b, counted from the left, is white when bit 7-b of k is set), so a render of
  the movie texture tells which video frame Blender shows.
* ``multi.npz``: a complete result (schema 1) with rig data, the video above, ``--start 10``
  (``meta.frame_start = 10``: result frame 0 = video frame 10), 60 processed frames, a camera
  with focal 1100 px and an off-centre principal point, and three people with different shapes
  and motions in front of the camera:
  ``"0"`` walks across (frames 0-59), ``"3"`` kicks with two gaps (0-14, 22-39, 45-59),
  ``"7"`` turns in place and appears late (8-59). Every rotation carries about 1.5 degrees of
  per-frame noise (jitter for the smoothing tests).
* ``multi_ref.npz``: what the engine's own SMPL layer (smplx ``lbs`` on the mannequin) says
  for the same poses, with the track's ``betas_robust``:
  ``<id>/frames``, ``<id>/joints_world`` (T, 24, 3) Blender world (``blender_space``),
  ``<id>/kp_uv`` (T, K, 2) and ``<id>/kp_joint`` (K,): the 49-set keypoints that are SMPL
  kinematic joints, projected with the result's camera, and which joint each one is,
  ``<id>/vert_rows`` (n,) track rows and ``<id>/verts_world`` (n, V, 3) posed mesh vertices.
* ``norig.npz``: the same result without rig data (an engine < 0.2 file).

``--long N`` writes ``long.npz``: one person, N frames, no keypoints (the benchmark input).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.common import blender_space, rotations  # noqa: E402
from engine.common import camera as camlib  # noqa: E402
from engine.common import smpl_topology as topo  # noqa: E402
from engine.common.result_schema import (BodyRig, MotionResult, TrackResult,  # noqa: E402
                                         make_meta, write_result)

FPS = 30000.0 / 1001.0
WIDTH, HEIGHT = 1280, 720
FOCAL = 1100.0
PRINCIPAL = (652.0, 348.0)
START = 10            # meta.frame_start (the engine's --start)
N = 60                # processed frames
VIDEO_FRAMES = 72     # frames in the video file
NOISE_DEG = 1.5

# id, motion, frames, pelvis position in the camera frame (m), heading (deg, about body y), seed
TRACKS = (
    ("0", "walk", np.arange(0, 60), (-1.4, 0.55, 5.5), 90.0, 1),
    ("3", "kick", np.r_[0:15, 22:40, 45:60], (0.4, 0.6, 4.0), 20.0, 2),
    ("7", "turn", np.arange(8, 60), (1.5, 0.45, 7.0), -30.0, 3),
)


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a):
    a = np.asarray(a, np.float64)
    c, s, z, o = np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _body():
    from engine.body.mannequin import build_mannequin
    return build_mannequin()


def _track_motion(name, frames, pelvis_cam, heading_deg, seed, rest_root, num_frames, noise_deg):
    """Poses (T, 24, 3, 3) and SMPL translation (T, 3) for the rows ``frames`` of a motion."""
    from engine.data.poses import motion
    rng = np.random.default_rng(seed)
    m = motion(name, num_frames, rng, fps=FPS)
    up = _rot_x(np.pi)                       # SMPL body (y up, facing +z) -> camera (y down), facing the camera
    heading = np.radians(heading_deg)
    R = m.poses[frames].copy()
    R[:, 0] = up @ _rot_y(heading + m.yaw[frames])
    if noise_deg:
        noise = rng.normal(scale=np.radians(noise_deg) / np.sqrt(3), size=R.shape[:2] + (3,))
        R = R @ rotations.axis_angle_to_rotmat(noise)
    # Root joint (rest J0 + transl) at the chosen spot plus the motion's own root displacement.
    root = (up @ _rot_y(heading)) @ m.root[frames].T
    transl = np.asarray(pelvis_cam)[None] + root.T - rest_root[None]
    return R, transl


def build(out: Path, tracks=TRACKS, num_frames=N, start=START, noise_deg=NOISE_DEG, with_ref=True,
          name="multi"):
    import torch

    from engine.body.smpl_torch import SMPL

    body = _body()
    smpl = SMPL(body, batch_size=1)
    video_path = out / "video.mp4"
    results, ref = {}, {}
    for tid, motion_name, frames, pelvis, heading, seed in tracks:
        rng = np.random.default_rng(100 + seed)
        betas_robust = rng.normal(scale=0.9, size=10)
        rest_v, rest_j = body.rest_shape(betas_robust)
        rest_v, rest_j = rest_v.astype(np.float32), rest_j.astype(np.float32)
        R, transl = _track_motion(motion_name, frames, pelvis, heading, seed, rest_j[0].astype(np.float64),
                                  num_frames, noise_deg)
        R = R.astype(np.float32)
        transl = transl.astype(np.float32)
        T = len(frames)
        betas = (betas_robust[None] + rng.normal(scale=0.05, size=(T, 10))).astype(np.float32)
        extra = {}
        if with_ref:
            with torch.no_grad():
                o = smpl.pose(torch.from_numpy(R), torch.from_numpy(np.repeat(betas_robust[None], T, 0)).float())
            joints24 = o.joints24.double().numpy() + transl[:, None]
            joints49 = o.joints49.double().numpy()
            kp49 = camlib.perspective_project(joints49, transl.astype(np.float64), FOCAL, PRINCIPAL)
            extra = dict(keypoints2d=kp49.astype(np.float32),
                         joints3d=(joints49 + transl[:, None]).astype(np.float32))
        results[tid] = TrackResult.from_rotmats(
            frames=np.asarray(frames, np.int64), transl=transl, global_orient_rotmat=R[:, 0],
            body_pose_rotmat=R[:, 1:], betas=betas, confidence=np.full(T, 0.9, np.float32),
            betas_robust=betas_robust.astype(np.float32), rest_vertices=rest_v, rest_joints=rest_j, **extra)
        if with_ref:
            kin = np.flatnonzero(topo.JOINTS_49_SOURCE < topo.NUM_JOINTS)
            rows = np.unique([0, T // 2, T - 1])
            ref[f"{tid}/frames"] = np.asarray(frames, np.int64)
            ref[f"{tid}/joints_world"] = blender_space.camera_points_to_world(joints24)
            ref[f"{tid}/kp_uv"] = kp49[:, kin]
            ref[f"{tid}/kp_joint"] = topo.JOINTS_49_SOURCE[kin]
            ref[f"{tid}/vert_rows"] = rows
            ref[f"{tid}/verts_world"] = blender_space.camera_points_to_world(
                o.vertices.double().numpy()[rows] + transl[rows, None])
    meta = make_meta(
        video={"path": str(video_path), "width": WIDTH, "height": HEIGHT, "fps": FPS,
               "frame_count": num_frames},
        camera={"focal_px": FOCAL, "principal_point": list(PRINCIPAL)},
        frames_done=num_frames, track_ids=sorted(results), smoothing=None,
        frame_start=start, source_frame_count=max(VIDEO_FRAMES, start + num_frames))
    timestamps = (start + np.arange(num_frames)) / FPS
    rig = BodyRig(faces=body.faces, weights=body.weights.astype(np.float32), parents=body.parents)
    result = MotionResult(meta=meta, tracks=results, timestamps=timestamps, body=rig)
    write_result(result, out / f"{name}.npz")
    if with_ref:
        np.savez(out / f"{name}_ref.npz", **ref)
        bare = MotionResult(meta=dict(meta), tracks={
            tid: TrackResult(**{k: v for k, v in tr.arrays().items()
                                if k not in ("rest_vertices", "rest_joints")})
            for tid, tr in results.items()}, timestamps=timestamps, body=None)
        write_result(bare, out / "norig.npz")
    return result


def write_video(path: Path, frames=VIDEO_FRAMES, width=WIDTH, height=HEIGHT):
    """Frame k: k in binary as 8 vertical stripes, most significant bit on the left."""
    import cv2
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    if not w.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v video here")
    edges = np.linspace(0, width, 9).astype(int)
    for k in range(frames):
        img = np.zeros((height, width, 3), np.uint8)
        for b in range(8):
            if (k >> (7 - b)) & 1:
                img[:, edges[b]:edges[b + 1]] = 255
        w.write(img)
    w.release()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--long", type=int, default=0, help="write long.npz: one person, this many frames")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if args.long:
        build(args.out, tracks=(("0", "reach", np.arange(args.long), (0.0, 0.55, 6.0), 20.0, 1),),
              num_frames=args.long, start=0, with_ref=False, name="long")
    else:
        write_video(args.out / "video.mp4")
        build(args.out)
    print(f"wrote {args.out} in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
