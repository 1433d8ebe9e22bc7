"""engine/common/retarget.py: bone maps and the retarget maths, in numpy (no Blender).

Skeletons come from ``engine.measure.retarget.humanoid`` (procedural, each preset's names);
the source is an SMPL-named T-pose rig like PyMAF's, moved by a random smooth motion.
"""
import json

import numpy as np
import pytest

from engine.common import retarget as rt
from engine.common import rotations
from engine.measure.retarget import TEST_RIGS, humanoid, skeleton_from_layout

FRAMES = 40


def smooth_motion(skel, frames=FRAMES, seed=0, amplitude=0.6, travel=(1.5, -0.8, 0.0)):
    """Random smooth local rotations (T, B, 4, 4) for every bone, a turning root and root travel."""
    rng = np.random.default_rng(seed)
    B = len(skel.names)
    t = np.linspace(0, 1, frames)[:, None, None]
    a0, a1 = rng.normal(size=(2, 1, B, 3)) * amplitude / np.sqrt(3)
    aa = a0 * (1 - t) + a1 * t + 0.2 * np.sin(6 * t) * rng.normal(size=(1, B, 3))
    basis = np.broadcast_to(np.eye(4), (frames, B, 4, 4)).copy()
    basis[..., :3, :3] = rotations.axis_angle_to_rotmat(aa)
    root = skel.index("pelvis") if "pelvis" in skel.names else 0
    turn = rotations.axis_angle_to_rotmat(np.array([0, 0, 1.0]) * np.linspace(0, 2.5, frames)[:, None])
    # root rotation about world Z (expressed in the root's rest axes) on top of the random one
    Rr = skel.rest[root, :3, :3]
    basis[:, root, :3, :3] = Rr.T @ turn @ Rr @ basis[:, root, :3, :3]
    loc = np.asarray(travel) * t[:, 0] + np.array([0, 0, 0.1]) * np.sin(9 * t[:, 0])
    basis[:, root, :3, 3] = loc @ Rr  # location in the root's rest axes
    return basis


@pytest.fixture(scope="module")
def source():
    skel = skeleton_from_layout(humanoid("SMPL", height=1.65))
    pose = rt.pose_from_basis(skel, smooth_motion(skel))
    return skel, pose


def world_heads(skel, pose):
    return (skel.world[None, None] @ pose)[..., :3, 3]


# --------------------------------------------------------------------------- presets and maps

def test_presets_are_valid_and_map_each_target_bone_once():
    for name, m in rt.PRESETS.items():
        assert rt.check_bone_map(m) == m, name
        flat = [n for v in m.values() for n in ([v] if isinstance(v, str) else v)]
        assert len(flat) == len(set(flat)), name
        assert set(rt.CORE) <= set(m), name
        assert set(m) <= set(rt.MAP_KEYS)
    assert set(rt.PRESETS) == set(rt.PRESET_LABELS)
    assert rt.PRESETS["MIXAMO"]["left_hip"][0] == "mixamorig:LeftUpLeg"
    assert rt.PRESETS["RIGIFY_METARIG"]["left_shoulder"] == "upper_arm.L"
    assert rt.PRESETS["UE5"]["root"] == "root" and rt.PRESETS["RIGIFY"]["torso"] == "torso"


def test_bone_map_errors_name_the_problem():
    with pytest.raises(ValueError, match="'spine9'"):
        rt.check_bone_map({"pelvis": "Hips", "spine9": "x"})
    with pytest.raises(ValueError, match="'Hips' is mapped from both 'pelvis' and 'spine1'"):
        rt.check_bone_map({"pelvis": "Hips", "spine1": "Hips"})
    with pytest.raises(ValueError, match="maps to a bone name|must map"):
        rt.check_bone_map({"pelvis": 3})
    m = rt.PRESETS["UNITY"]
    resolved, skipped, missing = rt.resolve_bone_map(m, [v for k, v in m.items() if k not in ("left_knee", "neck")])
    assert missing == ["left_knee"] and skipped == ["neck"] and "left_knee" not in resolved
    assert rt.describe_missing(m, missing) == "left_knee (LeftLowerLeg)"


def test_map_json_round_trip_and_plain_dicts():
    m = {"pelvis": "Hips", "left_hip": "L_Thigh"}
    text = rt.bone_map_to_json(m, name="mine")
    assert json.loads(text)["format"] == rt.MAP_FORMAT
    assert rt.bone_map_from_json(text) == m
    assert rt.bone_map_from_json(json.dumps(m)) == m
    with pytest.raises(ValueError, match="invalid JSON"):
        rt.bone_map_from_json("{nope")


