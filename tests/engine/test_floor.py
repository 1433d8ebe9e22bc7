"""The shot's floor from the people's feet (engine/common/floor.py): on walking and standing
bodies over a known floor seen by a tilted camera, the plane and camera height come back;
the floor world puts the floor at Z = 0, the camera above the origin looking along +Y."""
import numpy as np
import pytest

from engine.common import floor as F
from engine.common.blender_space import CAMERA_TO_WORLD
from engine.measure.floor import SYNTHETIC_SOLE, synthetic_shot, walking_joints


SOLE = SYNTHETIC_SOLE   # walking_joints' ankles and toes above the sole


def test_sole_offsets_of_the_mannequin():
    from engine.body.mannequin import SOLE_Y, default_mannequin

    body = default_mannequin()
    joints, vertices = body.rest_shape(np.zeros(10))[1], body.rest_shape(np.zeros(10))[0]
    off = F.sole_offsets(joints, vertices)
    np.testing.assert_allclose(off, joints[list(F.FOOT_JOINTS), 1] - SOLE_Y, atol=0.01)
    assert np.all((off > 0.0) & (off < 0.15)) and off[0] > off[2]     # ankles above the toes


def shot(pitch_deg, roll_deg, height, people=3, T=60, fps=30.0, noise=0.01, seed=0):
    return synthetic_shot(pitch_deg, roll_deg, height, people=people, T=T, fps=fps, noise=noise, seed=seed)


@pytest.mark.parametrize("pitch, roll, height", [(0, 0, 1.5), (12, 0, 1.7), (25, 4, 3.0), (-5, -3, 0.9)])
def test_the_floor_and_camera_come_back(pitch, roll, height):
    tracks, normal, offset = shot(pitch, roll, height)
    fl = F.estimate_floor(tracks, fps=30.0, offsets=SOLE)
    angle = np.degrees(np.arccos(np.clip(fl.normal @ normal, -1, 1)))
    assert angle < 1.0, angle
    assert abs(fl.camera_height - offset) < 0.03, (fl.camera_height, offset)
    assert abs(fl.camera_pitch_deg - pitch) < 1.0 and abs(fl.camera_roll_deg - roll) < 1.0, \
        (fl.camera_pitch_deg, fl.camera_roll_deg)
    assert fl.inliers.mean() > 0.8


def test_lifted_and_moving_feet_are_not_contacts():
    J = walking_joints(90, 30.0, np.zeros(3), 0.0)
    pts = F.contact_points(J[:, list(F.FOOT_JOINTS)], 30.0, np.array([0, 0, 1.0]), offsets=SOLE)
    assert len(pts) > 50
    np.testing.assert_allclose(pts[:, 2], 0.0, atol=1e-9)   # planted feet only, at the sole


def test_floor_world_axes():
    tracks, normal, offset = shot(15, 3, 2.0, noise=0.0)
    R, t = F.world_from_camera(normal, offset)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    w = tracks[-1] @ R.T + t                               # the standing person
    np.testing.assert_allclose(w[:, F.R_FOOT, 2], 0.03, atol=1e-9)
    np.testing.assert_allclose(w[:, F.NECK, 2], 1.45, atol=1e-9)
    fwd = R @ np.array([0.0, 0.0, 1.0])                   # the optical axis: along +Y, pitched down
    assert abs(fwd[0]) < 1e-12 and fwd[1] > 0 and fwd[2] < 0
    # a level camera's floor world is the scene's camera-space mapping, lifted by the height
    R0, t0 = F.world_from_camera(np.array([0.0, -1.0, 0.0]), 1.6)
    np.testing.assert_allclose(R0, CAMERA_TO_WORLD, atol=1e-12)
    np.testing.assert_allclose(t0, [0, 0, 1.6])


