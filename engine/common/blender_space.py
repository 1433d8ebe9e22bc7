"""From the engine's camera and body frames to Blender's world, armature and camera.

This is the ONE place where the axis conventions meet (docs/blender-scene.md):

- Engine camera frame (OpenCV): x right, y down, z forward (into the scene), metres. The
  engine's translation, joints3d and projection live here.
- SMPL body frame: y up, z towards the body's front, x to the body's left.
- Blender world: Z up. A *world* is ``(R, t)``: engine camera point p -> world point R p + t
  (R a rotation). Two are used (docs/blender-scene.md, "World"):
  the floor world (``floor.world_from_camera``: the floor at Z = 0, the camera above the
  origin, tilted as estimated) and camera space, ``CAMERA_WORLD``: the camera at the origin
  looking along +Y with +Z up (rotation_euler = (90 deg, 0, 0)),
  ``CAMERA_TO_WORLD``: (x, y, z)_cam -> (x, z, -y)_world. ``world=None`` means camera space.
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
CAMERA_WORLD = (CAMERA_TO_WORLD, np.zeros(3))
IDENTITY_WORLD = (np.eye(3), np.zeros(3))   # for bodies already in world coordinates
# Blender camera local axes (x right, y up, looking along -z) -> engine camera axes
BLENDER_CAMERA_TO_CAMERA = np.diag([1.0, -1.0, -1.0])
DEFAULT_SENSOR_WIDTH_MM = 36.0


def world_or_camera(world) -> tuple:
    """``world`` (R (3, 3), t (3,)) or None -> (R, t) float64 arrays (None: ``CAMERA_WORLD``)."""
    R, t = CAMERA_WORLD if world is None else world
    return np.asarray(R, np.float64).reshape(3, 3), np.asarray(t, np.float64).reshape(3)


def camera_points_to_world(points: np.ndarray, world=None) -> np.ndarray:
    """(..., 3) engine camera frame -> (..., 3) Blender world."""
    R, t = world_or_camera(world)
    return np.asarray(points, np.float64) @ R.T + t


def world_points_to_camera(points: np.ndarray, world=None) -> np.ndarray:
    """(..., 3) Blender world -> (..., 3) engine camera frame (inverse of the above)."""
    R, t = world_or_camera(world)
    return (np.asarray(points, np.float64) - t) @ R


def camera_object_matrix(world=None) -> np.ndarray:
    """(4, 4) ``matrix_world`` of the Blender camera object that reproduces the engine camera
    in ``world``: Blender camera axes -> engine camera axes -> world."""
    R, t = world_or_camera(world)
    M = np.eye(4)
    M[:3, :3] = R @ BLENDER_CAMERA_TO_CAMERA
    M[:3, 3] = t
    return M


def body_points_to_armature(points: np.ndarray) -> np.ndarray:
    """(..., 3) SMPL body frame (rest mesh, rest joints) -> (..., 3) armature space."""
    return np.asarray(points, np.float64) @ BODY_TO_ARMATURE.T


def armature_rotations(rotmats: np.ndarray, world=None) -> np.ndarray:
    """SMPL local rotations -> rotations about each joint, in armature axes.

    rotmats (T, 24, 3, 3): joint 0 = global orient (body -> camera frame), joints 1..23
    relative to their parent (body frame). -> (T, 24, 3, 3) such that the armature's FK
    with these rotations and the armature rest joints gives the world joints.
    Joint 0 becomes W R_go A^T; the others A R_i A^T (W = the world's rotation,
    A = BODY_TO_ARMATURE).
    """
    R = np.asarray(rotmats, np.float64)
    A, W = BODY_TO_ARMATURE, world_or_camera(world)[0]
    out = A @ R @ A.T
    out[:, 0] = W @ R[:, 0] @ A.T
    return out


def root_offsets(transl: np.ndarray, rest_root: np.ndarray, world=None, rest_head=None) -> np.ndarray:
    """Displacement of the root joint from its armature rest position, in armature space.

    transl (T, 3) engine translation (camera frame), rest_root (3,) SMPL rest joint 0 (body
    frame) -> (T, 3). The posed root is at W (j0 + transl) + t; at rest it is at ``rest_head``
    (3,), the root bone's head in armature space (default A j0: the rest body unmoved)."""
    j0 = np.asarray(rest_root, np.float64)
    head = BODY_TO_ARMATURE @ j0 if rest_head is None else np.asarray(rest_head, np.float64)
    return camera_points_to_world(j0 + np.asarray(transl, np.float64), world) - head


def rest_on_floor(vertices: np.ndarray) -> np.ndarray:
    """(V, 3) rest vertices in armature space -> (3,) the lift that stands them on Z = 0 (the
    rig's rest pose, its bind pose in the exports, stands on the floor, not around the origin)."""
    return np.array([0.0, 0.0, -float(np.asarray(vertices, np.float64)[:, 2].min())])


def smpl_to_world(rotmats: np.ndarray, transl: np.ndarray, rest_root: np.ndarray, world=None) -> tuple:
    """SMPL parameters in the engine camera frame -> the same body in ``world`` coordinates.

    rotmats (T, 24, 3, 3), transl (T, 3), rest_root (3,) SMPL rest joint 0 -> (rotmats (T, 24,
    3, 3) with joint 0 = W R_go, transl (T, 3)) such that FK + transl gives the world joints.
    Feed the result to ``armature_rotations`` / ``root_offsets`` with ``IDENTITY_WORLD``."""
    W, t = world_or_camera(world)
    j0 = np.asarray(rest_root, np.float64)
    R = np.array(rotmats, np.float64)
    R[:, 0] = W @ R[:, 0]
    return R, (j0 + np.asarray(transl, np.float64)) @ W.T + t - j0


def transl_in_place(transl: np.ndarray, rest_root: np.ndarray) -> np.ndarray:
    """World translation (T, 3) -> the same with the root's horizontal motion removed (the
    pelvis stays above the world origin; its height is kept): for game clips."""
    out = np.array(transl, np.float64)
    out[:, :2] = -np.asarray(rest_root, np.float64)[:2]
    return out


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


def project_world_points(points_world: np.ndarray, focal_px: float, principal_point, world=None) -> np.ndarray:
    """Blender world points (..., 3) -> image pixels (..., 2) through the engine camera placed
    in ``world`` (``world_points_to_camera`` followed by the pinhole)."""
    p = world_points_to_camera(points_world, world)
    return float(focal_px) * p[..., :2] / p[..., 2:3] + np.asarray(principal_point, np.float64)
