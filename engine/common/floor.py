"""The floor of a shot from the people's feet: one plane for all tracks, and the world it defines.

Pure numpy (both the engine and Blender's side use it). Conventions, stated once:

- Points are in the engine's camera frame (OpenCV: x right, y down, z forward), metres.
- A plane is ``(normal, offset)``: unit ``normal`` pointing up (from the floor towards the
  people), ``normal . p + offset = 0`` on the plane. The height of a point above the floor is
  ``normal . p + offset``; the camera (the origin) stands ``offset`` above it.
- The floor world: Z up (the normal), the floor at Z = 0, the camera above the world origin at
  (0, 0, camera height), its viewing direction projected onto the floor along +Y (Blender's
  convention: a camera looking along +Y with +Z up). ``world = R @ camera_point + t``.

How the plane is found (``estimate_floor``): a first "up" from the bodies themselves (their
pelvis orientations' up in ``floor_of_result``, else the mean pelvis -> neck direction; people
mostly stand), then each foot joint moved down along it by its height above the sole
(``sole_offsets``: joints are inside the foot, the floor is under the sole), then per track and
frame the lowest foot when it moves slower than ``max_speed`` or is among the track's slowest
30 % (distant people's feet jitter faster than any fixed speed), then RANSAC over those contact
points (normals within ``max_tilt_deg`` of the first up) refined by least squares on the
inliers, with the tilt about directions the contacts barely span taken from the up.

``estimate_floor_scaled`` frees each track's scale along its camera rays (monocular depth is the
least certain quantity) and searches the tilt with a pull towards the bodies' up; the Blender
scene uses ``floor_world_of_result`` (the plain fit: a per-track scale would change the bodies'
sizes). Measured on synthetic shots with known floors and on real footage: docs/floor.md
(``python -m engine.measure.floor``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# SMPL joints (engine/common/smpl_topology.py order)
PELVIS, NECK = 0, 12
L_ANKLE, R_ANKLE, L_FOOT, R_FOOT = 7, 8, 10, 11
FOOT_JOINTS = (L_ANKLE, R_ANKLE, L_FOOT, R_FOOT)
CAMERA_UP = np.array([0.0, -1.0, 0.0])     # a level camera's up, in its own frame
# Contacts spanning less than this (m) in a direction leave the floor's tilt about it to the
# bodies' up (plane_through): a single dancer's feet over 24 frames gave a 25 deg roll without.
TILT_SPREAD = 0.3
# A floor with the camera outside these heights (metres) is a failed estimate.
CAMERA_HEIGHT_RANGE = (0.1, 100.0)
# pull of the bodies' mean up on the scaled fit's normal: 10 deg of tilt costs as much as a
# 1.2 % relative residual everywhere (a single person's contacts barely constrain the tilt)
UP_WEIGHT = 0.01


@dataclass
class Floor:
    """normal (3,) up, camera frame; offset (camera height, m); contacts: the points it was
    fitted to (N, 3) and ``inliers`` (N,) bool; pitch / roll of the camera against the floor
    (degrees; pitch > 0: looking down; roll: see ``camera_roll_deg``)."""

    normal: np.ndarray
    offset: float
    contacts: np.ndarray
    inliers: np.ndarray

    @property
    def camera_height(self) -> float:
        return float(self.offset)

    @property
    def camera_pitch_deg(self) -> float:
        # the optical axis (0, 0, 1) against the floor: looking down when it points against the normal
        return float(np.degrees(np.arcsin(np.clip(-self.normal[2], -1.0, 1.0))))

    @property
    def camera_roll_deg(self) -> float:
        # > 0: the camera turned about its optical axis from the image's x towards its y axis
        return float(np.degrees(np.arcsin(np.clip(-self.normal[0], -1.0, 1.0))))


def heights(points: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """(..., 3) points -> (...) heights above the plane (metres)."""
    return np.asarray(points, np.float64) @ np.asarray(normal, np.float64) + float(offset)


def up_from_bodies(joints: np.ndarray) -> np.ndarray:
    """(N, 24, 3) posed joints, camera frame -> (3,) unit up: the mean pelvis -> neck direction
    (a level camera's up when there is none)."""
    j = np.asarray(joints, np.float64).reshape(-1, 24, 3)
    v = j[:, NECK] - j[:, PELVIS]
    v = v[np.all(np.isfinite(v), axis=1)]
    if len(v) == 0:
        return CAMERA_UP.copy()
    m = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)).mean(0)
    n = np.linalg.norm(m)
    return m / n if n > 1e-6 else CAMERA_UP.copy()


