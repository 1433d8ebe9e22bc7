"""Foot contacts and planted feet (engine/common/contacts.py) on synthetic bodies with known
contacts (engine/measure/contacts.py: a made-up SMPL-like skeleton walking with its feet pinned
exactly, standing, jumping; then noise, drift and a height bias on the root and leg rotations)."""
import numpy as np
import pytest

from engine.common import contacts as C
from engine.common.floor import FOOT_JOINTS
from engine.common.kinematics import forward_kinematics
from engine.common.rotations import axis_angle_to_rotmat
from engine.measure import contacts as M

REST, PARENTS, SOLE = M.toy_body()


def joints(seq):
    return M.joints_of(seq["rotmats"], seq["transl"], REST, PARENTS)


def assert_rotations(R, tol=1e-9):
    R = np.asarray(R)
    eye = np.swapaxes(R, -1, -2) @ R
    assert np.abs(eye - np.eye(3)).max() < tol
    assert np.abs(np.linalg.det(R) - 1).max() < tol


@pytest.fixture(scope="module")
def walk():
    return M.synthetic_walk()


# ---------------------------------------------------------------------------- the synthetic truth
def test_the_synthetic_bodies_are_what_they_claim(walk):
    """Truth first: known contacts are exactly still and on the floor, nothing goes below it."""
    for seq in (walk, M.synthetic_stand(), M.synthetic_jump()):
        j = joints(seq)
        assert C.foot_skate(j, seq["contacts"]) < 1e-6
        assert np.abs(C.foot_heights(j, SOLE)[seq["contacts"]]).max() < 1e-9
        assert C.penetration(j, SOLE) == (0.0, 0.0, 0.0)
    h = C.foot_heights(joints(walk), SOLE)
    assert h[~walk["contacts"]].max() > 0.09 and 0.5 < walk["contacts"].mean() < 0.7


# ---------------------------------------------------------------------------- IK
def random_leg_poses(rng, n):
    R = np.tile(np.eye(3), (n, 24, 1, 1))
    R[:, 0] = axis_angle_to_rotmat(rng.normal(scale=0.5, size=(n, 3)))
    for j in (1, 2, 4, 5, 7, 8):
        R[:, j] = axis_angle_to_rotmat(rng.normal(scale=0.4, size=(n, 3)))
    R[:, [4, 5]] = axis_angle_to_rotmat(np.c_[rng.uniform(0.0, 1.5, n), np.zeros(n), np.zeros(n)])[:, None]
    return R


