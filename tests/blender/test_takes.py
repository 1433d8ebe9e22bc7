"""Takes on the NLA: two imports of the same person with other settings, compared and blended
on one rig (real bpy 4.2 / 5.0 / 5.2; slotted actions from 4.4)."""
import bpy
import numpy as np
import pytest

from pymaf_blender.blender import animation, rig, scene, takes
from pymaf_blender.common.result_schema import read_result

NAMES = rig.BONE_NAMES
TOL = 1e-5


def joints(arm, frames):
    sc = bpy.context.scene
    out = np.empty((len(frames), len(NAMES), 3))
    for i, f in enumerate(frames):
        sc.frame_set(int(f))
        out[i] = [arm.matrix_world @ arm.pose.bones[n].head for n in NAMES]
    return out


@pytest.fixture
def two_takes(empty_scene, results):
    result = read_result(results / "multi.npz")
    a = scene.import_result(bpy.context, result, track_ids=["0"], strength=0.0)
    b = scene.import_result(bpy.context, result, track_ids=["0", "3"], strength=1.0)
    frames = result.tracks["0"].frames[::7] + a["frame_start"]
    return a, b, frames


def test_actions_are_named_after_the_video_and_person(two_takes):
    a, b, _ = two_takes
    assert animation.motion_action(a["armatures"]["0"]).name == "video_PyMAF_0_motion"
    assert animation.motion_action(b["armatures"]["0"]).name == "video_2_PyMAF_0_motion"
    assert takes.same_person(a["armatures"]["0"], b["armatures"]["0"])
    assert not takes.same_person(a["armatures"]["0"], b["armatures"]["3"])


def test_push_compare_and_blend(two_takes):
    a, b, frames = two_takes
    arm_a, arm_b = a["armatures"]["0"], b["armatures"]["0"]
    Ja, Jb = joints(arm_a, frames), joints(arm_b, frames)
    assert np.abs(Ja - Jb).max() > 0.01          # the takes differ (raw vs strongly smoothed)
    n_actions = len(bpy.data.actions)
    names = takes.push_takes(arm_a, [arm_a, arm_b, b["armatures"]["3"]])
    ad = arm_a.animation_data
    assert names == ["video_2_PyMAF_0_motion", "video_PyMAF_0_motion"] and ad.action is None
    assert [t.mute for t in ad.nla_tracks] == [True, False]
    assert len(bpy.data.actions) == n_actions      # no copies
    assert np.abs(joints(arm_a, frames) - Ja).max() < TOL   # its own take plays
    # Pushing again changes nothing.
    assert takes.push_takes(arm_a, [arm_a, arm_b]) == names
    # Compare: the other take alone gives the other import's motion on this rig (same person,
    # same rest skeleton).
    other, own = ad.nla_tracks
    own.mute, other.mute = True, False
    assert np.abs(joints(arm_a, frames) - Jb).max() < TOL
    # Blend: the own take on top at half influence lies between the two.
    own.mute = False
    strip = own.strips[0]
    strip.use_animated_influence = True
    strip.influence = 0.5
    for fc in strip.fcurves:   # use_animated_influence keys the influence: set that key to 0.5
        for k in fc.keyframe_points:
            k.co[1] = 0.5
    J = joints(arm_a, frames)
    mid, half = (Ja + Jb) / 2, np.abs(Ja - Jb) / 2
    moving = half > 0.005
    assert np.all(np.abs(J - mid)[moving] < half[moving])


def test_reapply_smoothing_after_push_keys_the_own_take(two_takes, results):
    a, b, frames = two_takes
    arm_a, arm_b = a["armatures"]["0"], b["armatures"]["0"]
    Jb = joints(arm_b, frames)
    takes.push_takes(arm_a, [arm_a, arm_b])
    n_actions = len(bpy.data.actions)
    arm_a.animation_data.nla_tracks[0].mute = True         # only the own take plays
    scene.reapply_smoothing(bpy.context, arm_a, 1.0)
    assert len(bpy.data.actions) == n_actions and arm_a.animation_data.action is None
    assert np.abs(joints(arm_a, frames) - Jb).max() < TOL  # the own take, now smoothed like b
    takes.restore_active(arm_a)
    assert arm_a.animation_data.action.name == "video_PyMAF_0_motion"


def test_a_rig_without_motion_is_refused(empty_scene):
    arm = bpy.data.objects.new("x", bpy.data.armatures.new("x"))
    bpy.context.scene.collection.objects.link(arm)
    with pytest.raises(ValueError, match="no motion"):
        takes.push_takes(arm, [])