def foot_speeds(feet: np.ndarray, fps: float) -> np.ndarray:
    """(T, F, 3) foot positions of one track on consecutive frames -> (T, F) speeds (m/s),
    central differences (one-sided at the ends; 0 for a single frame)."""
    p = np.asarray(feet, np.float64)
    if len(p) < 2:
        return np.zeros(p.shape[:2])
    v = np.gradient(p, axis=0) * float(fps)
    return np.linalg.norm(v, axis=-1)


def sole_offsets(rest_joints: np.ndarray, rest_vertices: np.ndarray) -> np.ndarray:
    """Heights of ``FOOT_JOINTS`` above the sole in the rest pose: (24, 3) joints and (V, 3)
    vertices in the SMPL body frame (y up) -> (4,) metres."""
    j = np.asarray(rest_joints, np.float64)
    return j[list(FOOT_JOINTS), 1] - float(np.asarray(rest_vertices, np.float64)[:, 1].min())


def contact_points(feet: np.ndarray, fps: float, up: np.ndarray, max_speed: float = 0.3,
                   tolerance: float = 0.03, offsets=None, slowest: float = 0.3) -> np.ndarray:
    """(T, F, 3) one track's foot joints -> (N, 3) likely contacts on the floor: each joint
    lowered along ``up`` by its ``offsets`` (F,) above the sole, then per frame the points within
    ``tolerance`` of that frame's lowest that move slower than ``max_speed`` or are among the
    track's ``slowest`` share (a walker's planted foot, when small, distant people's estimates
    jitter by more than ``max_speed``)."""
    up = np.asarray(up, np.float64)
    p = np.asarray(feet, np.float64)
    if offsets is not None:
        p = p - np.asarray(offsets, np.float64)[None, :, None] * up
    h = p @ np.asarray(up, np.float64)
    low = h <= h.min(axis=1, keepdims=True) + tolerance
    speed = foot_speeds(p, fps)
    slow = speed < max(max_speed, float(np.quantile(speed, slowest))) if speed.size else speed > 0
    return p[low & slow]


def plane_through(points: np.ndarray, up=None, spread: float = 0.0) -> tuple:
    """(N >= 3, 3) -> least-squares plane (unit normal (3,), offset); normal sign arbitrary.

    With ``up`` and ``spread`` (m): tilting the normal away from ``up`` by a small angle a costs
    N (spread a)^2, as much as the residuals of points ``spread`` from the centre would: a
    direction the contacts span by less than that (one dancer's feet, a walker's straight line)
    takes its tilt from ``up`` instead of from noise."""
    c = points.mean(0)
    d = points - c
    S = d.T @ d
    if up is not None and spread > 0:
        u = np.asarray(up, np.float64) / np.linalg.norm(up)
        S = S + len(points) * spread ** 2 * (np.eye(3) - np.outer(u, u))
    n = np.linalg.eigh(S)[1][:, 0]
    return n, -float(n @ c)


def fit_plane(points: np.ndarray, up: np.ndarray, inlier_m: float = 0.04, max_tilt_deg: float = 35.0,
              iterations: int = 300, seed: int = 0) -> tuple:
    """RANSAC plane through (N, 3) points whose normal lies within ``max_tilt_deg`` of ``up``,
    refined by least squares on its inliers. -> (normal towards ``up``, offset, inliers (N,))."""
    pts = np.asarray(points, np.float64)
    up = np.asarray(up, np.float64) / np.linalg.norm(up)
    if len(pts) < 3:
        raise ValueError(f"a floor needs at least 3 foot contacts, got {len(pts)}")
    rng = np.random.default_rng(seed)
    cos_max = np.cos(np.radians(max_tilt_deg))
    best = np.zeros(len(pts), bool)
    for _ in range(iterations):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-9:
            continue
        n /= norm
        if n @ up < 0:
            n = -n
        if n @ up < cos_max:
            continue
        inl = np.abs(pts @ n - n @ a) < inlier_m
        if inl.sum() > best.sum():
            best = inl
    if best.sum() < 3:
        best = np.ones(len(pts), bool)
    for _ in range(3):     # refit, re-select at the refined plane
        n, d = plane_through(pts[best], up, TILT_SPREAD)
        if n @ up < 0:
            n, d = -n, -d
        again = np.abs(pts @ n + d) < inlier_m
        if again.sum() < 3 or np.array_equal(again, best):
            break
        best = again
    return n, d, best


