"""numpy FK equals smplx; the Blender-space conversions are exact (engine env, no bpy)."""
import numpy as np
import pytest
import torch

from engine.body.mannequin import build_mannequin
from engine.body.smpl_torch import SMPL
from engine.common import blender_space as bs
from engine.common import rotations
from engine.common.kinematics import forward_kinematics, posed_joints, skinned_vertices


@pytest.fixture(scope="module")
def body():
    return build_mannequin()


def random_rotmats(rng, T, J=24, scale=0.6):
    return rotations.axis_angle_to_rotmat(rng.normal(scale=scale, size=(T, J, 3)))


def test_numpy_fk_equals_smplx_joints(body):
    rng = np.random.default_rng(1)
    R = random_rotmats(rng, 5)
    betas = rng.normal(size=(5, 10))
    smpl = SMPL(body).eval()
    with torch.no_grad():
        out = smpl.pose(torch.as_tensor(R, dtype=torch.float32), torch.as_tensor(betas, dtype=torch.float32))
    ref = out.joints24.double().numpy()
    for t in range(5):
        _, rest_joints = body.rest_shape(betas[t])
        joints, _ = forward_kinematics(R[t:t + 1], rest_joints, body.parents)
        np.testing.assert_allclose(joints[0], ref[t], atol=2e-5)


def test_numpy_skinning_equals_smplx_vertices(body):
    """The mannequin has no pose correctives, so linear blend skinning is smplx's whole mesh."""
    rng = np.random.default_rng(2)
    R = random_rotmats(rng, 3)
    betas = rng.normal(size=(3, 10))
    smpl = SMPL(body).eval()
    with torch.no_grad():
        out = smpl.pose(torch.as_tensor(R, dtype=torch.float32), torch.as_tensor(betas, dtype=torch.float32))
    ref = out.vertices.double().numpy()
    for t in range(3):
        rest_vertices, rest_joints = body.rest_shape(betas[t])[:2]
        v = skinned_vertices(R[t], rest_joints, rest_vertices, body.weights, body.parents)
        np.testing.assert_allclose(v, ref[t], atol=5e-5)
    v0 = skinned_vertices(np.tile(np.eye(3), (24, 1, 1)), rest_joints, rest_vertices, body.weights, body.parents)
    np.testing.assert_allclose(v0, rest_vertices, atol=1e-12)


def test_fk_known_rotation():
    # a two-joint chain: rotating the root 90 deg about z swings the child from +x to +y
    rest = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    R = np.stack([rotations.axis_angle_to_rotmat(np.array([0, 0, np.pi / 2])), np.eye(3)])[None]
    joints = posed_joints(R, rest, [-1, 0], np.array([[0.0, 0, 5]]))
    np.testing.assert_allclose(joints[0], [[0, 0, 5], [0, 1, 5]], atol=1e-12)


def test_axis_conventions():
    # camera forward (+z) is world +Y, camera down (+y) is world -Z, right stays +X
    np.testing.assert_allclose(bs.camera_points_to_world([[0, 0, 1], [0, 1, 0], [1, 0, 0]]),
                               [[0, 1, 0], [0, 0, -1], [1, 0, 0]])
    # SMPL up (+y) is armature +Z, SMPL front (+z) faces armature -Y
    np.testing.assert_allclose(bs.body_points_to_armature([[0, 1, 0], [0, 0, 1]]), [[0, 0, 1], [0, -1, 0]])
    for M in (bs.CAMERA_TO_WORLD, bs.BODY_TO_ARMATURE):
        np.testing.assert_allclose(M @ M.T, np.eye(3))
        assert np.isclose(np.linalg.det(M), 1.0)
    # the camera object's Euler rotation gives the same matrix (Blender camera looks down -Z, +Y up)
    rx = bs.CAMERA_EULER_XYZ[0]
    euler = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    blender_cam_from_opencv = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(euler @ blender_cam_from_opencv, bs.CAMERA_TO_WORLD, atol=1e-12)


def test_armature_fk_equals_camera_fk_in_world(body):
    rng = np.random.default_rng(2)
    T = 7
    R = random_rotmats(rng, T)
    transl = rng.normal(size=(T, 3)) + [0, 0, 5]
    _, rest = body.rest_shape(rng.normal(size=10))
    want = bs.camera_points_to_world(posed_joints(R, rest, body.parents, transl))
    arm_rest = bs.body_points_to_armature(rest)
    joints, _ = forward_kinematics(bs.armature_rotations(R), arm_rest, body.parents)
    got = joints + bs.root_offsets(transl, rest[0])[:, None]
    np.testing.assert_allclose(got, want, atol=1e-10)


def _blender_pose_world_rotations(Q, B, parents):
    """Blender's pose rule for rotation-only bones: P_c = P_p B_p^T B_c Q_c (root: B_0 Q_0)."""
    P = np.empty_like(Q)
    for j, p in enumerate(parents):
        P[:, j] = (B[j] @ Q[:, j]) if p < 0 else P[:, p] @ B[p].T @ B[j] @ Q[:, j]
    return P


def test_bone_local_rotations_reproduce_the_pose(body):
    rng = np.random.default_rng(3)
    R = random_rotmats(rng, 4)
    M = bs.armature_rotations(R)
    B = random_rotmats(rng, 1, scale=2.0)[0]  # arbitrary bone rest orientations
    Q = bs.bone_local_rotations(M, B)
    P = _blender_pose_world_rotations(Q, B, body.parents)
    _, G = forward_kinematics(M, np.zeros((24, 3)), body.parents)  # cumulative armature rotations
    np.testing.assert_allclose(P, G @ B[None], atol=1e-10)
    q = bs.bone_local_quats(M, B)
    np.testing.assert_allclose(rotations.quat_to_rotmat(q), Q, atol=1e-10)
    assert np.all(np.sum(q[1:] * q[:-1], axis=-1) >= 0)  # hemisphere-continuous


def test_root_locations_in_bone_axes():
    rng = np.random.default_rng(4)
    B0 = random_rotmats(rng, 1, J=1, scale=2.0)[0, 0]
    d = rng.normal(size=(3, 3))
    loc = bs.root_locations(d, B0)
    np.testing.assert_allclose(loc @ B0.T, d, atol=1e-12)  # Blender: head = rest head + B0 @ location


def test_blender_camera_settings():
    cam = bs.blender_camera(1000.0, (960.0, 540.0), 1920, 1080)
    assert cam["lens"] == pytest.approx(1000 * 36 / 1920) and cam["shift_x"] == 0 and cam["shift_y"] == 0
    off = bs.blender_camera(1000.0, (1000.0, 500.0), 1920, 1080)
    assert off["shift_x"] == pytest.approx(-40 / 1920) and off["shift_y"] == pytest.approx(-40 / 1920)
    # Portrait: the shift unit is still the width (sensor_fit HORIZONTAL), not the larger side.
    tall = bs.blender_camera(1000.0, (350.0, 700.0), 720, 1280)
    assert tall["shift_x"] == pytest.approx(10 / 720) and tall["shift_y"] == pytest.approx(60 / 720)
    # projection through the placed camera inverts camera_points_to_world
    p_cam = np.array([[0.3, -0.2, 4.0]])
    uv = bs.project_world_points(bs.camera_points_to_world(p_cam), 1000.0, (960, 540))
    np.testing.assert_allclose(uv, [[960 + 75, 540 - 50]])
