"""Export of imported rigs (FBX presets, glTF binary, BVH) and exact re-import.

Each format: import the fixture result (three people, gaps, 29.97 fps, scene frames 11-70),
export, reset to an empty scene (``read_homefile(use_empty=True)``), re-import with the
matching ``pymaf_blender.blender.export.import_*`` and compare world joint positions on every
frame of the scene range, the keyed frame range and the frame rate. FBX and glTF files are
also read byte-level (axes, units, takes, key times) so the presets' contents are pinned.
"""
import json
import os
import struct
import zlib

import bpy
import numpy as np
import pytest
from bpy_extras.io_utils import axis_conversion

from pymaf_blender.blender import compat, export, rig, scene
from pymaf_blender.common.result_schema import read_result

# Blender 5.2's own FBX exporter sets ndarray.shape, deprecated in numpy 2.5 (not our code).
pytestmark = pytest.mark.filterwarnings("ignore:Setting the shape on a NumPy array:DeprecationWarning")

NAMES = rig.BONE_NAMES
JOINT_TOL = 1e-4   # m, FBX and glTF
BVH_TOL = 1e-4     # m (6 decimals in the file)
FBX_KTIME = 46186158000  # FBX time units per second



@pytest.fixture(scope="module")
def source(results):
    """Import once, record joints on every scene frame, and save the scene for each test."""
    bpy.ops.wm.read_homefile(use_empty=True)
    out = scene.import_result(bpy.context, read_result(results / "multi.npz"))
    sc = bpy.context.scene
    frames = list(range(sc.frame_start, sc.frame_end + 1))
    joints = {tid: world_joints(arm, frames) for tid, arm in out["armatures"].items()}
    body = out["meshes"]["0"]
    verts = {}
    for f in (frames[0], frames[30]):
        sc.frame_set(f)
        verts[f] = evaluated_vertices(body)
    blend = results / "export_source.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return {"blend": blend, "frames": frames, "joints": joints, "verts": verts, "fps": out["fps"],
            "names": {tid: a.name for tid, a in out["armatures"].items()}, "body": body.name}


@pytest.fixture
def loaded(source):
    bpy.ops.wm.open_mainfile(filepath=str(source["blend"]))
    return {tid: bpy.data.objects[n] for tid, n in source["names"].items()}


def world_joints(arm, frames):
    sc = bpy.context.scene
    out = np.empty((len(frames), len(NAMES), 3))
    for i, f in enumerate(frames):
        sc.frame_set(int(f))
        out[i] = [arm.matrix_world @ arm.pose.bones[n].head for n in NAMES]
    return out


def evaluated_vertices(obj):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    mw = np.array(ev.matrix_world)
    ev.to_mesh_clear()
    return co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]


def fresh_scene():
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


def armature_named(objs, name):
    found = [o for o in objs if o.type == "ARMATURE" and (o.name == name or o.name.startswith(name))]
    assert found, (name, [o.name for o in objs])
    return found[0]


def check_motion(source, new, tids, tol, fps_rel=1e-6):
    sc = bpy.context.scene
    assert sc.render.fps / sc.render.fps_base == pytest.approx(source["fps"], rel=fps_rel)
    for tid in tids:
        arm = armature_named(new, source["names"][tid])
        rng = tuple(arm.animation_data.action.frame_range)
        assert rng == pytest.approx((source["frames"][0], source["frames"][-1])), (tid, rng)
        J = world_joints(arm, source["frames"])
        err = np.abs(J - source["joints"][tid]).max()
        assert err < tol, (tid, err)


# --------------------------------------------------------------------------- FBX reader

_SCALAR = {"Y": "<h", "C": "<?", "I": "<i", "F": "<f", "D": "<d", "L": "<q"}
_ARRAY = {"f": "<f4", "d": "<f8", "l": "<i8", "i": "<i4", "b": "?"}


def _fbx_props(data, p, n):
    out = []
    for _ in range(n):
        t = chr(data[p])
        p += 1
        if t in _SCALAR:
            out.append(struct.unpack_from(_SCALAR[t], data, p)[0])
            p += struct.calcsize(_SCALAR[t])
        elif t in _ARRAY:
            _, enc, clen = struct.unpack_from("<III", data, p)
            raw = data[p + 12:p + 12 + clen]
            p += 12 + clen
            out.append(np.frombuffer(zlib.decompress(raw) if enc else raw, _ARRAY[t]))
        else:  # 'S' string, 'R' raw
            ln = struct.unpack_from("<I", data, p)[0]
            raw = data[p + 4:p + 4 + ln]
            p += 4 + ln
            out.append(raw.decode("utf-8", "replace") if t == "S" else raw)
    return out, p