def test_contacts_along_a_line_take_their_tilt_from_the_bodies():
    """One walker's contacts lie along a line: the tilt about it is noise; the regularised fit
    takes it from the bodies' up (within a degree), the plain least squares does not."""
    rng = np.random.default_rng(2)
    along = rng.uniform(-2, 2, 60)
    pts = np.c_[along, rng.normal(scale=0.005, size=60), 0.02 * along + rng.normal(scale=0.02, size=60)]
    up = np.array([0.0, 0.0, 1.0])
    n, _ = F.plane_through(pts, up, F.TILT_SPREAD)
    n = n if n[2] > 0 else -n
    assert np.degrees(np.arccos(n @ [-0.02, 0, 1] / np.linalg.norm([-0.02, 0, 1]))) < 0.5   # slope along the line kept
    assert abs(np.degrees(np.arcsin(n[1]))) < 1.0                                      # no roll about it
    n0, _ = F.plane_through(pts)
    assert abs(np.degrees(np.arcsin(abs(n0[1])))) > 5.0


def test_up_from_orientations():
    upright = np.diag([1.0, -1.0, -1.0])                   # SMPL body y up -> camera y down
    turned = np.stack([upright @ np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
                       for a in np.linspace(0, 6, 20)])     # turning about the vertical
    np.testing.assert_allclose(F.up_from_orientations(turned), [0, -1, 0], atol=1e-12)


def test_too_few_contacts_are_refused():
    with pytest.raises(ValueError, match="no people"):
        F.estimate_floor([], fps=30.0, offsets=SOLE)
    flying = np.zeros((5, 24, 3))
    flying[:, :, 1] = -np.linspace(0, 10, 5)[:, None]     # everything moving fast
    with pytest.raises(ValueError, match="at least 3 foot contacts"):
        F.estimate_floor([flying], fps=30.0, offsets=SOLE)


def standing_result(camera_height=1.6):
    """Result-file tracks (FK of rotations + rest joints + translation, with a gap): two
    mannequins standing upright 3 and 5 m in front of a level camera ``camera_height`` above
    their soles. -> (result, rest joints, rest vertices)."""
    from types import SimpleNamespace

    from engine.body.mannequin import default_mannequin

    body = default_mannequin()
    vertices, joints = body.rest_shape(np.zeros(10))[:2]
    upright = np.diag([1.0, -1.0, -1.0])                      # body y up -> camera y down
    # where the posed sole lands for transl 0: the lowest rest vertex, rotated about the root
    sole_y = (upright @ (vertices - joints[0]).T).T[:, 1].max() + joints[0, 1]
    tracks = {}
    for k, (x, z) in enumerate(((-0.5, 3.0), (0.8, 5.0))):
        T = 20
        frames = np.r_[0:8, 11:23]                            # a gap: two runs
        transl = np.tile([x, camera_height - sole_y, z], (T, 1))
        tracks[str(k)] = SimpleNamespace(global_orient_rotmat=np.tile(upright, (T, 1, 1)),
                                         body_pose_rotmat=np.tile(np.eye(3), (T, 23, 1, 1)), rest_joints=joints,
                                         rest_vertices=vertices, transl=transl, frames=frames)
    result = SimpleNamespace(tracks=tracks, body=SimpleNamespace(parents=body.parents), meta={"video": {"fps": 25.0}})
    return result, joints, vertices


def rotmats_of(track):
    return np.concatenate([track.global_orient_rotmat[:, None], track.body_pose_rotmat], 1)


def test_floor_of_a_result_puts_standing_soles_at_zero():
    from engine.common.kinematics import posed_joints

    result, joints, vertices = standing_result()
    fl = F.floor_of_result(result)
    np.testing.assert_allclose(fl.normal, [0, -1, 0], atol=1e-3)
    assert fl.camera_height == pytest.approx(1.6, abs=0.01)
    tr = result.tracks["0"]
    J = posed_joints(rotmats_of(tr), joints, result.body.parents, tr.transl)
    np.testing.assert_allclose(F.heights(J[:, list(F.FOOT_JOINTS)], fl.normal, fl.offset).min(1)
                               - F.sole_offsets(joints, vertices).min(), 0.0, atol=0.02)
    assert [len(r) for r in F.consecutive_runs(np.r_[0:8, 11:23])] == [8, 12]


