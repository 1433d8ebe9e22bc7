"""Rendered one-person clips with exact labels: for measuring estimators, and the demo's stand-in
footage when ../shared/footage is absent (not used by `engine run`).

``render_person_clip`` poses the body with one of the procedural motions of
``engine/data/poses.py`` (walk in place, turn, reach, crouch, kick) at a random heading (back
views included) and distance, renders it over a random background with our renderer, and
returns the frames with the ground truth in the engine's conventions: camera frame (OpenCV),
rotations local (joint 0 = global orient in the camera frame), camera-frame joints and
vertices, the person's box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOTIONS = ("walk", "turn", "reach", "crouch", "kick")


@dataclass
class PersonClip:
    frames: np.ndarray      # (T, H, W, 3) uint8 RGB
    rotmat: np.ndarray      # (T, 24, 3, 3) local rotations, joint 0 in the camera frame
    betas: np.ndarray       # (10,)
    joints: np.ndarray      # (T, 24, 3) camera frame, metres
    vertices: np.ndarray    # (T, V, 3) camera frame, metres
    boxes: np.ndarray       # (T, 4) x0, y0, x1, y1 of the projected body
    focal_px: float
    motion: str
    heading_deg: float


def render_person_clip(body, motion: str, num_frames: int, seed: int, width: int = 640, height: int = 480,
                       fov_deg: float = 55.0, renderer=None, heading_deg: float | None = None) -> PersonClip:
    """One person doing ``motion`` in place, ``num_frames`` frames. ``renderer``: an
    ``engine.render.renderer.Renderer`` of (width, height) to reuse (else one is made);
    ``heading_deg``: the body's heading (0: facing the camera; default random)."""
    import torch

    from engine.body.smpl_torch import SMPL
    from engine.common.kinematics import forward_kinematics
    from engine.common.rotations import axis_angle_to_rotmat
    from engine.data import appearance, poses
    from engine.people.train_detector import appearance_clothing, projected_box

    rng = np.random.default_rng(seed)
    T = int(num_frames)
    focal = width / 2 / np.tan(np.radians(fov_deg) / 2)
    m = poses.motion(motion, T, rng)
    rot = np.array(m.poses, np.float64)
    heading = rng.uniform(-np.pi, np.pi) if heading_deg is None else np.radians(heading_deg)
    # SMPL world (y up) -> camera (y down): half a turn about x, after the body's heading about y
    flip = axis_angle_to_rotmat(np.array([np.pi, 0.0, 0.0]))
    turn = axis_angle_to_rotmat(np.stack([np.zeros(T), heading + np.asarray(m.yaw), np.zeros(T)], -1))
    rot[:, 0] = flip @ turn
    betas = np.clip(rng.normal(0, 0.8, 10), -2, 2) * (np.arange(10) < 4)
    smpl = SMPL(body).eval()
    with torch.no_grad():
        v = smpl.pose(torch.as_tensor(rot, dtype=torch.float32),
                      torch.as_tensor(np.repeat(betas[None], T, 0), dtype=torch.float32)).vertices.double().numpy()
    _, rest = body.rest_shape(betas)
    joints, _ = forward_kinematics(rot, rest, body.parents)
    root = np.asarray(m.root) @ (flip @ axis_angle_to_rotmat(np.array([0.0, heading, 0.0]))).T
    depth = rng.uniform(2.6, 4.0)
    offset = root + np.array([rng.uniform(-0.4, 0.4), 1.0 - v[0, :, 1].max() - 0.05, depth])
    v = v + offset[:, None]
    joints = joints + offset[:, None]
    own = renderer is None
    if own:
        from engine.render.renderer import Renderer
        renderer = Renderer(width, height, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1)
    colours = appearance_clothing(rng, body)[None]
    bg = appearance.random_background(rng, width, height)
    frames = np.zeros((T, height, width, 3), np.uint8)
    boxes = np.zeros((T, 4))
    try:
        for t in range(T):
            frames[t] = renderer.render(v[t][None], focal, None, colours, background=bg).rgb[0]
            boxes[t] = projected_box(v[t], focal, width, height)[0]
    finally:
        if own:
            renderer.close()
    return PersonClip(frames=frames, rotmat=rot, betas=betas, joints=joints, vertices=v, boxes=boxes,
                      focal_px=float(focal), motion=motion, heading_deg=float(np.degrees(heading)))
