"""From the engine's camera and body frames to Blender's world, armature and camera.

This is the ONE place where the axis conventions meet (docs/blender-scene.md):

- Engine camera frame (OpenCV): x right, y down, z forward (into the scene), metres. The
  engine's translation, joints3d and projection live here.
- SMPL body frame: y up, z towards the body's front, x to the body's left.
- Blender world: Z up. The scene camera sits at the world origin looking along +Y with +Z up
  (rotation_euler = (90 deg, 0, 0)), so engine camera coordinates map to the world by
  ``CAMERA_TO_WORLD``: (x, y, z)_cam -> (x, z, -y)_world.
- Armature space: the rig is built standing in Blender's convention (Z up, facing -Y), i.e.
  SMPL's body frame rotated by ``BODY_TO_ARMATURE``: (x, y, z)_body -> (x, -z, y). The
  armature object itself stays at the world origin with identity transform, so armature
  space = world space and the root bone carries the global orientation and root motion.

Rotation matrices act on column vectors (``p' = R @ p``); quaternions are (w, x, y, z).
"""
from __future__ import annotations

import numpy as np

from . import rotations

CAMERA_TO_WORLD = np.array([[1.0, 0.0, 0.0],
                            [0.0, 0.0, 1.0],
                            [0.0, -1.0, 0.0]])
BODY_TO_ARMATURE = np.array([[1.0, 0.0, 0.0],
                             [0.0, 0.0, -1.0],
                             [0.0, 1.0, 0.0]])
CAMERA_EULER_XYZ = (np.pi / 2, 0.0, 0.0)  # Blender camera object rotation giving CAMERA_TO_WORLD
DEFAULT_SENSOR_WIDTH_MM = 36.0


def camera_points_to_world(points: np.ndarray) -> np.ndarray:
    """(..., 3) engine camera frame -> (..., 3) Blender world."""
    return np.asarray(points, np.float64) @ CAMERA_TO_WORLD.T


def body_points_to_armature(points: np.ndarray) -> np.ndarray:
    """(..., 3) SMPL body frame (rest mesh, rest joints) -> (..., 3) armature space."""
    return np.asarray(points, np.float64) @ BODY_TO_ARMATURE.T


def armature_rotations(rotmats: np.ndarray) -> np.ndarray:
    """SMPL local rotations -> rotations about each joint, in armature axes.

    rotmats (T, 24, 3, 3): joint 0 = global orient (body -> camera frame), joints 1..23
    relative to their parent (body frame). -> (T, 24, 3, 3) such that the armature's FK
    with these rotations and the armature rest joints gives the world joints.
    Joint 0 becomes C R_go A^T; the others A R_i A^T (C = CAMERA_TO_WORLD, A = BODY_TO_ARMATURE).
    """
    R = np.asarray(rotmats, np.float64)
    A, C = BODY_TO_ARMATURE, CAMERA_TO_WORLD
    out = A @ R @ A.T
    out[:, 0] = C @ R[:, 0] @ A.T
    return out


def root_offsets(transl: np.ndarray, rest_root: np.ndarray) -> np.ndarray:
    """Displacement of the root joint from its armature rest position, in armature space.

    transl (T, 3) engine translation (camera frame), rest_root (3,) SMPL rest joint 0 (body
    frame) -> (T, 3). The posed root is at C (j0 + transl); at rest it is at A j0."""
    j0 = np.asarray(rest_root, np.float64)
    return camera_points_to_world(j0 + np.asarray(transl, np.float64)) - BODY_TO_ARMATURE @ j0


def bone_local_rotations(arm_rotmats: np.ndarray, bone_rest: np.ndarray) -> np.ndarray:
    """Armature-space rotations about each joint -> Blender pose-bone rotations.

    arm_rotmats (T, J, 3, 3) from ``armature_rotations``; bone_rest (J, 3, 3) each bone's
    rest orientation in armature space (``bone.matrix_local.to_3x3()``).
    -> (T, J, 3, 3) = B^T M B, the value of ``pose_bone.rotation_quaternion`` as a matrix.
    Valid because SMPL's rest orientations are identity: each bone's armature-space
    rotation is the product of the armature rotations along its chain."""
    M = np.asarray(arm_rotmats, np.float64)
    B = np.asarray(bone_rest, np.float64)
    # A joint's armature-space rotation is relative to its parent's *posed* frame; for
    # Blender the pose-bone rotation is expressed in the bone's own rest axes.
    return np.swapaxes(B, -1, -2)[None] @ M @ B[None]


def bone_local_quats(arm_rotmats: np.ndarray, bone_rest: np.ndarray) -> np.ndarray:
    """Like ``bone_local_rotations`` but as hemisphere-continuous unit quaternions (T, J, 4),
    ready for keyframing (linear interpolation between neighbours takes the short way)."""
    q = rotations.rotmat_to_quat(bone_local_rotations(arm_rotmats, bone_rest))
    return rotations.quat_make_continuous(q, axis=0)


def root_locations(offsets: np.ndarray, root_rest: np.ndarray) -> np.ndarray:
    """Root displacement in armature space (T, 3) -> ``pose_bone.location`` values (T, 3),
    which Blender applies in the root bone's rest axes: B_root^T d."""
    return np.asarray(offsets, np.float64) @ np.asarray(root_rest, np.float64)


def blender_camera(focal_px: float, principal_point, width: int, height: int,
                   sensor_width_mm: float = DEFAULT_SENSOR_WIDTH_MM) -> dict:
    """Pinhole intrinsics in pixels -> Blender camera settings reproducing the projection.

    Uses sensor_fit 'HORIZONTAL' (the sensor width spans the image width). Blender's shift is
    a fraction of the sensor-fit side: the image width here, for landscape and portrait alike
    (it is the larger side only with sensor_fit 'AUTO'; measured with bpy 4.2-5.2 in
    tests/blender/test_scene.py). +shift_x moves the frame right (so the optical axis lands
    left of centre), +shift_y moves it up (the axis lands below centre in pixel rows).
    -> {lens, sensor_width, sensor_fit, shift_x, shift_y, resolution_x, resolution_y}."""
    cx, cy = (float(v) for v in principal_point)
    size = float(width)  # shift unit = the sensor-fit dimension (HORIZONTAL -> width)
    return {
        "lens": float(focal_px) * sensor_width_mm / float(width),
        "sensor_width": float(sensor_width_mm),
        "sensor_fit": "HORIZONTAL",
        "shift_x": (width / 2.0 - cx) / size,
        "shift_y": (cy - height / 2.0) / size,
        "resolution_x": int(width),
        "resolution_y": int(height),
    }


def project_world_points(points_world: np.ndarray, focal_px: float, principal_point) -> np.ndarray:
    """Blender world points (..., 3) -> image pixels (..., 2) through the engine camera placed
    as above (the inverse of ``camera_points_to_world`` followed by the pinhole)."""
    p = np.asarray(points_world, np.float64) @ CAMERA_TO_WORLD  # world -> camera (C is orthonormal)
    return float(focal_px) * p[..., :2] / p[..., 2:3] + np.asarray(principal_point, np.float64)