def test_two_bone_ik_reaches_reachable_targets_and_keeps_the_foot():
    rng = np.random.default_rng(0)
    n = 200
    R = random_leg_poses(rng, n)
    J, W = forward_kinematics(R, REST, PARENTS)
    for hip, knee, ankle, toe in C.LEGS:
        l1, l2 = np.linalg.norm(REST[knee] - REST[hip]), np.linalg.norm(REST[ankle] - REST[knee])
        direction = rng.normal(size=(n, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        target = J[:, hip] + direction * rng.uniform(abs(l1 - l2) + 0.05, 0.99 * (l1 + l2), n)[:, None]
        hip_rot, knee_rot = C.two_bone_ik(J[:, hip], J[:, knee], J[:, ankle], W[:, hip], W[:, knee], target)
        R2 = R.copy()
        R2[:, hip] = np.swapaxes(W[:, 0], -1, -2) @ hip_rot
        R2[:, knee] = np.swapaxes(hip_rot, -1, -2) @ knee_rot
        R2[:, ankle] = np.swapaxes(knee_rot, -1, -2) @ W[:, ankle]
        J2, W2 = forward_kinematics(R2, REST, PARENTS)
        assert np.linalg.norm(J2[:, ankle] - target, axis=1).max() < 1e-3 * 1e-3   # far below 1 mm
        np.testing.assert_allclose(W2[:, ankle], W[:, ankle], atol=1e-9)          # foot orientation held
        np.testing.assert_allclose(J2[:, toe] - J2[:, ankle], J[:, toe] - J[:, ankle], atol=1e-9)
        assert_rotations(R2[:, [hip, knee, ankle]])


def test_two_bone_ik_bends_a_straight_leg_forwards_and_stretches_towards_far_targets():
    R = np.tile(np.eye(3), (2, 24, 1, 1))
    R[:, 0] = M.heading_frame(0.0)                  # facing +X in the Z-up world
    J, W = forward_kinematics(R, REST, PARENTS)
    hip, knee, ankle, _ = C.LEGS[0]
    up = J[:, hip] + [0.0, 0.0, -0.6]                # closer than the straight leg: the knee must bend
    far = J[:, hip] + [0.0, 0.0, -5.0]               # out of reach: the leg points at it, straight
    target = np.stack([up[0], far[1]])
    hip_rot, knee_rot = C.two_bone_ik(J[:, hip], J[:, knee], J[:, ankle], W[:, hip], W[:, knee], target)
    knee_pos = J[:, hip] + np.einsum("nab,b->na", hip_rot, REST[knee] - REST[hip])
    assert knee_pos[0, 0] > J[0, hip, 0] + 0.1       # knee forward (+X), not backward
    ankle_pos = knee_pos + np.einsum("nab,b->na", knee_rot, REST[ankle] - REST[knee])
    assert np.linalg.norm(ankle_pos[0] - target[0]) < 1e-9
    along = (ankle_pos[1] - J[1, hip]) / np.linalg.norm(ankle_pos[1] - J[1, hip])
    assert along @ [0.0, 0.0, -1.0] > 1 - 1e-9


def test_rotation_between_takes_one_direction_to_the_other():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3))
    b = np.concatenate([rng.normal(size=(48, 3)), -a[48:49] * 2, a[49:] * 3])   # incl. opposite and equal
    R = C.rotation_between(a, b)
    assert_rotations(R)
    got = np.einsum("nab,nb->na", R, a)
    np.testing.assert_allclose(got / np.linalg.norm(got, axis=1, keepdims=True),
                               b / np.linalg.norm(b, axis=1, keepdims=True), atol=1e-9)


# ---------------------------------------------------------------------------- detection
def test_mask_helpers():
    m = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0], bool)
    assert C.runs(m) == [(1, 3), (4, 5), (8, 11)]
    assert C.fill_gaps(m, 1).tolist() == [0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    assert C.drop_short(m, 2).tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0]
    enter = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    assert C.hysteresis(enter, m).tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("fps, T, seed", [(30.0, 240, 1), (10.0, 80, 2), (60.0, 480, 3)])
def test_detection_recovers_the_known_contacts_of_a_noisy_walk(fps, T, seed):
    seq = M.synthetic_walk(T=T, fps=fps)
    est = M.corrupt(seq, seed=seed)
    found = C.contacts_of(joints(est), SOLE, fps)
    assert (found == seq["contacts"]).mean() >= 0.9
    # every step is found: one detected run per known stance
    for f in (0, 1):
        assert len(C.runs(found[:, f])) == len(C.runs(seq["contacts"][:, f]))


def test_detection_is_robust_to_a_height_bias(walk):
    for bias in (0.05, 0.09, -0.04):
        found = C.contacts_of(joints(M.corrupt(walk, seed=5, bias=bias)), SOLE, walk["fps"])
        assert (found == walk["contacts"]).mean() >= 0.9, bias
    # without the track's own floor level the +9 cm walker would never touch the floor
    est = joints(M.corrupt(walk, seed=5, bias=0.09))
    assert not C.contacts_of(est, SOLE, walk["fps"], level=0.0).any()


def test_standing_still_is_in_contact_throughout():
    seq = M.synthetic_stand()
    found = C.contacts_of(joints(M.corrupt(seq, seed=6)), SOLE, seq["fps"])
    assert found.mean() >= 0.98