def _fbx_nodes(data, off, stop, wide):
    out, hdr = [], (25 if wide else 13)
    while off + hdr <= stop:
        end, nprops, _ = struct.unpack_from("<QQQ" if wide else "<III", data, off)
        if end == 0:
            break
        p = off + hdr - 1
        name = data[p + 1:p + 1 + data[p]].decode()
        props, p = _fbx_props(data, p + 1 + data[p], nprops)
        out.append((name, props, _fbx_nodes(data, p, end, wide) if p < end else []))
        off = end
    return out


def read_fbx(path):
    """Binary FBX -> (version, [(name, properties, children), ...]) (enough for the checks)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:20] == b"Kaydara FBX Binary  "
    version = struct.unpack_from("<I", data, 23)[0]
    return version, _fbx_nodes(data, 27, len(data), version >= 7500)


def children(nodes, name):
    return [n for n in nodes if n[0] == name]


def props70(node):
    return {p[1][0]: p[1][4:] for c in node[2] if c[0] == "Properties70" for p in c[2] if p[0] == "P"}


# --------------------------------------------------------------------------- FBX

# preset -> (UpAxis, FrontAxisSign, UnitScaleFactor, scale of the armature's root node)
FBX_FILE = {"BLENDER": (1, 1, 1.0, 100.0), "UNITY": (1, 1, 100.0, 1.0), "UNREAL": (2, -1, 1.0, 100.0)}


@pytest.mark.parametrize("preset", ["BLENDER", "UNITY", "UNREAL"])
def test_fbx_round_trip(loaded, source, preset, tmp_path):
    path = export.export_fbx(bpy.context, tmp_path / f"people_{preset}", list(loaded.values()), preset)
    assert path.endswith(".fbx") and os.path.getsize(path) > 0

    # The file: axes/units of the preset, one "Scene" take whose times are Blender frame / fps,
    # the 29.97 rate, 3 x (armature node + 24 bones + body), no leaf bones.
    version, top = read_fbx(path)
    gs = props70(children(top, "GlobalSettings")[0])
    up, front_sign, unit, root_scale = FBX_FILE[preset]
    assert (gs["UpAxis"][0], gs["FrontAxisSign"][0], gs["UnitScaleFactor"][0]) == (up, front_sign, unit)
    assert gs["CustomFrameRate"][0] == pytest.approx(source["fps"], rel=1e-6)
    objects = children(top, "Objects")[0][2]
    models = children(objects, "Model")
    assert len(models) == 3 * 26 and not [m for m in models if "_end" in m[1][1]]
    root = [m for m in models if m[1][1].split("\x00")[0] == source["names"]["0"]][0]
    assert props70(root)["Lcl Scaling"] == pytest.approx([root_scale] * 3)
    stacks = children(objects, "AnimationStack")
    assert len(stacks) == 1 and stacks[0][1][1].startswith("Scene")
    start, stop = props70(stacks[0])["LocalStart"][0], props70(stacks[0])["LocalStop"][0]
    assert abs(start - source["frames"][0] / source["fps"] * FBX_KTIME) < 1e3
    assert abs(stop - source["frames"][-1] / source["fps"] * FBX_KTIME) < 1e3

    fresh_scene()
    new = export.import_fbx(bpy.context, path, preset)
    assert sorted(o.name for o in new if o.type == "MESH") == sorted(f"{n}_body" for n in source["names"].values())
    check_motion(source, new, ["0", "3", "7"], JOINT_TOL)
    if preset == "BLENDER":  # the skinned body comes back too
        body = [o for o in new if o.name == source["body"]][0]
        for f, want in source["verts"].items():
            bpy.context.scene.frame_set(f)
            assert np.abs(evaluated_vertices(body) - want).max() < JOINT_TOL


def test_fbx_unreal_axes_after_the_known_transform(loaded, source, tmp_path):
    """Read the Unreal file as if it were Y up (Blender's preset): the motion comes back
    rotated by exactly that axis change, i.e. the file really is Z up."""
    path = export.export_fbx(bpy.context, tmp_path / "ue.fbx", [loaded["0"]], "UNREAL")
    fresh_scene()
    new = export.import_fbx(bpy.context, path, "UNREAL", use_manual_orientation=True,
                            axis_forward="-Z", axis_up="Y")
    arm = armature_named(new, source["names"]["0"])
    G = np.array(axis_conversion(from_forward="-Z", from_up="Y"))
    assert not np.allclose(G, np.eye(3))
    J = world_joints(arm, source["frames"])
    assert np.abs(J - source["joints"]["0"] @ G.T).max() < JOINT_TOL


def test_fbx_timing_needs_the_rate_fix(loaded, source, tmp_path):
    """Blender's FBX importer converts times with the integer fps (30, not 29.97): without
    ``import_fbx``'s correction the keys land 0.1 % late; with it they are exact."""
    path = export.export_fbx(bpy.context, tmp_path / "t.fbx", [loaded["0"]], "BLENDER")
    fresh_scene()
    before = set(bpy.data.objects.keys())
    bpy.ops.import_scene.fbx(filepath=path, anim_offset=0.0)
    arm = armature_named([o for o in bpy.data.objects if o.name not in before], source["names"]["0"])
    lo, hi = arm.animation_data.action.frame_range
    assert hi == pytest.approx(source["frames"][-1] * 1.001, abs=1e-3)
    fresh_scene()
    arm = armature_named(export.import_fbx(bpy.context, path), source["names"]["0"])
    assert tuple(arm.animation_data.action.frame_range) == pytest.approx((source["frames"][0], source["frames"][-1]))


# --------------------------------------------------------------------------- glTF

def read_glb_json(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"glTF"
    n = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20:20 + n])


