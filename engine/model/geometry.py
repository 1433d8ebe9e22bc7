"""Rotation and camera geometry for the network (torch).

Same conventions and names as ``engine.common.rotations`` and
``engine.common.camera`` (rotation matrices act on column vectors; quaternions
(w, x, y, z); OpenCV camera frame; crop camera (s, tx, ty) with focal 5000 in a
224 px crop). Everything is batched over leading dims, differentiable, and free
of NaN values and NaN gradients at the identity and at 180 degrees.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_LENGTH = 5000.0
CROP_RES = 224
_DEPTH_EPS = 1e-9  # the official guard against s = 0


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """6D (..., 6) -> rotation matrix (..., 3, 3), PyMAF's Gram-Schmidt.

    Each 6-vector is read row-major as 3x2 [a1 | a2]; columns of R are
    b1 = normalize(a1), b2 = normalize(a2 - (b1.a2) b1), b3 = b1 x b2.
    """
    m = x.reshape(*x.shape[:-1], 3, 2)
    a1, a2 = m[..., 0], m[..., 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def rotmat_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> 6D (..., 6): first two columns, row-wise."""
    return R[..., :, :2].reshape(*R.shape[:-2], 6)


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4), w >= 0.

    Shepperd's method: each candidate row is proportional to q; pick the one with the
    largest diagonal entry (>= 1 for a rotation), so normalizing it never divides by
    a small number and no square root of a negative number is taken.
    """
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01], dim=-1),
        torch.stack([r21 - r12, 1 + r00 - r11 - r22, r01 + r10, r02 + r20], dim=-1),
        torch.stack([r02 - r20, r01 + r10, 1 - r00 + r11 - r22, r12 + r21], dim=-1),
        torch.stack([r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22], dim=-1),
    ], dim=-2)
    best = torch.diagonal(cands, dim1=-2, dim2=-1).argmax(dim=-1)
    idx = best[..., None, None].expand(*best.shape, 1, 4)
    q = F.normalize(torch.gather(cands, -2, idx).squeeze(-2), dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Quaternion (..., 4), any norm -> axis-angle (..., 3), angle in [0, pi]."""
    q = F.normalize(q, dim=-1)
    q = torch.where(q[..., :1] < 0, -q, q)  # same rotation; keeps the angle <= pi
    w, v = q[..., :1], q[..., 1:]
    s2 = (v * v).sum(dim=-1, keepdim=True)
    tiny = torch.finfo(q.dtype).eps ** 2
    big = s2 > tiny
    # Safe operands in the unused branch keep forward values and gradients finite.
    s = torch.sqrt(torch.where(big, s2, torch.ones_like(s2)))
    k_big = 2 * torch.atan2(s, w) / s
    k_small = 2 / torch.where(big, torch.ones_like(w), w)  # limit of angle/|v|; w ~ 1 here
    return v * torch.where(big, k_big, k_small)


def rotmat_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi].

    Through the quaternion: accurate near 0 and at pi (axis sign arbitrary at pi).
    """
    return quat_to_axis_angle(rotmat_to_quat(R))


def crop_cam_to_crop_translation(cam: torch.Tensor, focal_px: float = FOCAL_LENGTH,
                                 crop_res: int = CROP_RES) -> torch.Tensor:
    """Crop camera (..., 3) -> translation (tx, ty, 2 f / (crop_res s + 1e-9)) (..., 3)."""
    s, tx, ty = cam.unbind(dim=-1)
    return torch.stack([tx, ty, 2 * focal_px / (crop_res * s + _DEPTH_EPS)], dim=-1)


def crop_cam_to_full_translation(cam: torch.Tensor, box_center: torch.Tensor, box_size: torch.Tensor,
                                 image_size, focal_px: float = FOCAL_LENGTH) -> torch.Tensor:
    """Crop camera (..., 3) + box -> full-image translation (..., 3).

    box_center (..., 2), box_size (...), image_size (W, H) or (..., 2).
    T = (tx + 2 (cx - W/2)/(s h), ty + 2 (cy - H/2)/(s h), 2 f/(s h)), principal
    point at the image centre.
    """
    image_size = torch.as_tensor(image_size, dtype=cam.dtype, device=cam.device)
    s, tx, ty = cam.unbind(dim=-1)
    sh = s * box_size + _DEPTH_EPS
    return torch.stack([
        tx + 2 * (box_center[..., 0] - image_size[..., 0] / 2) / sh,
        ty + 2 * (box_center[..., 1] - image_size[..., 1] / 2) / sh,
        2 * focal_px / sh,
    ], dim=-1)


def perspective_project(points: torch.Tensor, translation: torch.Tensor, focal_px=FOCAL_LENGTH,
                        principal_point: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-axis points (..., N, 3) -> pixels (..., N, 2).

    u = f (X + tx)/(Z + tz) + cx. translation (..., 3); focal_px scalar or (...);
    principal_point (..., 2) or None for (0, 0).
    """
    p = points + translation[..., None, :]
    if isinstance(focal_px, torch.Tensor) and focal_px.dim() > 0:
        focal_px = focal_px[..., None, None]
    uv = focal_px * p[..., :2] / p[..., 2:]
    if principal_point is not None:
        uv = uv + principal_point[..., None, :]
    return uv


def project_to_crop(points: torch.Tensor, cam: torch.Tensor, focal_px: float = FOCAL_LENGTH,
                    crop_res: int = CROP_RES) -> torch.Tensor:
    """Points (B, N, 3) seen by crop camera (B, 3) -> normalized crop coords (B, N, 2).

    The official ``projection``: perspective with the crop translation, principal
    point 0, then divided by crop_res / 2 so the crop edges are at -1 and +1.
    """
    t = crop_cam_to_crop_translation(cam, focal_px, crop_res)
    return perspective_project(points, t, focal_px) / (crop_res / 2.0)