def test_no_contacts_in_the_air():
    seq = M.synthetic_jump()
    j = joints(M.corrupt(seq, seed=7))
    found = C.contacts_of(j, SOLE, seq["fps"])
    air = C.foot_heights(joints(seq), SOLE) > 0.02            # the true feet more than 2 cm up
    assert air.sum() >= 20 and not found[air].any()
    assert (found == seq["contacts"]).mean() >= 0.95


def test_detection_takes_short_and_empty_tracks():
    for T in (0, 1, 2):
        j = np.zeros((T, 24, 3))
        assert C.contacts_of(j, SOLE, 30.0).shape == (T, 2)


# ---------------------------------------------------------------------------- planting
def plant(est, contacts, fps):
    R2, t2 = C.plant_feet(est["rotmats"], est["transl"], REST, PARENTS, contacts, SOLE, fps)
    return R2, t2, M.joints_of(R2, t2, REST, PARENTS)


@pytest.mark.parametrize("detected", [False, True])
def test_planting_stops_skating_and_penetration(walk, detected):
    est = M.corrupt(walk, seed=1)
    before = joints(est)
    contacts = C.contacts_of(before, SOLE, walk["fps"]) if detected else walk["contacts"]
    R2, t2, after = plant(est, contacts, walk["fps"])
    assert 10.0 < C.foot_skate(before, walk["contacts"]) < 25.0
    assert C.foot_skate(after, walk["contacts"]) < 2.0
    assert C.foot_skate(after, contacts) < 0.01
    assert C.penetration(before, SOLE)[2] > 0.3 and C.penetration(after, SOLE) == (0.0, 0.0, 0.0)
    # planted soles are on the floor, not hovering
    assert np.abs(C.foot_heights(after, SOLE)[contacts]).max() < 1e-6
    assert_rotations(R2)
    # the foot keeps its world orientation up to a turn about the vertical (its heading, held
    # during contacts): the toe no longer swings about the pinned ankle
    W1 = forward_kinematics(est["rotmats"], REST, PARENTS)[1][:, list(FOOT_JOINTS)]
    W2 = forward_kinematics(R2, REST, PARENTS)[1][:, list(FOOT_JOINTS)]
    turn = W2 @ np.swapaxes(W1, -1, -2)
    np.testing.assert_allclose(turn[..., 2, 2], 1.0, atol=1e-9)
    assert C.foot_skate(before, contacts, strict=True) > 10.0
    assert C.foot_skate(after, contacts, strict=True) < 1.5
    # the root stays near its own path: no teleport
    assert np.linalg.norm((t2 - est["transl"])[:, :2], axis=1).max() < 0.03
    assert np.abs(t2 - est["transl"]).max() < 0.05
    # no pops: no joint moves faster between frames than anything did before, plus 2 cm
    step = lambda j: np.linalg.norm(np.diff(j, axis=0), axis=-1).max()
    assert step(after) < step(before) + 0.02


def test_free_frames_are_left_alone(walk):
    """A leg's rotations change only where its foot is planted or blending; the ankle's only
    to hold the foot's orientation there."""
    est = M.corrupt(walk, seed=8)
    contacts = C.contacts_of(joints(est), SOLE, walk["fps"])
    R2, t2, _ = plant(est, contacts, walk["fps"])
    w = C.contact_weights(contacts, walk["fps"])
    for f, leg in enumerate(C.LEGS):
        free = w[:, f] == 0
        assert free.sum() >= 10
        np.testing.assert_array_equal(R2[free][:, list(leg)], est["rotmats"][free][:, list(leg)])
    others = [j for j in range(24) if j not in sum(C.LEGS, ())]
    np.testing.assert_array_equal(R2[:, others], est["rotmats"][:, others])


def test_a_jump_stays_a_jump():
    seq = M.synthetic_jump(flight_s=0.6)
    est = M.corrupt(seq, seed=9)
    contacts = C.contacts_of(joints(est), SOLE, seq["fps"])
    R2, t2, after = plant(est, contacts, seq["fps"])
    w = C.contact_weights(contacts, seq["fps"]).max(axis=1)
    free = w == 0
    assert free.sum() >= 5
    np.testing.assert_array_equal(R2[free], est["rotmats"][free])
    np.testing.assert_array_equal(t2[free], est["transl"][free])
    assert C.foot_heights(after, SOLE)[free].min() > 0.05    # the feet are still in the air
    assert C.penetration(after, SOLE) == (0.0, 0.0, 0.0)