@pytest.mark.parametrize("preset", sorted(TEST_RIGS))
def test_guess_finds_the_preset(preset):
    layout = humanoid(**TEST_RIGS[preset])
    names = [b[0] for b in layout.bones]
    resolved, _, _ = rt.resolve_bone_map(rt.PRESETS[preset], names)
    assert rt.guess_bone_map(names) == resolved


def test_guess_by_words_on_other_naming():
    layout = humanoid("UE5", spine_count=4)
    rename = {b[0]: b[0] for b in layout.bones}
    for old in list(rename):   # "thigh_l" -> "Bip_L_Thigh", "spine_01" -> "Bip_Spine1" ...
        if old.endswith(("_l", "_r")):
            rename[old] = f"Bip_{old[-1].upper()}_{old[:-2].title().replace('_', '')}"
        elif old.startswith("spine_"):
            rename[old] = f"Bip_Spine{int(old[-2:])}"
        elif old == "pelvis":
            rename[old] = "Bip_Pelvis"
    names = [rename[b[0]] for b in layout.bones]
    parents = [names.index(rename[b[1]]) if b[1] else -1 for b in layout.bones]
    guess = rt.guess_bone_map(names, parents)
    want = {"pelvis": "Bip_Pelvis", "left_hip": "Bip_L_Thigh", "right_knee": "Bip_R_Calf",
            "left_ankle": "Bip_L_Foot", "left_foot": "Bip_L_Ball", "left_collar": "Bip_L_Clavicle",
            "left_shoulder": "Bip_L_Upperarm", "left_elbow": "Bip_L_Lowerarm", "right_wrist": "Bip_R_Hand",
            "neck": "neck_01", "head": "head", "spine1": "Bip_Spine1", "spine3": "Bip_Spine4"}
    assert {k: guess.get(k) for k in want} == want
    assert "upperarm_twist_01_l" not in guess.values()


# --------------------------------------------------------------------------- rotations

def test_rotation_between_vectors_including_opposite():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 100, 3))
    R = rt.rotation_between_vectors(a, b)
    assert np.allclose(R @ np.swapaxes(R, -1, -2), np.eye(3), atol=1e-12)
    got = np.einsum("nij,nj->ni", R, a / np.linalg.norm(a, axis=-1, keepdims=True))
    assert np.allclose(got, b / np.linalg.norm(b, axis=-1, keepdims=True), atol=1e-12)
    # smallest: the axis is perpendicular to both
    axis = rotations.rotmat_to_axis_angle(R)
    assert np.allclose(np.sum(axis * a, -1), 0, atol=1e-9)
    R = rt.rotation_between_vectors(np.array([0, 1.0, 0]), np.array([0, -2.0, 0]))
    assert np.allclose(R @ [0, 1, 0], [0, -1, 0]) and np.isclose(np.linalg.det(R), 1)


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_euler_round_trip_and_continuity(order):
    rng = np.random.default_rng(2)
    R = rotations.axis_angle_to_rotmat(rng.normal(size=(200, 3)))
    e = rt.euler_from_rotmat(R, order, continuous=False)
    assert np.allclose(rt.rotmat_from_euler(e, order), R, atol=1e-9)
    # two full turns about the order's first axis with some wobble: the angles unwrap past
    # +-180 degrees instead of jumping, and never flip to the other Euler triple
    t = np.linspace(0, 1, 400)
    e_in = np.zeros((len(t), 3))
    first, middle, last = ("XYZ".index(c) for c in order)
    e_in[:, first] = 4 * np.pi * t
    e_in[:, middle] = 0.5 * np.sin(5 * t)
    e_in[:, last] = 0.4 * np.cos(3 * t)
    R = rt.rotmat_from_euler(e_in, order)
    e = rt.rotation_channels(R, order)
    assert np.allclose(rt.rotmat_from_channels(e, order), R, atol=1e-9)
    assert np.allclose(e - e[0] + e_in[0], e_in, atol=1e-9)
    # Blender's order convention: 'XYZ' applies X first
    x, z = rt.rotmat_from_euler([0.3, 0, 0], "XYZ"), rt.rotmat_from_euler([0, 0, 0.4], "XYZ")
    assert np.allclose(rt.rotmat_from_euler([0.3, 0, 0.4], "XYZ"), z @ x)


def test_quaternion_and_axis_angle_channels_are_continuous():
    t = np.linspace(0, 4 * np.pi, 300)
    R = rt.z_rotation(t)
    q = rt.rotation_channels(R, "QUATERNION")
    assert np.all(np.sum(q[1:] * q[:-1], -1) > 0)
    aa = rt.rotation_channels(R, "AXIS_ANGLE")
    assert np.allclose(rt.rotmat_from_channels(aa, "AXIS_ANGLE"), R, atol=1e-9)
    assert np.allclose(rt.rotmat_from_channels(q, "QUATERNION"), R, atol=1e-9)


