"""Retargeting a PyMAF rig onto other rigs (pymaf_blender/blender/retarget.py, retarget_ops.py).

The source: person "0" of the fixture result (walks across, 60 frames) and person "3" (gaps),
imported with ``scene.import_result``. The targets: procedural skeletons with each preset's
bone names (``engine.measure.retarget.TEST_RIGS``: other heights, T and A rest poses, random
rolls, Mixamo's FBX units and object transform, a rig facing +X, five or two spine bones), and
Rigify's own human metarig and generated rig when Blender's bundled Rigify loads. Everything is
compared as Blender evaluates it (``scene.frame_set``): every mapped bone's world direction
(head -> next mapped joint's head) against the source's, on every frame, and the hips' motion
against the source's scaled by the leg ratio. The retargeted rig survives an FBX round trip.
"""
import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_retarget as bench  # noqa: E402
from layout_recorder import Recorder  # noqa: E402

from engine.measure.retarget import TEST_RIGS, humanoid  # noqa: E402
from pymaf_blender.blender import compat, retarget, scene  # noqa: E402
from pymaf_blender.common import retarget as rt  # noqa: E402
from pymaf_blender.common.result_schema import read_result  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Setting the shape on a NumPy array:DeprecationWarning")

ANGLE_TOL = 0.01   # degrees; the keys are float32 (measured: < 3e-4)
HIP_TOL = 1e-4     # m
FBX_TOL = 1e-3     # m


@pytest.fixture(scope="module")
def source_blend(results, tmp_path_factory):
    bpy.ops.wm.read_homefile(use_empty=True)
    out = scene.import_result(bpy.context, read_result(results / "multi.npz"), track_ids=["0", "3"])
    path = tmp_path_factory.mktemp("retarget") / "source.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path, {t: a.name for t, a in out["armatures"].items()}


@pytest.fixture
def src(source_blend):
    """The saved scene, reopened: -> {"0": armature, "3": armature}."""
    path, names = source_blend
    bpy.ops.wm.open_mainfile(filepath=str(path))
    return {t: bpy.data.objects[n] for t, n in names.items()}


def evaluated_heads(obj, names, frames):
    return bench.world_heads(obj, names, frames)


def leg_height(obj, hips, ankles):
    """Rest hip centre height above the ankles (world), from Blender's bones."""
    mw = np.array(obj.matrix_world)
    z = [(mw @ np.array([*obj.data.bones[n].head_local, 1.0]))[2] for n in hips + ankles]
    return np.mean(z[:2]) - np.mean(z[2:])


# --------------------------------------------------------------------------- presets

@pytest.mark.parametrize("preset", sorted(TEST_RIGS))
def test_preset_on_procedural_rig(src, preset):
    source = src["0"]
    ctx = bpy.context
    target = bench.build_armature(ctx, humanoid(**TEST_RIGS[preset]), f"test_{preset}")
    if preset == "UNITY":   # bones in other rotation modes get keys in their own mode
        target.pose.bones["LeftUpperArm"].rotation_mode = "YXZ"
        target.pose.bones["RightLowerLeg"].rotation_mode = "AXIS_ANGLE"
        target.pose.bones["Spine"].rotation_mode = "ZXY"
    info = retarget.retarget_action(ctx, source, target, rt.PRESETS[preset], "FULL")
    src_action = source.animation_data.action
    action = target.animation_data.action
    assert action is info["action"] and action.name == f"{src_action.name}_to_{target.name}"
    assert tuple(action.frame_range) == pytest.approx(tuple(src_action.frame_range))
    keyed = {fc.data_path.split('"')[1] for fc in compat.action_fcurves(action, target)}
    assert keyed == set(info["plan"].resolved.values())   # unmapped bones get no keys
    for fc in compat.action_fcurves(action, target):
        assert len(fc.keyframe_points) == info["frames"][1] - info["frames"][0] + 1

    m = bench.measure(source, target, info)
    err = m["errors"]
    assert err.shape[1] >= 13, m["keys"]
    assert err.max() < ANGLE_TOL, (preset, err.max(0))
    assert m["hip_error"].max() < HIP_TOL

    # the hips move as the source's hips, turned to the target's heading and scaled by the leg ratio
    plan = info["plan"]
    ratio = (leg_height(target, [plan.resolved["left_hip"], plan.resolved["right_hip"]],
                        [plan.resolved["left_ankle"], plan.resolved["right_ankle"]])
             / leg_height(source, ["left_hip", "right_hip"], ["left_ankle", "right_ankle"]))
    assert plan.ratio == pytest.approx(ratio, rel=1e-5)
    assert 0.8 < ratio < 1.3
    frames = m["frames"]
    s = evaluated_heads(source, ["left_hip", "right_hip"], frames).mean(1)
    t = evaluated_heads(target, [plan.resolved["left_hip"], plan.resolved["right_hip"]], frames).mean(1)
    want = (s - s[0]) @ plan.heading.T * ratio
    assert np.abs((t - t[0]) - want).max() < HIP_TOL
    assert np.linalg.norm(s[-1, :2] - s[0, :2]) > 0.5   # the person really travels