def test_a_floating_walker_is_put_on_the_floor(walk):
    est = M.corrupt(walk, seed=2, bias=0.05)
    before = joints(est)
    contacts = C.contacts_of(before, SOLE, walk["fps"])
    R2, t2, after = plant(est, contacts, walk["fps"])
    assert C.foot_heights(before, SOLE)[walk["contacts"]].mean() > 0.04
    assert np.abs(C.foot_heights(after, SOLE)[contacts]).max() < 1e-6
    assert C.foot_skate(after, walk["contacts"]) < 2.0
    assert C.penetration(after, SOLE) == (0.0, 0.0, 0.0)
    assert_rotations(R2)


def test_out_of_reach_moves_the_root_just_enough():
    """Standing with straight legs, the feet's spots 10 cm below them: the legs cannot reach,
    the root comes down instead (and only down)."""
    seq = M.synthetic_stand(T=30)
    est = {**seq, "transl": seq["transl"] + [0.0, 0.0, 0.10]}
    R2, t2, after = plant(est, np.ones((30, 2), bool), seq["fps"])
    assert np.abs(C.foot_heights(after, SOLE)).max() < 1e-6
    dz = (t2 - est["transl"])[:, 2]
    assert np.all(dz < -0.02) and np.all(dz > -0.10)
    assert np.abs((t2 - est["transl"])[:, :2]).max() < 0.005
    stretch = []                                    # the legs at most at the reach allowed, one of them at it
    for hip, knee, ankle, _ in C.LEGS:
        length = np.linalg.norm(REST[knee] - REST[hip]) + np.linalg.norm(REST[ankle] - REST[knee])
        stretch.append(np.linalg.norm(after[:, ankle] - after[:, hip], axis=1) / (C.REACH * length))
    assert np.max(stretch) < 1 + 1e-9
    np.testing.assert_allclose(np.max(stretch, axis=0), 1.0, atol=1e-6)


def test_planting_refuses_mismatched_shapes(walk):
    with pytest.raises(ValueError):
        C.plant_feet(walk["rotmats"], walk["transl"], REST, PARENTS, walk["contacts"][:-1], SOLE, 30.0)


# ---------------------------------------------------------------------------- metrics
def test_metrics_on_hand_made_feet():
    T = 4
    j = np.zeros((T, 24, 3))
    j[:, list(FOOT_JOINTS), 2] = SOLE                  # on the floor
    j[:, 7, 0] = [0.0, 0.01, 0.02, 0.03]              # left ankle slides 1 cm/frame
    j[:, 10, 0] = [0.0, 0.01, 0.02, 0.03]             # ... and its toe with it
    j[:, 8, 0] = [0.0, 0.01, 0.02, 0.03]              # right ankle slides, its toe stays: rolling
    contacts = np.ones((T, 2), bool)
    assert C.foot_skate(j, contacts) == pytest.approx(5.0)   # (10 + 0) / 2 mm
    contacts[:, 1] = False
    assert C.foot_skate(j, contacts) == pytest.approx(10.0)
    assert np.isnan(C.foot_skate(j, np.zeros((T, 2), bool)))
    j[1, 11, 2] -= 0.004
    j[3, 7, 2] -= 0.010
    mean, worst, share = C.penetration(j, SOLE)
    assert (mean, worst, share) == (pytest.approx(7.0), pytest.approx(10.0), 0.5)