def up_from_orientations(global_orients: np.ndarray) -> np.ndarray:
    """(N, 3, 3) SMPL global orientations (body -> camera frame) -> (3,) unit up: the mean
    direction of the body frame's y axis (up in SMPL's rest pose, so for people standing or
    walking upright the pelvis's up is gravity's; the pelvis -> neck line leans forward)."""
    m = np.asarray(global_orients, np.float64).reshape(-1, 3, 3)[:, :, 1].mean(0)
    n = np.linalg.norm(m)
    return m / n if n > 1e-6 else CAMERA_UP.copy()


def estimate_floor(tracks: list, fps: float, offsets, max_speed: float = 0.3, inlier_m: float = 0.04,
                   up=None) -> Floor:
    """One floor for a shot. ``tracks``: per person (T, 24, 3) posed joints in the camera
    frame on consecutive frames (split a track at its gaps); ``offsets`` (4,): the foot joints'
    heights above the sole (``sole_offsets``); ``up`` (3,) the bodies' up when known
    (``up_from_orientations``; default ``up_from_bodies``). Raises ValueError when too few feet
    stand still to define one."""
    tracks = [np.asarray(t, np.float64) for t in tracks if len(t)]
    if not tracks:
        raise ValueError("no people to find the floor from")
    up = up_from_bodies(np.concatenate(tracks)) if up is None else np.asarray(up, np.float64)
    contacts = [contact_points(t[:, list(FOOT_JOINTS)], fps, up, max_speed, offsets=offsets) for t in tracks]
    pts = np.concatenate(contacts) if contacts else np.zeros((0, 3))
    n, d, inliers = fit_plane(pts, up, inlier_m=inlier_m)
    return Floor(normal=n, offset=d, contacts=pts, inliers=inliers)


