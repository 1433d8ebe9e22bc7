"""Fit BlazePose GHUM landmarks onto the SMPL-format rig, batched over frames (torch).

Pipeline of ``fit_track`` (docs/landmark-fit.md):

1. frames with presence < ``presence_threshold`` are gaps (``valid`` False, NaN outputs);
2. left/right swaps are found per body part by temporal consistency (a two-state dynamic
   programme over the valid frames) and undone on the landmarks;
3. the shape comes from robust (median) bone lengths of the world landmarks;
4. per frame: analytic rotations (pelvis frame, two-bone limb swings with the hinge
   plane, hand / foot / head frames), then Adam over 6D rotations of joints 0..21
   against the world landmarks, the 2D landmarks through the camera, hand directions, the
   learned pose prior and soft joint limits; the translation is solved in closed form
   from the 2D landmarks at every step (known focal length, metric body).

Shapes: T frames of a track, N frames fitted together, L = 33 landmarks, J = 24 joints.
Camera frame: OpenCV (x right, y down, z forward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from engine.fit import correspondence as corr
from engine.fit.prior import (JointLimits, PosePrior, default_joint_limits, joint_limit_excess,
                              load_pose_prior, pose_prior_nll)
from engine.model.geometry import rot6d_to_rotmat, rotmat_to_axis_angle, rotmat_to_rot6d

NUM_JOINTS = 24
NUM_FITTED_JOINTS = 22  # SMPL's hand joints (22, 23) have no landmarks: kept at identity
L_HIP, R_HIP, L_SH, R_SH = corr.LANDMARK["left_hip"], corr.LANDMARK["right_hip"], 11, 12


@dataclass(frozen=True)
class FitParams:
    """Weights and settings of the fit (defaults used by the tests and the docs)."""

    presence_threshold: float = 0.5   # below: the frame is a gap
    iterations: int = 60              # Adam steps over all frames at once
    learning_rate: float = 0.04       # on the 6D entries; cosine-decayed to 10%
    weight_3d: float = 1.0            # world landmarks (metres)
    weight_2d: float = 1.0            # image landmarks (pixels * depth / focal: metres)
    weight_hand: float = 0.1          # hand unit directions (squared chord)
    weight_prior: float = 1e-2        # GMM negative log-likelihood
    weight_limits: float = 1.0        # squared radians outside the joint limits
    robust_scale_m: float = 0.03      # Charbonnier scale of the position residuals
    swap_bias: float = 0.1            # cost of calling one frame swapped (left-right separations)
    shape_min_visibility: float = 0.5
    chunk_frames: int = 512           # frames per optimisation batch (memory bound)


MAX_INFLUENCES = 4  # SMPL skins every vertex with at most 4 joints


class Rig(NamedTuple):
    """One shaped body, torch float32: rest_joints (24, 3), rest_points (33, 3) landmark
    points, point_joints (33, 4) long and point_weights (33, 4): each point's strongest
    skinning joints and weights, parents (24,) long, levels: joint index tensors by depth
    in the tree (FK runs one level at a time)."""

    rest_joints: torch.Tensor
    rest_points: torch.Tensor
    point_joints: torch.Tensor
    point_weights: torch.Tensor
    parents: torch.Tensor
    levels: tuple


@dataclass
class FitResult:
    """Per frame of the track (T). Gap frames (valid False) hold NaN.

    rotmat (T, 24, 3, 3) float32: local rotations, joint 0 = global orient (camera frame);
    transl (T, 3): camera-frame joints = FK(rotmat, rest joints)[0] + transl;
    betas (10,); joints (T, 24, 3) camera frame; valid (T,) bool;
    swapped (T, 3) bool: left/right repaired per group (``correspondence.SWAP_GROUP_NAMES``);
    residual_3d_m (T,): visibility-weighted mean world-landmark distance (metres);
    residual_2d_px (T,): visibility-weighted mean reprojection distance (pixels)."""

    rotmat: np.ndarray
    transl: np.ndarray
    betas: np.ndarray
    joints: np.ndarray
    valid: np.ndarray
    swapped: np.ndarray
    residual_3d_m: np.ndarray
    residual_2d_px: np.ndarray


# ----------------------------------------------------------------------------------
# Body: shape -> rig, forward kinematics, landmark points
# ----------------------------------------------------------------------------------
def joint_levels(parents) -> tuple:
    """parents (J,) -> joint index tensors grouped by depth (root first)."""
    parents = [int(p) for p in parents]
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return tuple(torch.tensor([j for j in range(len(parents)) if depth[j] == d])
                 for d in range(max(depth) + 1))


def make_rig(basis: corr.LandmarkBasis, betas) -> Rig:
    """Rest joints and landmark points for a shape. betas (B,) -> Rig."""
    b = np.zeros(basis.joint_dirs.shape[-1])
    betas = np.asarray(betas, np.float64).reshape(-1)
    b[:min(len(b), len(betas))] = betas[:len(b)]
    f32 = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    top = np.argsort(-basis.weights, axis=1)[:, :MAX_INFLUENCES]
    w = np.take_along_axis(basis.weights, top, axis=1)
    return Rig(f32(basis.joints0 + basis.joint_dirs @ b), f32(basis.points0 + basis.point_dirs @ b),
               torch.as_tensor(top), f32(w / w.sum(1, keepdims=True)), torch.as_tensor(basis.parents),
               joint_levels(basis.parents))


def forward_kinematics(rotmats: torch.Tensor, rig: Rig) -> tuple:
    """rotmats (N, 24, 3, 3) local -> (joints (N, 24, 3), world rotations (N, 24, 3, 3)).

    Same convention as ``engine.common.kinematics.forward_kinematics``: the root stays at
    its rest position (no translation)."""
    N = rotmats.shape[0]
    J = rig.rest_joints
    order = torch.cat(rig.levels)
    slot = torch.empty_like(order)
    slot[order] = torch.arange(len(order))
    world = rotmats[:, rig.levels[0]]
    pos = J[rig.levels[0]].expand(N, -1, -1)
    for idx in rig.levels[1:]:
        par_slot = slot[rig.parents[idx]]
        Rp = world[:, par_slot]
        bone = (J[idx] - J[rig.parents[idx]])[None, :, :, None]
        pos = torch.cat([pos, pos[:, par_slot] + (Rp @ bone).squeeze(-1)], dim=1)
        world = torch.cat([world, Rp @ rotmats[:, idx]], dim=1)
    return pos[:, slot], world[:, slot]


def skin_points(joints: torch.Tensor, world_R: torch.Tensor, rig: Rig) -> torch.Tensor:
    """Linear blend skinning of the landmark points (no pose correctives).

    joints (N, 24, 3), world_R (N, 24, 3, 3) -> (N, 33, 3), same frame as the joints.
    The joints' transforms are blended first (a (33, 24) weight table times the 24 matrices):
    for the silhouette term's 1000 points, 2-3 times faster than transforming each point by its
    four joints and blending the results, the same sum."""
    N, J = world_R.shape[:2]
    W = torch.zeros(rig.rest_points.shape[0], J, dtype=world_R.dtype).scatter_add_(
        1, rig.point_joints, rig.point_weights)                                  # (33, 24)
    offset = joints - (world_R @ rig.rest_joints[..., None]).squeeze(-1)         # (N, 24, 3)
    blended = (W @ torch.cat([world_R.reshape(N, J, 9), offset], -1)).reshape(N, -1, 4, 3)
    return (blended[..., :3, :] @ rig.rest_points[..., None]).squeeze(-1) + blended[..., 3, :]


def assemble_rotations(rot6d: torch.Tensor) -> torch.Tensor:
    """rot6d (N, 22, 6) of joints 0..21 -> (N, 24, 3, 3) with the hand joints at identity."""
    R = rot6d_to_rotmat(rot6d)
    eye = torch.eye(3, dtype=R.dtype).expand(R.shape[0], NUM_JOINTS - NUM_FITTED_JOINTS, 3, 3)
    return torch.cat([R, eye], dim=1)


# ----------------------------------------------------------------------------------
# Small geometry helpers
# ----------------------------------------------------------------------------------
def _unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v, dim=-1, eps=1e-9)


def rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation taking direction a to direction b. a, b (..., 3) -> (..., 3, 3)."""
    a, b = _unit(a), _unit(b)
    v = torch.cross(a, b, dim=-1)
    c = (a * b).sum(-1).clamp(min=-1 + 1e-4)
    zero = torch.zeros_like(c)
    K = torch.stack([torch.stack([zero, -v[..., 2], v[..., 1]], -1),
                     torch.stack([v[..., 2], zero, -v[..., 0]], -1),
                     torch.stack([-v[..., 1], v[..., 0], zero], -1)], -2)
    eye = torch.eye(3, dtype=a.dtype).expand(K.shape)
    return eye + K + (K @ K) / (1 + c)[..., None, None]