def test_gltf_round_trip(loaded, source, tmp_path):
    path = export.export_gltf(bpy.context, tmp_path / "people", list(loaded.values()))
    assert path.endswith(".glb")
    assert bpy.context.scene.render.fps_base == pytest.approx(1.001)  # restored after the export
    # One animation per person, keyed on every frame at the true time (frame / 29.97 s).
    gl = read_glb_json(path)
    anims = {a["name"]: a for a in gl["animations"]}
    assert set(anims) == set(source["names"].values())
    for a in anims.values():
        times = gl["accessors"][a["samplers"][0]["input"]]
        assert times["count"] == len(source["frames"])
        assert times["min"][0] == pytest.approx(source["frames"][0] / source["fps"], abs=1e-6)
        assert times["max"][0] == pytest.approx(source["frames"][-1] / source["fps"], abs=1e-6)
    assert len(gl["skins"]) == 3
    fresh_scene()
    new = export.import_gltf(bpy.context, path, fps=source["fps"])
    check_motion(source, new, ["0", "3", "7"], JOINT_TOL)


# --------------------------------------------------------------------------- BVH

def test_bvh_round_trip(loaded, source, tmp_path):
    path = export.export_bvh(bpy.context, tmp_path / "person3", loaded["3"])
    with open(path) as f:
        text = f.read()
    assert f"Frames: {len(source['frames'])}" in text and "ROOT pelvis" in text
    assert "Frame Time: 0.033367" in text
    fresh_scene()
    new = export.import_bvh(bpy.context, path, frame_start=source["frames"][0])
    arm = [o for o in new if o.type == "ARMATURE"][0]
    J = world_joints(arm, source["frames"])
    assert np.abs(J - source["joints"]["3"]).max() < BVH_TOL
    assert tuple(arm.animation_data.action.frame_range) == pytest.approx((source["frames"][0], source["frames"][-1]))
    sc = bpy.context.scene
    assert sc.render.fps / sc.render.fps_base == pytest.approx(source["fps"], rel=2e-5)  # 6-decimal frame time


# --------------------------------------------------------------------------- behaviour

def test_export_leaves_the_scene_as_it_was(loaded, source, tmp_path):
    sc = bpy.context.scene
    sc.frame_set(source["frames"][0])  # person "7" is absent: its body is keyed hidden
    body7 = bpy.data.objects[f"{source['names']['7']}_body"]
    assert body7.hide_viewport
    cam = [o for o in bpy.data.objects if o.type == "CAMERA"][0]
    for o in bpy.context.selected_objects:
        o.select_set(False)
    cam.select_set(True)
    bpy.context.view_layer.objects.active = cam
    export.export_fbx(bpy.context, tmp_path / "a.fbx", [loaded["7"]])
    export.export_gltf(bpy.context, tmp_path / "a.glb", [loaded["7"]])
    export.export_bvh(bpy.context, tmp_path / "a.bvh", loaded["7"])
    assert [o.name for o in bpy.context.selected_objects] == [cam.name]
    assert bpy.context.view_layer.objects.active == cam
    assert body7.hide_viewport and body7.hide_render
    fcs = compat.action_fcurves(body7.animation_data.action, body7)
    assert fcs and not any(fc.mute for fc in fcs)
    sc.frame_set(source["frames"][-1])
    assert not body7.hide_viewport


def test_export_refuses_bad_input(loaded, tmp_path):
    with pytest.raises(ValueError, match="preset"):
        export.export_fbx(bpy.context, tmp_path / "x.fbx", [loaded["0"]], preset="MAYA")
    with pytest.raises(ValueError, match="nothing to export"):
        export.export_gltf(bpy.context, tmp_path / "x.glb", [])
    with pytest.raises(ValueError, match="armature"):
        export.export_bvh(bpy.context, tmp_path / "x.bvh", bpy.data.objects[f"{loaded['0'].name}_body"])
    with pytest.raises(ValueError, match="folder"):
        export.export_fbx(bpy.context, tmp_path / "missing" / "x.fbx", [loaded["0"]])