def _tilted(up: np.ndarray, ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
    """Unit normals (..., 3): ``up`` turned by angles (radians) about two axes across it."""
    e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    n = up + np.tan(ax)[..., None] * e1 + np.tan(ay)[..., None] * e2
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def scaled_plane_cost(normals: np.ndarray, contacts: list, keep: float = 0.8, up=None,
                      up_weight: float = 0.0) -> tuple:
    """For candidate normals (M, 3) and per-track contacts [(N_k, 3)], the best per-track scales
    along the camera rays and plane offset (scales' geometric mean 1) -> (cost (M,), offset (M,),
    scales (M, K)). cost: mean of the smallest ``keep`` share of squared relative residuals."""
    a = [c @ normals.T for c in contacts]                        # (N_k, M): n . q
    h = np.stack([-(x * x).sum(0) / np.minimum(x.sum(0), -1e-9) for x in a], 1)   # (M, K) > 0
    d = np.exp(np.log(np.maximum(h, 1e-9)).mean(1))             # (M,)
    scales = d[:, None] / np.maximum(h, 1e-9)
    r = np.concatenate([(x * scales[:, k] + d) / d for k, x in enumerate(a)], 0)   # (N, M)
    r2 = np.sort(r * r, axis=0)[: max(1, int(keep * len(r)))]
    cost = r2.mean(0)
    if up is not None and up_weight > 0:   # people stand upright on average: gravity, measured
        cost = cost + up_weight * (1.0 - normals @ up)
    return cost, d, scales


def estimate_floor_scaled(tracks: list, fps: float, offsets, max_speed: float = 0.3, inlier_m: float = 0.04,
                          max_tilt_deg: float = 35.0, up_weight: float = UP_WEIGHT) -> tuple:
    """Like ``estimate_floor``, with each track's depth free: its points scaled about the
    camera by s_k (the projection stays; monocular depth is the least certain quantity) so that
    every track's contacts lie on one floor; the scales' geometric mean is 1 (the bodies' sizes
    are right on average). A coarse-to-fine search over the normal's tilt from the bodies' up.
    -> (Floor of the scaled contacts, scales (K,) per track given)."""
    tracks = [np.asarray(t, np.float64) for t in tracks]
    if not tracks:
        raise ValueError("no people to find the floor from")
    up = up_from_bodies(np.concatenate(tracks))
    contacts = [contact_points(t[:, list(FOOT_JOINTS)], fps, up, max_speed, offsets=offsets) for t in tracks]
    used = [k for k, c in enumerate(contacts) if len(c) >= 3]
    if sum(len(contacts[k]) for k in used) < 3:
        raise ValueError("a floor needs at least 3 foot contacts")
    cs = [contacts[k] for k in used]
    centre, span = np.zeros(2), np.radians(max_tilt_deg)
    for step in (np.radians(2.5), np.radians(0.25), np.radians(0.025)):
        g = np.arange(-span, span + step / 2, step)
        ax, ay = np.meshgrid(centre[0] + g, centre[1] + g, indexing="ij")
        normals = _tilted(up, ax.ravel(), ay.ravel())
        cost = scaled_plane_cost(normals, cs, up=up, up_weight=up_weight)[0]
        best = int(np.argmin(cost))
        centre, span = np.array([ax.ravel()[best], ay.ravel()[best]]), 4 * step
    n = _tilted(up, centre[:1], centre[1:])[0]
    _, d, sc = scaled_plane_cost(n[None], cs)
    scales = np.ones(len(tracks))
    scales[used] = sc[0]
    pts = np.concatenate([c * scales[k] for k, c in enumerate(contacts) if len(c)])
    inliers = np.abs(pts @ n + d[0]) < inlier_m
    return Floor(normal=n, offset=float(d[0]), contacts=pts, inliers=inliers), scales


def consecutive_runs(frames: np.ndarray) -> list:
    """(T,) increasing frame indices -> index arrays of the runs without gaps."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        return []
    cuts = np.flatnonzero(np.diff(frames) != 1) + 1
    return np.split(np.arange(len(frames)), cuts)


def floor_of_result(result, **kw) -> Floor:
    """``estimate_floor`` over every track of a result file (``result_schema.MotionResult``
    with rig data): posed joints by FK, tracks split at their gaps, each track's sole offsets
    from its own rest mesh (averaged over the tracks), the bodies' up from their pelvis
    orientations."""
    from .kinematics import posed_joints

    pieces, offsets, orients = [], [], []
    for tr in result.tracks.values():
        R = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)
        orients.append(np.asarray(tr.global_orient_rotmat, np.float64))
        joints = posed_joints(R, tr.rest_joints, result.body.parents, tr.transl)
        pieces += [joints[run] for run in consecutive_runs(tr.frames)]
        offsets.append(sole_offsets(tr.rest_joints, tr.rest_vertices))
    fps = float(result.meta.get("video", {}).get("fps") or 30.0)
    up = up_from_orientations(np.concatenate(orients)) if orients else None
    return estimate_floor(pieces, fps, np.mean(offsets, axis=0) if offsets else None, up=up, **kw)


def floor_world_of_result(result, **kw) -> tuple:
    """The floor world of a result (``floor_of_result`` then ``world_from_camera``).
    -> ((R, t), Floor). Raises ValueError saying why when there is no floor, or when the
    camera would stand outside ``CAMERA_HEIGHT_RANGE`` above it (a failed estimate)."""
    fl = floor_of_result(result, **kw)
    lo, hi = CAMERA_HEIGHT_RANGE
    if not lo <= fl.camera_height <= hi:
        raise ValueError(f"the camera would stand {fl.camera_height:.2f} m above the floor found")
    return world_from_camera(fl.normal, fl.offset), fl


def world_from_camera(normal: np.ndarray, offset: float) -> tuple:
    """The floor world of a plane -> (R (3, 3), t (3,)) with ``world = R @ p_camera + t``:
    Z = the normal, the floor at Z = 0, the camera at (0, 0, offset), its optical axis
    projected onto the floor along +Y (straight down or up: the image's down is -Y)."""
    z = np.asarray(normal, np.float64) / np.linalg.norm(normal)
    forward = np.array([0.0, 0.0, 1.0]) - z[2] * z        # optical axis on the floor
    if np.linalg.norm(forward) < 1e-6:
        forward = -(np.array([0.0, 1.0, 0.0]) - z[1] * z)
    y = forward / np.linalg.norm(forward)
    x = np.cross(y, z)
    R = np.stack([x, y, z])                                # rows: the world axes in camera coordinates
    return R, np.array([0.0, 0.0, float(offset)])


__all__ = ["Floor", "heights", "up_from_bodies", "foot_speeds", "sole_offsets", "contact_points", "plane_through", "fit_plane",
           "estimate_floor", "scaled_plane_cost", "estimate_floor_scaled", "consecutive_runs", "floor_of_result", "floor_world_of_result", "up_from_orientations", "world_from_camera", "FOOT_JOINTS"]