def test_local_world_round_trip():
    skel = skeleton_from_layout(humanoid("UE5", rolls=True, seed=9))
    basis = smooth_motion(skel, frames=5, seed=3)
    basis[..., :3, 3] += np.random.default_rng(4).normal(size=basis[..., :3, 3].shape) * 0.05
    pose = rt.pose_from_basis(skel, basis)
    assert np.allclose(rt.basis_from_pose(skel, pose), basis, atol=1e-10)
    # rest basis -> rest pose
    rest = rt.pose_from_basis(skel, np.broadcast_to(np.eye(4), (1,) + basis.shape[1:]))
    assert np.allclose(rest[0], skel.rest, atol=1e-12)


# --------------------------------------------------------------------------- retargeting

def retargeted(source, preset, mode="FULL", **layout_overrides):
    skel_s, pose_s = source
    layout = humanoid(**{**TEST_RIGS[preset], **layout_overrides})
    tgt = skeleton_from_layout(layout)
    basis, plan = rt.retarget(skel_s, tgt, pose_s, rt.PRESETS[preset], mode)
    pose_t = rt.pose_from_basis(tgt, basis)
    return tgt, plan, basis, pose_t


@pytest.mark.parametrize("preset", sorted(TEST_RIGS))
def test_target_bones_point_where_the_source_bones_point(source, preset):
    """Every mapped bone with a mapped joint below it: the direction head -> that joint's head
    matches the source's (turned by the heading) on every frame, whatever the rest pose
    (T vs A), rolls, scale, units, facing and spine bone count."""
    skel_s, pose_s = source
    tgt, plan, basis, pose_t = retargeted(source, preset)
    pairs = rt.direction_pairs(plan, tgt)
    assert len(pairs) >= 14, [p[0] for p in pairs]
    err = rt.direction_errors(world_heads(skel_s, pose_s), world_heads(tgt, pose_t), pairs, plan.heading)
    assert err.max() < 1e-6, (preset, err.max())
    # unmapped bones keep their rest basis: they follow their parents
    mapped = set(plan.tgt) | {plan.root}
    others = [b for b in range(len(tgt.names)) if b not in mapped]
    assert np.allclose(basis[:, others], np.eye(4), atol=1e-12)
    # only the carrier (and the root bone) move: the other mapped bones just rotate
    movers = [b for b in plan.tgt if b != plan.carrier]
    assert np.allclose(basis[:, movers, :3, 3], 0, atol=1e-9)


def test_rest_correction_t_pose_source_drives_an_a_pose_target(source):
    """At the source's rest pose the A-pose target's arms go up to the source's T-pose
    (horizontal), turned to the target's heading, and its legs stay as they are."""
    skel_s, _ = source
    rest_pose = skel_s.rest[None]
    for preset in ("UE5", "RIGIFY_METARIG"):
        tgt = skeleton_from_layout(humanoid(**TEST_RIGS[preset]))
        basis, plan = rt.retarget(skel_s, tgt, rest_pose, rt.PRESETS[preset], "IN_PLACE")
        heads = world_heads(tgt, rt.pose_from_basis(tgt, basis))[0]
        upper = heads[tgt.index(plan.resolved["left_elbow"])] - heads[tgt.index(plan.resolved["left_shoulder"])]
        assert abs(upper[2]) / np.linalg.norm(upper) < 1e-9, preset
        rest_heads = tgt.rest_world()[:, :3, 3]
        upper_rest = rest_heads[tgt.index(plan.resolved["left_elbow"])] - rest_heads[tgt.index(plan.resolved["left_shoulder"])]
        assert rt.angle_between_vectors(upper, upper_rest) > 25  # it really moved up from the A-pose
        # the heading: UE5's rig faces +X, so the left arm points along +Y
        if preset == "UE5":
            assert np.allclose(plan.heading, rt.z_rotation(np.pi / 2), atol=1e-9)
            assert upper[1] > 0.99 * np.linalg.norm(upper)


def test_plain_hierarchy_without_correction_would_be_wrong(source):
    """The check can fail: copying the source's rotation changes without the rest correction
    leaves the A-pose arms tens of degrees off."""
    skel_s, pose_s = source
    tgt = skeleton_from_layout(humanoid(**TEST_RIGS["RIGIFY_METARIG"]))
    plan = rt.plan_retarget(skel_s, tgt, rt.PRESETS["RIGIFY_METARIG"])
    plan.post = np.broadcast_to(plan.heading.T, plan.post.shape).copy()   # no rest correction
    R = rt.target_rotations(plan, skel_s, tgt, pose_s)
    hips, root = rt.root_targets(plan, skel_s, tgt, pose_s)
    pose_t = rt.pose_from_basis(tgt, rt.solve_basis(plan, tgt, R, hips, root))
    err = rt.direction_errors(world_heads(skel_s, pose_s), world_heads(tgt, pose_t),
                              rt.direction_pairs(plan, tgt), plan.heading)
    assert err.max() > 20