def test_person_with_gaps_is_keyed_on_every_frame(src):
    """Person 3 is missing on some frames: the target is keyed on every frame of the source
    action's range and follows what the source shows there (its interpolation)."""
    target = bench.build_armature(bpy.context, humanoid(**TEST_RIGS["UE5"]), "gappy")
    info = retarget.retarget_action(bpy.context, src["3"], target, rt.PRESETS["UE5"], "IN_PLACE")
    info["mode"] = "IN_PLACE"
    lo, hi = src["3"].animation_data.action.frame_range
    assert info["frames"] == (int(lo), int(hi))
    m = bench.measure(src["3"], target, info)
    assert m["errors"].max() < ANGLE_TOL and m["hip_error"].max() < HIP_TOL


def test_source_take_pushed_to_the_nla(src):
    """A PyMAF rig whose motion was pushed to the NLA (Push Takes) is retargeted from that take."""
    from pymaf_blender.blender import takes

    source = src["0"]
    action = source.animation_data.action
    takes.push_action(source, action)
    source.animation_data.action = None
    target = bench.build_armature(bpy.context, humanoid(**TEST_RIGS["UNITY"]), "from_nla")
    info = retarget.retarget_action(bpy.context, source, target, rt.PRESETS["UNITY"])
    assert info["action"].name == f"{action.name}_to_from_nla" and source.animation_data.action is None
    m = bench.measure(source, target, info)
    assert m["errors"].max() < ANGLE_TOL and m["hip_error"].max() < HIP_TOL


def test_root_modes(src):
    source = src["0"]
    out = {}
    for mode in rt.ROOT_MODES:
        target = bench.build_armature(bpy.context, humanoid(**TEST_RIGS["UE5"]), f"ue_{mode}")
        info = retarget.retarget_action(bpy.context, source, target, rt.PRESETS["UE5"], mode)
        frames = np.arange(info["frames"][0], info["frames"][1] + 1)
        out[mode] = evaluated_heads(target, ["thigh_l", "thigh_r", "root"], frames)
        if mode == "ROOT_BONE":
            fcs = [fc.data_path for fc in compat.action_fcurves(target.animation_data.action, target)]
            assert 'pose.bones["root"].location' in fcs
    full, in_place, on_root = (out[m] for m in rt.ROOT_MODES)
    hips = {m: v[:, :2].mean(1) for m, v in out.items()}
    assert np.ptp(hips["FULL"][:, :2], axis=0).max() > 0.5
    assert np.ptp(hips["IN_PLACE"][:, :2], axis=0).max() < 1e-5          # no horizontal motion
    assert np.allclose(hips["IN_PLACE"][:, 2], hips["FULL"][:, 2], atol=1e-5)
    assert np.allclose(hips["ROOT_BONE"], hips["FULL"], atol=1e-5)      # the same hips ...
    root = on_root[:, 2]
    assert np.allclose(root[:, 2], 0.0, atol=1e-6)                       # ... the root slides on the floor
    assert np.allclose(root[:, :2] - root[0, :2], hips["FULL"][:, :2] - hips["FULL"][0, :2], atol=1e-5)
    assert np.allclose(full[:, 2], full[0, 2]) and np.allclose(in_place[:, 2], in_place[0, 2])  # root stays
    with pytest.raises(ValueError, match="root bone"):
        mixamo = bench.build_armature(bpy.context, humanoid(**TEST_RIGS["MIXAMO"]), "no_root")
        retarget.retarget_action(bpy.context, source, mixamo, rt.PRESETS["MIXAMO"], "ROOT_BONE")
    assert mixamo.animation_data is None or mixamo.animation_data.action is None   # checked before changing