# ---------------------------------------------------------------------------- along the camera rays
def test_grounding_moves_a_sunken_walker_along_its_camera_rays(walk):
    """A walker estimated 60 cm too deep into the floor, seen from a camera 4 m up: moved along
    the rays through its root, its feet stand on the floor again and its root stays on its pixel
    (the root's ray from the camera keeps its direction)."""
    camera = np.array([0.0, -6.0, 4.0])
    t = np.asarray(walk["transl"], np.float64) + [0.0, 0.0, -0.6]
    j = M.joints_of(walk["rotmats"], t, REST, PARENTS)
    t2, k = C.ground_along_rays(j, t, REST[0], SOLE, walk["fps"], camera)
    assert 0.8 < k < 0.95                                      # closer to the camera, so higher
    j2 = M.joints_of(walk["rotmats"], t2, REST, PARENTS)
    lower = C.foot_heights(j2, SOLE).min(axis=1)
    assert abs(np.median(lower)) < 0.01
    ray, ray2 = j[:, 0] - camera, j2[:, 0] - camera
    np.testing.assert_allclose(np.cross(ray, ray2), 0.0, atol=1e-9)
    # a camera barely above the root: rays run along the floor, nothing moves
    level = np.array([0.0, -6.0, float(np.median(j[:, 0, 2]))])
    t3, k3 = C.ground_along_rays(j, t, REST[0], SOLE, walk["fps"], level)
    assert k3 == 1.0 and np.array_equal(t3, t)
    # a depth error beyond a factor 2 is clipped
    far = np.asarray(walk["transl"], np.float64) + [0.0, 0.0, -30.0]
    assert C.ground_along_rays(M.joints_of(walk["rotmats"], far, REST, PARENTS), far, REST[0], SOLE,
                               walk["fps"], camera)[1] == C.DEPTH_LIMITS[0]


def test_hold_heading_keeps_pitch_and_holds_the_turn():
    """A foot turning +-10 deg about Z and pitching (heel-off) during one contact run: its heading
    becomes the run's mean, its pitch stays, frames far from the run are untouched."""
    T = 40
    c = np.zeros(T, bool)
    c[10:30] = True
    yaw = np.radians(10) * np.sin(np.arange(T))
    pitch = np.radians(np.linspace(0, 30, T))
    R = axis_angle_to_rotmat(yaw[:, None] * [0, 0, 1.0]) @ axis_angle_to_rotmat(pitch[:, None] * [0, 1.0, 0])
    H = C.hold_heading(R, np.array([1.0, 0, 0]), c, frames=3)
    f = H @ [1.0, 0, 0]
    heading = np.arctan2(f[:, 1], f[:, 0])
    assert np.ptp(heading[10:30]) < 1e-9
    np.testing.assert_allclose(f[:, 2], (R @ [1.0, 0, 0])[:, 2], atol=1e-12)        # pitch kept
    np.testing.assert_allclose(H[:5], R[:5], atol=1e-12)
    np.testing.assert_allclose(H[35:], R[35:], atol=1e-12)
    assert_rotations(H)


def test_lift_directions():
    roots = np.array([[1.0, 5.0, 0.9], [0.0, 2.0, 3.9]])
    d = C.lift_directions(roots, np.array([0.0, 0.0, 4.0]))
    np.testing.assert_allclose(d[:, 2], 1.0)
    np.testing.assert_allclose(np.cross(d[0], np.array([0.0, 0.0, 4.0]) - roots[0]), 0.0, atol=1e-12)
    np.testing.assert_allclose(d[1], [0, 0, 1])                # camera not MIN_RAY_DROP above: straight up
    np.testing.assert_allclose(C.lift_directions(roots), [[0, 0, 1], [0, 0, 1]])


def test_clean_track_is_detection_then_planting(walk):
    est = M.corrupt(walk, seed=5)
    R, t, found, k = C.clean_track(est["rotmats"], est["transl"], REST, PARENTS, SOLE, walk["fps"])
    want = C.contacts_of(M.joints_of(est["rotmats"], est["transl"], REST, PARENTS), SOLE, walk["fps"])
    R2, t2 = C.plant_feet(est["rotmats"], est["transl"], REST, PARENTS, want, SOLE, walk["fps"])
    assert k == 1.0 and np.array_equal(found, want)
    np.testing.assert_allclose(R, R2)
    np.testing.assert_allclose(t, t2)