def test_missing_core_bones_are_listed(source):
    skel_s, pose_s = source
    layout = humanoid(**TEST_RIGS["MIXAMO"])
    keep = [b for b in layout.bones if "LeftLeg" not in b[0] and "RightForeArm" not in b[0]]
    names = [b[0] for b in keep]
    layout.bones = [b if b[1] in names or b[1] is None else (b[0], "mixamorig:Hips") + b[2:] for b in keep]
    tgt = skeleton_from_layout(layout)
    with pytest.raises(ValueError, match=r"left_knee \(mixamorig:LeftLeg.*right_elbow \(mixamorig:RightForeArm"):
        rt.plan_retarget(skel_s, tgt, rt.PRESETS["MIXAMO"])
    with pytest.raises(ValueError, match="not a PyMAF rig"):
        rt.plan_retarget(tgt, tgt, rt.PRESETS["MIXAMO"])


def hip_centre(skel, pose, plan):
    return world_heads(skel, pose)[:, plan.tgt_pivot].mean(1)


def test_root_motion_is_scaled_by_the_leg_ratio(source):
    skel_s, pose_s = source
    src = world_heads(skel_s, pose_s)[:, [skel_s.index("left_hip"), skel_s.index("right_hip")]].mean(1)
    for preset in ("MIXAMO", "UE5", "UNITY"):
        tgt, plan, basis, pose_t = retargeted(source, preset)
        h_t = TEST_RIGS[preset]["height"]
        assert plan.ratio == pytest.approx(h_t / 1.65, rel=1e-6)   # same proportions, other heights
        got = hip_centre(tgt, pose_t, plan)
        want = (src - src[0]) @ plan.heading.T * plan.ratio
        assert np.abs((got - got[0]) - want).max() < 1e-9, preset
        # the first frame starts where the target stands
        rest = tgt.rest_world()[plan.tgt_pivot, :3, 3].mean(0)
        assert np.allclose(got[0, :2], rest[:2], atol=1e-9)
    # vertical: hip height above the source's floor, scaled, above the target's ankles
    ankles = world_heads(skel_s, pose_s)[:, [skel_s.index("left_ankle"), skel_s.index("right_ankle")], 2].min(1)
    floor = np.percentile(ankles, rt.FLOOR_PERCENTILE)
    tgt_ankle = tgt.rest_world()[plan.tgt_ankles, 2, 3].mean()
    assert np.allclose(got[:, 2], tgt_ankle + plan.ratio * (src[:, 2] - floor), atol=1e-9)


def test_root_modes(source):
    skel_s, pose_s = source
    tgt, plan, _, full = retargeted(source, "UE5", "FULL")
    _, _, _, inplace = retargeted(source, "UE5", "IN_PLACE")
    _, _, basis_rb, rootbone = retargeted(source, "UE5", "ROOT_BONE")
    f, i, r = (hip_centre(tgt, p, plan) for p in (full, inplace, rootbone))
    assert np.ptp(f[:, 0]) > 0.5                                   # it travels
    assert np.ptp(i[:, :2], axis=0).max() < 1e-9                   # in place: no horizontal motion
    assert np.allclose(i[:, 2], f[:, 2])                           # ... the same heights
    assert np.allclose(r, f, atol=1e-9)                            # root bone: the same hips ...
    root = world_heads(tgt, rootbone)[:, plan.root]
    rest_root = tgt.rest_world()[plan.root, :3, 3]
    assert np.allclose(root[:, 2], rest_root[2]) and np.allclose(root[:, :2] - rest_root[:2], f[:, :2] - f[0, :2])
    assert np.allclose(basis_rb[:, plan.root, :3, :3], np.eye(3))  # ... the root only translates
    with pytest.raises(ValueError, match="root bone"):
        retargeted(source, "MIXAMO", "ROOT_BONE")
    with pytest.raises(ValueError, match="must be one of"):
        retargeted(source, "MIXAMO", "SIDEWAYS")


def test_fewer_and_more_spine_bones(source):
    """UE5 with its five spine bones (two follow their parents) and Unity without UpperChest
    (SMPL's spine3 has no bone): the mapped bones still point right; the skipped key is
    reported."""
    for preset, spine in (("UE5", 5), ("UNITY", 2), ("MIXAMO", 2)):
        skel_s, pose_s = source
        tgt, plan, _, pose_t = retargeted(source, preset, spine_count=spine)
        err = rt.direction_errors(world_heads(skel_s, pose_s), world_heads(tgt, pose_t),
                                  rt.direction_pairs(plan, tgt), plan.heading)
        assert err.max() < 1e-6, preset
        if spine == 2:
            assert plan.skipped == ["spine3"], (preset, plan.skipped)