def test_rigify_metarig_and_generated_rig(src):
    """Rigify's own human metarig, and the rig it generates (FK controls under constrained MCH
    bones): the ORG bones (which the deforming bones follow) point where the source's bones do.
    With the limbs left on IK the FK keys do not reach them: the FK switch matters."""
    rigs = bench.rigify_rigs(bpy.context)
    if rigs is None:
        pytest.skip("Blender's bundled Rigify did not load")
    meta, rig = rigs
    info = retarget.retarget_action(bpy.context, src["0"], meta, rt.PRESETS["RIGIFY_METARIG"])
    m = bench.measure(src["0"], meta, info)
    assert m["errors"].max() < ANGLE_TOL and m["hip_error"].max() < HIP_TOL
    assert not info["evaluated"]

    for pb in rig.pose.bones:
        if "IK_FK" in pb.keys():
            pb["IK_FK"] = 0.0
    info = retarget.retarget_action(bpy.context, src["0"], rig, rt.PRESETS["RIGIFY"])
    assert info["evaluated"]
    assert sorted(info["rigify_fk"]) == ["thigh_parent.L", "thigh_parent.R", "upper_arm_parent.L",
                                         "upper_arm_parent.R"]
    org = bench.rigify_org_bones(rig)
    m = bench.measure(src["0"], rig, info, compare=org)
    assert m["errors"].shape[1] >= 11
    assert m["errors"].max() < ANGLE_TOL, dict(zip(m["keys"], m["errors"].max(0)))
    assert m["hip_error"].max() < HIP_TOL
    keyed = {fc.data_path.split('"')[1] for fc in compat.action_fcurves(rig.animation_data.action, rig)}
    assert "torso" in keyed and not any(k.startswith(("ORG-", "DEF-", "MCH-")) for k in keyed)
    for name in info["rigify_fk"]:   # back on IK: the FK keys no longer reach the limbs
        rig.pose.bones[name]["IK_FK"] = 0.0
    rig.update_tag()
    assert bench.measure(src["0"], rig, info, compare=org)["errors"].max() > 5.0


# --------------------------------------------------------------------------- FBX

def test_fbx_round_trip(src, tmp_path):
    """The retargeted Mixamo-like rig (centimetres under a scaled, rotated object) exported with
    Blender's FBX exporter (one "Scene" take over the scene's frames, as the add-on's FBX
    export does) and imported back with the importer's defaults: the joints agree. The
    importer's default ``anim_offset`` (1) puts the keys one frame later (blender-notes §6.2)."""
    ctx = bpy.context
    target = bench.build_armature(ctx, humanoid(**TEST_RIGS["MIXAMO"]), "mixamo_char")
    info = retarget.retarget_action(ctx, src["0"], target, rt.PRESETS["MIXAMO"])
    sc = ctx.scene
    sc.render.fps, sc.render.fps_base = 30, 1.0   # the importer reads whole frame rates exactly
    names = [b.name for b in target.data.bones]
    frames = np.linspace(info["frames"][0], info["frames"][1], 5).round().astype(int)
    want = evaluated_heads(target, names, frames)
    for o in ctx.selected_objects:
        o.select_set(False)
    target.select_set(True)
    ctx.view_layer.objects.active = target
    path = str(tmp_path / "mixamo_char.fbx")
    sc.frame_start, sc.frame_end = info["frames"]
    res = bpy.ops.export_scene.fbx(filepath=path, use_selection=True, object_types={"ARMATURE"},
                                   add_leaf_bones=False, bake_anim=True, bake_anim_simplify_factor=0.0,
                                   bake_anim_use_all_actions=False, bake_anim_use_nla_strips=False)
    assert res == {"FINISHED"} and os.path.getsize(path) > 0
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.import_scene.fbx(filepath=path) == {"FINISHED"}
    arm = [o for o in bpy.data.objects if o.type == "ARMATURE"]
    assert len(arm) == 1 and {b.name for b in arm[0].data.bones} == set(names)
    assert tuple(arm[0].animation_data.action.frame_range) == (info["frames"][0] + 1, info["frames"][1] + 1)
    got = evaluated_heads(arm[0], names, frames + 1)
    assert np.abs(got - want).max() < FBX_TOL, np.abs(got - want).max()
    assert np.ptp(want[:, names.index("mixamorig:Hips"), 0]) > 0.5      # it moved: frames really compared


# --------------------------------------------------------------------------- errors and operator

def test_refusals_say_what_is_wrong(src):
    ctx = bpy.context
    layout = humanoid(**TEST_RIGS["MIXAMO"])
    layout.bones = [b for b in layout.bones if not b[0].endswith(("LeftLeg", "LeftFoot", "LeftToeBase",
                                                                  "LeftToe_End"))]
    target = bench.build_armature(ctx, layout, "legless")
    with pytest.raises(ValueError, match=r"lacks bones the map needs: left_knee \(mixamorig:LeftLeg / "
                                         r"mixamorig1:LeftLeg / mixamorig_LeftLeg / LeftLeg\), left_ankle"):
        retarget.retarget_action(ctx, src["0"], target, rt.PRESETS["MIXAMO"])
    assert target.animation_data is None or target.animation_data.action is None
    with pytest.raises(ValueError, match="not a PyMAF rig"):
        retarget.retarget_action(ctx, target, src["0"], rt.PRESETS["MIXAMO"])
    with pytest.raises(ValueError, match="same armature"):
        retarget.retarget_action(ctx, src["0"], src["0"], rt.PRESETS["MIXAMO"])
    body = bpy.data.objects[src["0"].name + "_body"]
    with pytest.raises(ValueError, match="is not an armature"):
        retarget.retarget_action(ctx, src["0"], body, rt.PRESETS["MIXAMO"])