def test_bodies_in_the_floor_world_stand_at_z_zero():
    """floor_world_of_result + blender_space.smpl_to_world: the world SMPL parameters' FK is
    the camera-frame FK mapped into the world, and the soles are at Z = 0."""
    from engine.common import blender_space as bs
    from engine.common.kinematics import posed_joints

    result, joints, vertices = standing_result()
    (R, t), fl = F.floor_world_of_result(result)
    for tr in result.tracks.values():
        Rw, tw = bs.smpl_to_world(rotmats_of(tr), tr.transl, joints[0], (R, t))
        Jw = posed_joints(Rw, joints, result.body.parents, tw)
        want = bs.camera_points_to_world(posed_joints(rotmats_of(tr), joints, result.body.parents, tr.transl), (R, t))
        np.testing.assert_allclose(Jw, want, atol=1e-9)
        soles = Jw[:, list(F.FOOT_JOINTS), 2] - F.sole_offsets(joints, vertices)
        np.testing.assert_allclose(soles.min(1), 0.0, atol=0.02)
        still = bs.transl_in_place(tw, joints[0])
        Js = posed_joints(Rw, joints, result.body.parents, still)
        np.testing.assert_allclose(Js[:, 0, :2], 0.0, atol=1e-12)
        np.testing.assert_allclose(Js[:, 0, 2], Jw[:, 0, 2], atol=1e-12)
    np.testing.assert_allclose(bs.world_points_to_camera(bs.camera_points_to_world(joints, (R, t)), (R, t)),
                               joints, atol=1e-12)
    assert t[2] == pytest.approx(1.6, abs=0.01)


def test_camera_object_matrix():
    """The Blender camera object (looks along its -Z, +Y up) reproduces the engine camera: in
    camera space it is the fixed Euler (90, 0, 0) at the origin; in a world it sits at t."""
    from engine.common import blender_space as bs

    M = bs.camera_object_matrix(None)
    a = bs.CAMERA_EULER_XYZ[0]
    np.testing.assert_allclose(M[:3, :3], [[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], atol=1e-12)
    np.testing.assert_allclose(M[:3, 3], 0)
    R, t = F.world_from_camera(np.array([0.0, -0.96, -0.28]) / 1.0, 3.0)
    M = bs.camera_object_matrix((R, t))
    p_cam = np.array([0.3, -0.2, 4.0])                  # in front of the engine camera
    p_blender_cam = bs.BLENDER_CAMERA_TO_CAMERA @ p_cam  # the same point in Blender camera axes
    np.testing.assert_allclose(M[:3, :3] @ p_blender_cam + M[:3, 3], bs.camera_points_to_world(p_cam, (R, t)), atol=1e-12)
    assert p_blender_cam[2] < 0                          # Blender cameras look along -Z


def test_implausible_floor_is_refused():
    result, _, _ = standing_result(camera_height=0.05)
    with pytest.raises(ValueError, match="camera would stand 0.05 m"):
        F.floor_world_of_result(result)


@pytest.mark.parametrize("pitch, roll, height", [(12, 0, 1.7), (30, -3, 4.0)])
def test_tracks_with_wrong_depths_share_one_floor(pitch, roll, height):
    """Each walking person's depth off by its own factor (0.7-1.4, as monocular estimates
    are): the scaled fit finds the floor and the factors (up to their common scale)."""
    tracks, normal, offset = shot(pitch, roll, height, people=4, T=90, noise=0.005, seed=3)
    rng = np.random.default_rng(7)
    wrong = rng.uniform(0.7, 1.4, len(tracks))
    wrong /= np.exp(np.log(wrong).mean())                    # geometric mean 1: the gauge
    fl, scales = F.estimate_floor_scaled([t * w for t, w in zip(tracks, wrong)], 30.0, offsets=SOLE)
    angle = np.degrees(np.arccos(np.clip(fl.normal @ normal, -1, 1)))
    assert angle < 1.0, angle
    np.testing.assert_allclose(scales * wrong, 1.0, atol=0.03)
    assert abs(fl.camera_height - offset) < 0.05 and fl.inliers.mean() > 0.8
    # the plain fit cannot: one plane through contacts at four wrong depths
    plain = F.estimate_floor([t * w for t, w in zip(tracks, wrong)], 30.0, offsets=SOLE)
    assert plain.inliers.mean() < fl.inliers.mean()