def frame_from_vectors(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Orthonormal frame (..., 3, 3), columns [u, v without its u part, their cross]."""
    e1 = _unit(u)
    e2 = _unit(v - (v * e1).sum(-1, keepdim=True) * e1)
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], dim=-1)


def align_two_directions(u_rest, v_rest, u_obs, v_obs) -> torch.Tensor:
    """Rotation taking u_rest onto u_obs and v_rest into the (u_obs, v_obs) half-plane."""
    return frame_from_vectors(u_obs, v_obs) @ frame_from_vectors(u_rest, v_rest).transpose(-1, -2)


def _mv(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (R @ v[..., None]).squeeze(-1)


# ----------------------------------------------------------------------------------
# Analytic initialisation
# ----------------------------------------------------------------------------------
def _hip_centre(points: torch.Tensor) -> torch.Tensor:
    return 0.5 * (points[..., L_HIP, :] + points[..., R_HIP, :])


def pelvis_orientation(world: torch.Tensor, rig: Rig) -> torch.Tensor:
    """Global orient from the hip line and the hip -> shoulder direction.

    world (N, 33, 3) -> (N, 3, 3) (spine straight: the trunk bend goes to the root)."""
    p = rig.rest_points
    u_rest, v_rest = p[L_HIP] - p[R_HIP], 0.5 * (p[L_SH] + p[R_SH]) - _hip_centre(p)
    u_obs = world[:, L_HIP] - world[:, R_HIP]
    v_obs = 0.5 * (world[:, L_SH] + world[:, R_SH]) - _hip_centre(world)
    return align_two_directions(u_rest.expand_as(u_obs), v_rest.expand_as(v_obs), u_obs, v_obs)


def limb_rotations(G_parent, top, mid, end, bone1, bone2, hinge) -> tuple:
    """Two-bone limb (shoulder-elbow-wrist, hip-knee-ankle) from three observed points.

    G_parent (N, 3, 3) world rotation of the limb's parent; top/mid/end (N, 3) observed
    joint positions; bone1, bone2, hinge (3,) rest upper bone, lower bone and the middle
    joint's flexion axis (positive flexion about it). The upper bone is aimed at the
    middle joint with its hinge normal to the observed limb plane (the plain swing's
    hinge when the limb is nearly straight and the plane is undefined); the middle joint
    is then the swing of the lower bone.
    -> (local top (N, 3, 3), local middle (N, 3, 3), world middle (N, 3, 3))."""
    d1, d2 = mid - top, end - mid
    swing = rotation_between(_mv(G_parent, bone1.expand_as(d1)), d1) @ G_parent
    hinge_swing = _mv(swing, hinge.expand_as(d1))
    n = torch.cross(d1, d2, dim=-1)
    sin_bend = n.norm(dim=-1, keepdim=True) / (d1.norm(dim=-1, keepdim=True) * d2.norm(dim=-1, keepdim=True) + 1e-9)
    blend = (sin_bend / 0.25).clamp(0, 1)
    hinge_obs = _unit(blend * _unit(n) + (1 - blend) * hinge_swing)
    G_top = align_two_directions(bone1.expand_as(d1), hinge.expand_as(d1), d1, hinge_obs)
    R_mid = rotation_between(bone2.expand_as(d2), _mv(G_top.transpose(-1, -2), d2))
    return G_parent.transpose(-1, -2) @ G_top, R_mid, G_top @ R_mid


def _frame_or_identity(G_parent, G_child, ok) -> torch.Tensor:
    """Local rotation G_parent^T G_child where ok (N,), identity elsewhere."""
    local = G_parent.transpose(-1, -2) @ G_child
    eye = torch.eye(3, dtype=local.dtype).expand_as(local)
    return torch.where(ok[:, None, None], local, eye)


def initial_rotations(world: torch.Tensor, visibility: torch.Tensor, rig: Rig) -> torch.Tensor:
    """Analytic 24 local rotations from the world landmarks (spine, collars, neck straight).

    world (N, 33, 3) hip-centred camera-frame landmarks, visibility (N, 33) -> (N, 24, 3, 3)."""
    N = world.shape[0]
    J, p = rig.rest_joints, rig.rest_points
    eye = torch.eye(3, dtype=world.dtype).expand(N, 3, 3)
    R = [eye] * NUM_JOINTS
    R0 = pelvis_orientation(world, rig)
    R[0] = R0
    c_rest = _hip_centre(p)
    x_axis, y_axis = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    G_leg_mid = {}
    for side, hip, knee, ankle, lm_knee, lm_ankle in (("l", 1, 4, 7, 25, 27), ("r", 2, 5, 8, 26, 28)):
        hip_obs = _mv(R0, (J[hip] - c_rest).expand(N, 3))
        R[hip], R[knee], G_leg_mid[side] = limb_rotations(
            R0, hip_obs, world[:, lm_knee], world[:, lm_ankle], J[knee] - J[hip], J[ankle] - J[knee], x_axis)
    G_arm_mid = {}
    for side, sh, el, wr, lm, sign in (("l", 16, 18, 20, 11, -1.0), ("r", 17, 19, 21, 12, 1.0)):
        R[sh], R[el], G_arm_mid[side] = limb_rotations(
            R0, world[:, lm], world[:, lm + 2], world[:, lm + 4], J[el] - J[sh], J[wr] - J[el], sign * y_axis)
    rows = torch.as_tensor(corr.HAND_DIRECTIONS)
    for n, (side, wr, lw, lp, li) in enumerate((("l", 20, 15, 17, 19), ("r", 21, 16, 18, 20))):
        hand_rest, palm_rest = rows[3 * n] @ p, rows[3 * n + 1] @ p
        hand_obs = torch.einsum("l,nlc->nc", rows[3 * n], world)
        palm_obs = torch.einsum("l,nlc->nc", rows[3 * n + 1], world)
        G_hand = align_two_directions(hand_rest.expand(N, 3), palm_rest.expand(N, 3), hand_obs, palm_obs)
        ok = visibility[:, [lw, lp, li]].min(-1).values > 0.3
        R[wr] = _frame_or_identity(G_arm_mid[side], G_hand, ok)
    for side, ank, heel, toe, lm_ank in (("l", 7, 29, 31, 27), ("r", 8, 30, 32, 28)):
        G_foot = align_two_directions((p[toe] - p[heel]).expand(N, 3), (p[lm_ank] - p[heel]).expand(N, 3),
                                      world[:, toe] - world[:, heel], world[:, lm_ank] - world[:, heel])
        G_shin = G_leg_mid[side]
        ok = visibility[:, [heel, toe, lm_ank]].min(-1).values > 0.3
        R[ank] = _frame_or_identity(G_shin, G_foot, ok)
    ears_rest, ears_obs = 0.5 * (p[7] + p[8]), 0.5 * (world[:, 7] + world[:, 8])
    G_head = align_two_directions((p[7] - p[8]).expand(N, 3), (p[0] - ears_rest).expand(N, 3),
                                  world[:, 7] - world[:, 8], world[:, 0] - ears_obs)
    ok = visibility[:, [0, 7, 8]].min(-1).values > 0.3
    R[15] = _frame_or_identity(R0, G_head, ok)
    return torch.stack(R, dim=1)


# ----------------------------------------------------------------------------------
# Camera
# ----------------------------------------------------------------------------------
def project(points: torch.Tensor, focal: torch.Tensor, principal_point: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (N, L, 3) -> pixels (N, L, 2). focal (N,), principal_point (N, 2)."""
    z = points[..., 2:].clamp(min=1e-3)
    return focal[:, None, None] * points[..., :2] / z + principal_point[:, None, :]


def solve_translation(points: torch.Tensor, image: torch.Tensor, weights: torch.Tensor,
                      focal: torch.Tensor, principal_point: torch.Tensor) -> torch.Tensor:
    """Closed-form translation placing root-relative points on their pixels.

    points (N, L, 3) body points without translation, image (N, L, 2) pixels, weights
    (N, L), focal (N,), principal_point (N, 2) -> (N, 3). Weighted linear least squares of
    (X + tx) - a (Z + tz) = 0 with a = (u - cx) / f (a metric error at the point's depth);
    a weak pull to (0, 0, 3 m) keeps frames without weights well posed."""
    a = (image - principal_point[:, None, :]) / focal[:, None, None]              # (N, L, 2)
    one, zero = torch.ones_like(a[..., 0]), torch.zeros_like(a[..., 0])
    rows = torch.stack([torch.stack([one, zero, -a[..., 0]], -1),
                        torch.stack([zero, one, -a[..., 1]], -1)], dim=2).reshape(a.shape[0], -1, 3)
    rhs = torch.stack([a[..., 0] * points[..., 2] - points[..., 0],
                       a[..., 1] * points[..., 2] - points[..., 1]], dim=2).reshape(a.shape[0], -1)
    w = weights.repeat_interleave(2, dim=1)
    reg = 1e-6
    lhs = torch.einsum("nki,nk,nkj->nij", rows, w, rows) + reg * torch.eye(3)
    b = torch.einsum("nki,nk,nk->ni", rows, w, rhs) + reg * torch.tensor([0.0, 0.0, 3.0])
    return torch.linalg.solve(lhs, b)


# ----------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------
def charbonnier(r: torch.Tensor, scale: float) -> torch.Tensor:
    """Robust cost of a distance r: ~ r^2 / (2 scale) when small, ~ r when large."""
    return scale * (torch.sqrt(1 + (r / scale) ** 2) - 1)


def world_residuals(points: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
    """Distances (N, 33) between model and observed landmarks, each centred on its own
    hip midpoint (BlazePose's world origin). points, world (N, 33, 3)."""
    return ((points - _hip_centre(points)[:, None]) - (world - _hip_centre(world)[:, None])).norm(dim=-1)


def image_residuals_m(points_cam: torch.Tensor, image: torch.Tensor, focal, principal_point) -> torch.Tensor:
    """Reprojection distances (N, 33) in pixels and scaled to metres at each point's depth
    (pixels * z / f), so they weigh like the world residuals. -> (pixels, metres)."""
    px = (project(points_cam, focal, principal_point) - image).norm(dim=-1)
    return px, px * points_cam[..., 2].detach().clamp(min=0.1) / focal[:, None]


def hand_direction_errors(points: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
    """Squared chord between model and observed hand unit directions. -> (N, 6)."""
    rows = torch.as_tensor(corr.HAND_DIRECTIONS)
    dm = _unit(torch.einsum("dl,nlc->ndc", rows, points))
    do = _unit(torch.einsum("dl,nlc->ndc", rows, world))
    return ((dm - do) ** 2).sum(-1)


def landmark_weights(visibility: torch.Tensor) -> tuple:
    """visibility (N, 33) -> (position weights (N, 33), hand direction weights (N, 6))."""
    pos = visibility * torch.as_tensor(corr.POSITION_WEIGHT)
    rows = torch.as_tensor(corr.HAND_DIRECTIONS) != 0                                  # (6, 33)
    vis = visibility[:, None, :].expand(-1, rows.shape[0], -1)
    hand = torch.where(rows[None], vis, torch.ones_like(vis)).min(-1).values
    return pos, hand


# ----------------------------------------------------------------------------------
# The per-frame rotation fit
# ----------------------------------------------------------------------------------
def fit_rotations(world, image, visibility, focal, principal_point, rig: Rig, prior: PosePrior,
                  limits: JointLimits, params: FitParams = FitParams()) -> tuple:
    """Rotations and translation of N frames at once.

    world (N, 33, 3), image (N, 33, 2), visibility (N, 33), focal (N,), principal_point (N, 2)
    -> (rotmat (N, 24, 3, 3), transl (N, 3), residual_3d_m (N,), residual_2d_px (N,))."""
    w_pos, w_hand = landmark_weights(visibility)
    rot6d = rotmat_to_rot6d(initial_rotations(world, visibility, rig)[:, :NUM_FITTED_JOINTS]).clone()
    rot6d.requires_grad_(True)
    opt = torch.optim.Adam([rot6d], lr=params.learning_rate)
    for it in range(params.iterations):
        for group in opt.param_groups:  # cosine decay to 10%
            group["lr"] = params.learning_rate * (0.55 + 0.45 * np.cos(np.pi * it / max(params.iterations, 1)))
        R = assemble_rotations(rot6d)
        joints, world_R = forward_kinematics(R, rig)
        pts = skin_points(joints, world_R, rig)
        transl = solve_translation(pts.detach(), image, w_pos, focal, principal_point)
        _, r2d = image_residuals_m(pts + transl[:, None], image, focal, principal_point)
        r3d = world_residuals(pts, world)
        loss = (params.weight_3d * (w_pos * charbonnier(r3d, params.robust_scale_m)).sum()
                + params.weight_2d * (w_pos * charbonnier(r2d, params.robust_scale_m)).sum()
                + params.weight_hand * (w_hand * hand_direction_errors(pts, world)).sum()
                + params.weight_prior * pose_prior_nll(prior, rotmat_to_axis_angle(R[:, 1:]).flatten(1)).sum()
                + params.weight_limits * (joint_limit_excess(R, limits) ** 2).sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        R = assemble_rotations(rot6d)
        joints, world_R = forward_kinematics(R, rig)
        pts = skin_points(joints, world_R, rig)
        transl = solve_translation(pts, image, w_pos, focal, principal_point)
        px, _ = image_residuals_m(pts + transl[:, None], image, focal, principal_point)
        r3d = world_residuals(pts, world)
        norm = w_pos.sum(-1).clamp(min=1e-6)
        return R, transl, (w_pos * r3d).sum(-1) / norm, (w_pos * px).sum(-1) / norm


# ----------------------------------------------------------------------------------
# Shape
# ----------------------------------------------------------------------------------
def _bone_vectors(points, bones) -> list:
    """points (..., 33, 3) (numpy or torch) -> one (..., 3) vector per bone (end - start)."""
    return [sum(points[..., j, :] for j in b) / len(b) - sum(points[..., i, :] for i in a) / len(a)
            for a, b in bones]


def observed_bone_lengths(world, visibility, usable, min_visibility: float = 0.5) -> np.ndarray:
    """Median bone lengths (``correspondence.SHAPE_BONES``) over the usable frames where
    both ends are visible enough. world (T, 33, 3), visibility (T, 33), usable (T,) bool
    -> (K,) metres, NaN where no frame qualifies."""
    world, visibility = np.asarray(world, np.float64), np.asarray(visibility, np.float64)
    out = []
    for (a, b), vec in zip(corr.SHAPE_BONES, _bone_vectors(world, corr.SHAPE_BONES)):
        ok = np.asarray(usable, bool) & (visibility[:, list(a) + list(b)].min(-1) >= min_visibility)
        out.append(float(np.median(np.linalg.norm(vec[ok], axis=-1))) if ok.any() else np.nan)
    return np.asarray(out)


def model_bone_lengths(basis: corr.LandmarkBasis, betas) -> np.ndarray:
    """The rest-pose lengths of the same bones for a shape. betas (B,) -> (K,)."""
    pts = basis.points0 + basis.point_dirs @ np.asarray(betas, np.float64)
    return np.array([np.linalg.norm(v) for v in _bone_vectors(pts, corr.SHAPE_BONES)])


def betas_from_bone_lengths(lengths, basis: corr.LandmarkBasis, ridge: float = 1e-4, iters: int = 15,
                            max_abs: float = 5.0) -> np.ndarray:
    """Gauss-Newton on |A_k b + d_k| = length_k with a ridge towards the mean shape.

    The ridge weighs a unit of beta like 1 cm of bone length (``ridge`` = 0.01^2): a few
    bones cannot pull the unobserved components to the clip (they did with 1e-5).

    lengths (K,) (NaN = unknown) -> betas (B,) float32, clipped to +-max_abs."""
    A = _bone_vectors(basis.point_dirs.transpose(2, 0, 1), corr.SHAPE_BONES)     # K x (B, 3)
    A = np.stack([a.T for a in A])                                               # (K, 3, B)
    d = np.stack(_bone_vectors(basis.points0, corr.SHAPE_BONES))                 # (K, 3)
    keep = np.isfinite(lengths)
    A, d, target = A[keep], d[keep], np.asarray(lengths)[keep]
    B = A.shape[-1]
    b = np.zeros(B)
    for _ in range(iters):
        v = d + A @ b                                        # (K, 3)
        cur = np.linalg.norm(v, axis=-1)
        jac = np.einsum("kc,kcb->kb", v / cur[:, None], A)   # d|v|/db
        lhs = jac.T @ jac + ridge * np.eye(B)
        rhs = jac.T @ (target - cur) - ridge * b
        b = np.clip(b + np.linalg.solve(lhs, rhs), -max_abs, max_abs)
    return b.astype(np.float32)


def fit_shape(world, visibility, body, usable=None, min_visibility: float = 0.5) -> np.ndarray:
    """Body shape of a track from robust bone lengths.

    world (T, 33, 3), visibility (T, 33), body: ``BodyModelData`` or ``LandmarkBasis``,
    usable (T,) bool (default: all frames) -> betas (B,) float32. The hip width is not
    used (BlazePose's hips are not SMPL's hip joints, see ``correspondence``)."""
    basis = body if isinstance(body, corr.LandmarkBasis) else corr.landmark_basis(body)
    world = np.asarray(world, np.float64)
    usable = np.ones(len(world), bool) if usable is None else np.asarray(usable, bool)
    return betas_from_bone_lengths(observed_bone_lengths(world, visibility, usable, min_visibility), basis)


# ----------------------------------------------------------------------------------
# Left/right swaps
# ----------------------------------------------------------------------------------
def _group_jump(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted mean distance (n,) between landmark sets a, b (n, m, 3), weights (n, m)."""
    return (w * np.linalg.norm(a - b, axis=-1)).sum(-1) / np.maximum(w.sum(-1), 1e-6)


def swap_labels_for_group(world, visibility, frames, group: str, bias: float) -> np.ndarray:
    """Which of the given frames have the group's left/right labels swapped.

    Two states per frame (as given, swapped); a transition costs the landmarks' jump
    between consecutive frames in those states, calling a frame swapped costs ``bias``.
    Jumps are measured in units of the group's typical left-right separation (median over
    the track), so a swap costs about 1 on entering and 1 on leaving whatever the group's
    size (face or legs). The cheapest state sequence (Viterbi) wins: a run of up to about
    2 / bias frames that jumps to the mirror and back is repaired; a longer one is kept
    (the majority labelling defines left and right).
    world (T, 33, 3) hip-centred, visibility (T, 33), frames (n,) indices in time order
    -> (n,) bool."""
    n = len(frames)
    if n == 0:
        return np.zeros(0, bool)
    ids = corr.group_landmarks(group)
    perm = corr.swap_permutation([group])
    x, xs = world[frames][:, ids], world[frames][:, perm[ids]]
    w = visibility[frames][:, ids] * visibility[frames][:, perm[ids]]
    separation = float(np.median(_group_jump(x, xs, w)))
    x, xs = x / max(separation, 1e-3), xs / max(separation, 1e-3)
    states = (x, xs)
    wt = w[1:] * w[:-1]
    # trans[t - 1, s, r]: jump into frame t in state s from frame t - 1 in state r
    trans = np.stack([np.stack([_group_jump(states[s][1:], states[r][:-1], wt) for r in (0, 1)], -1)
                      for s in (0, 1)], -2)
    unary = np.array([0.0, bias])
    cost = unary.copy()
    back = np.zeros((n, 2), np.int64)
    for t in range(1, n):
        total = cost[None, :] + trans[t - 1]
        back[t] = total.argmin(1)
        cost = total.min(1) + unary
    path = np.zeros(n, np.int64)
    path[-1] = int(cost.argmin())
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path.astype(bool)


def detect_left_right_swaps(world, visibility, valid, bias: float = 0.1) -> np.ndarray:
    """Swapped frames per group. world (T, 33, 3), visibility (T, 33), valid (T,) bool
    -> (T, G) bool over ``correspondence.SWAP_GROUP_NAMES`` (False on gap frames)."""
    world = np.asarray(world, np.float64)
    world = world - 0.5 * (world[:, L_HIP:L_HIP + 1] + world[:, R_HIP:R_HIP + 1])
    visibility = np.asarray(visibility, np.float64)
    frames = np.flatnonzero(np.asarray(valid, bool))
    out = np.zeros((len(world), len(corr.SWAP_GROUP_NAMES)), bool)
    for g, name in enumerate(corr.SWAP_GROUP_NAMES):
        out[frames, g] = swap_labels_for_group(world, visibility, frames, name, bias)
    return out


def apply_swaps(landmarks: np.ndarray, swapped: np.ndarray) -> np.ndarray:
    """Exchange the left/right landmarks of the flagged groups.

    landmarks (T, 33, ...) any per-landmark array, swapped (T, G) bool -> same shape."""
    out = np.array(landmarks, copy=True)
    for g, name in enumerate(corr.SWAP_GROUP_NAMES):
        t = np.flatnonzero(swapped[:, g])
        if len(t):
            out[t] = out[t][:, corr.swap_permutation([name])]
    return out


# ----------------------------------------------------------------------------------
# The track
# ----------------------------------------------------------------------------------
def _per_frame(x, T: int, width: int) -> np.ndarray:
    """A scalar / (width,) / (T,) / (T, width) camera value -> (T,) or (T, width) float."""
    a = np.asarray(x, np.float64)
    if width == 1:
        return np.broadcast_to(a.reshape(-1) if a.ndim else a, (T,)).astype(np.float64)
    return np.broadcast_to(a, (T, width)).astype(np.float64)


def fit_track(world, image, visibility, presence, focal_px, principal_point, body=None, betas=None,
              prior: Optional[PosePrior] = None, params: FitParams = FitParams()) -> FitResult:
    """Fit one person's landmark track.

    world (T, 33, 3) metres, hip-centred, camera axes; image (T, 33, 2) pixels;
    visibility (T, 33) and presence (T,) in [0, 1]; focal_px scalar or (T,);
    principal_point (2,) or (T, 2) pixels; body: ``BodyModelData`` (default: the
    mannequin) or a prepared ``LandmarkBasis``; betas: a known shape (skips the shape
    fit); prior: default ``weights/pose_prior.npz``.
    -> FitResult (gap frames: valid False and NaN values)."""
    world = np.asarray(world, np.float64)
    image = np.asarray(image, np.float64)
    visibility = np.clip(np.asarray(visibility, np.float64), 0.0, 1.0)
    T = world.shape[0]
    valid = np.asarray(presence, np.float64).reshape(T) >= params.presence_threshold
    if body is None:
        from engine.body.mannequin import default_mannequin
        body = default_mannequin()
    basis = body if isinstance(body, corr.LandmarkBasis) else corr.landmark_basis(body)
    prior = load_pose_prior() if prior is None else prior
    limits = default_joint_limits()

    swapped = detect_left_right_swaps(world, visibility, valid, params.swap_bias)
    world, image, visibility = (apply_swaps(a, swapped) for a in (world, image, visibility))
    if betas is None:
        betas = fit_shape(world, visibility, basis, valid, params.shape_min_visibility)
    betas = np.asarray(betas, np.float32).reshape(-1)
    rig = make_rig(basis, betas)

    focal = _per_frame(focal_px, T, 1)
    pp = _per_frame(principal_point, T, 2)
    rotmat = np.full((T, NUM_JOINTS, 3, 3), np.nan, np.float32)
    transl = np.full((T, 3), np.nan, np.float32)
    joints = np.full((T, NUM_JOINTS, 3), np.nan, np.float32)
    res3d = np.full(T, np.nan, np.float32)
    res2d = np.full(T, np.nan, np.float32)
    frames = np.flatnonzero(valid)
    f32 = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    for start in range(0, len(frames), params.chunk_frames):
        idx = frames[start:start + params.chunk_frames]
        R, t, r3, r2 = fit_rotations(f32(world[idx]), f32(image[idx]), f32(visibility[idx]), f32(focal[idx]),
                                     f32(pp[idx]), rig, prior, limits, params)
        with torch.no_grad():
            J, _ = forward_kinematics(R, rig)
        rotmat[idx], transl[idx], joints[idx] = R.numpy(), t.numpy(), (J + t[:, None]).numpy()
        res3d[idx], res2d[idx] = r3.numpy(), r2.numpy()
    return FitResult(rotmat, transl, betas, joints, valid, swapped & valid[:, None], res3d, res2d)