def test_operator_user_map_saved_and_loaded(src, addon, tmp_path):
    """A rig with its own naming: Guess fills the user map, it is saved in the user folder,
    loaded back, and the operator retargets with it; errors come back as reports."""
    ctx = bpy.context
    layout = humanoid("UE5", height=1.7, arm_angle=20.0, spine_count=4, rolls=True, seed=11)
    rename = {}
    for name, *_ in layout.bones:
        if name.endswith(("_l", "_r")):
            rename[name] = f"Bip_{name[-1].upper()}_{name[:-2].title().replace('_', '')}"
        elif name.startswith("spine_"):
            rename[name] = f"Bip_Spine{int(name[-2:])}"
        else:
            rename[name] = {"pelvis": "Bip_Pelvis", "root": "Bip"}.get(name, name)
    layout.bones = [(rename[n], rename.get(p), h, t, r) for n, p, h, t, r in layout.bones]
    target = bench.build_armature(ctx, layout, "custom")
    s = ctx.scene.pymaf_retarget
    s.source, s.target, s.preset = src["0"], target, "USER"
    texts = Recorder()
    bpy.types.PYMAF_PT_retarget.draw(SimpleNamespace(layout=texts), ctx)
    assert "Empty: Guess from the target's names, or Load a map" in texts.texts

    assert bpy.ops.pymaf.retarget_map_fill(how="GUESS") == {"FINISHED"}
    guessed = {r.name: r.bone for r in s.bones if r.bone}
    assert guessed["left_knee"] == "Bip_L_Calf" and guessed["pelvis"] == "Bip_Pelvis"
    assert guessed["spine3"] == "Bip_Spine4" and guessed["neck"] == "neck_01"
    texts = Recorder()
    bpy.types.PYMAF_PT_retarget.draw(SimpleNamespace(layout=texts), ctx)
    assert "left_knee" in texts.texts and "Empty: Guess from the target's names, or Load a map" not in texts.texts

    s.map_name = "bip rig"
    assert bpy.ops.pymaf.retarget_map_save() == {"FINISHED"}
    # the folder of the add-on whose operators ran (the installed extension's when an earlier
    # test installed it: its user folder differs from a checkout's)
    running = importlib.import_module(bpy.types.PYMAF_PT_retarget.__module__.rsplit(".", 1)[0] + ".blender.retarget")
    saved = running.user_maps_folder(create=False) / "bip rig.json"
    assert saved.is_file() and saved.is_relative_to(Path(os.environ["BLENDER_USER_RESOURCES"]))
    assert saved in running.saved_maps()
    assert rt.bone_map_from_json(saved.read_text()) == guessed

    assert bpy.ops.pymaf.retarget_map_fill(how="CLEAR") == {"FINISHED"}
    with pytest.raises(RuntimeError, match="the user map is empty"):
        bpy.ops.pymaf.retarget()
    assert bpy.ops.pymaf.retarget_map_load(filepath=str(saved)) == {"FINISHED"}
    assert {r.name: r.bone for r in s.bones if r.bone} == guessed
    s.root_mode = "IN_PLACE"
    assert bpy.ops.pymaf.retarget() == {"FINISHED"}
    action = target.animation_data.action
    assert action.name == f"{src['0'].animation_data.action.name}_to_custom"
    info = {"plan": rt.plan_retarget(retarget.skeleton_of(src["0"]), retarget.skeleton_of(target), guessed),
            "frames": tuple(int(f) for f in action.frame_range), "mode": "IN_PLACE"}
    m = bench.measure(src["0"], target, info)
    assert m["errors"].max() < ANGLE_TOL and m["hip_error"].max() < HIP_TOL

    # by file, for scripts; and a preset the rig does not fit: the report lists the bones
    assert bpy.ops.pymaf.retarget(preset="USER", map_file=str(saved), root_mode="FULL") == {"FINISHED"}
    assert len([a for a in bpy.data.actions if a.name.startswith(action.name)]) == 2
    with pytest.raises(RuntimeError, match=r"lacks bones the map needs: pelvis \(Hips\), left_hip \(LeftUpperLeg\)"):
        bpy.ops.pymaf.retarget(preset="UNITY")
