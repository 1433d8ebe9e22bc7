"""Exports (FBX presets, binary glTF, BVH) read back by Blender's own importers with DEFAULT
options: ``bpy.ops.import_scene.fbx(filepath=...)``, ``import_scene.gltf(filepath=...)``,
``import_anim.bvh(filepath=...)``, nothing else passed.

The fixture result (three people: "0" on frames 11-70, "3" with two gaps, "7" from frame 19;
29.97 fps; scene frames 11-70) is imported once, the camera is given some animation (location,
rotation, focal length), world joints are recorded on every scene frame and the scene is saved;
each test reopens it. A file's frame k is the character's k-th frame from its first present one:
Blender's FBX and BVH importers put file time 0 on frame 1, its glTF importer on frame 0. The
FBX importer converts seconds with the integer rate (30) and the glTF importer with fps x
fps_base (30.03 in a 29.97 scene), so at 29.97 the keys land at 1 + 1.001 k and 1.002 k: poses
are compared at those times, and an integer-rate export is checked on whole frames. FBX and glTF
files are also read byte-level (axes, units, root scale, takes, key times)."""
import json
import os
import re
import struct
import zlib

import sys
from pathlib import Path

import bpy
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_export as bench  # noqa: E402

from pymaf_blender.blender import compat, export, rig, scene, timing  # noqa: E402
from pymaf_blender.common.result_schema import read_result  # noqa: E402

# Blender 5.2's own FBX exporter sets ndarray.shape, deprecated in numpy 2.5 (not our code).
pytestmark = pytest.mark.filterwarnings("ignore:Setting the shape on a NumPy array:DeprecationWarning")

NAMES = rig.BONE_NAMES
TOL = 1e-3               # m: the round-trip bound (measured: FBX/glTF <= 2e-5, BVH <= 2e-4)
FBX_KTIME = 46186158000  # FBX time units per second
IDS = ["0", "3", "7"]


@pytest.fixture(scope="module")
def source(results):
    """Import once, animate the camera, record joints, vertices and camera on every scene frame,
    save the scene for each test."""
    bpy.ops.wm.read_homefile(use_empty=True)
    out = scene.import_result(bpy.context, read_result(results / "multi.npz"))
    sc = bpy.context.scene
    cam = out["camera"]
    bench.animate_camera(cam)
    frames = list(range(sc.frame_start, sc.frame_end + 1))
    joints = {tid: {} for tid in out["armatures"]}
    cams, verts = {}, {}
    for f in frames:
        sc.frame_set(f)
        for tid, arm in out["armatures"].items():
            joints[tid][f] = np.array([arm.matrix_world @ arm.pose.bones[n].head for n in NAMES])
        # (the vertical field of view: the sensor is fitted to the image width)
        vfov = 2 * np.arctan(cam.data.sensor_width / 2 * sc.render.resolution_y / sc.render.resolution_x
                             / cam.data.lens)
        cams[f] = (np.array(cam.matrix_world), cam.data.lens, vfov)
        if f in (11, 40):
            verts[f] = evaluated_vertices(out["meshes"]["0"])
    present = {tid: [int(f) for f in export.present_frames(arm)] for tid, arm in out["armatures"].items()}
    blend = results / "export_source.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return {"blend": blend, "frames": frames, "joints": joints, "verts": verts, "fps": out["fps"], "cams": cams,
            "present": present, "names": {tid: a.name for tid, a in out["armatures"].items()},
            "camera": cam.name, "shift": (cam.data.shift_x, cam.data.shift_y),
            "shin": {tid: (a.data.bones["left_ankle"].head_local - a.data.bones["left_knee"].head_local).length
                     for tid, a in out["armatures"].items()}}


@pytest.fixture
def loaded(source):
    bpy.ops.wm.open_mainfile(filepath=str(source["blend"]))
    return {tid: bpy.data.objects[n] for tid, n in source["names"].items()}


def evaluated_vertices(obj):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    mw = np.array(ev.matrix_world)
    ev.to_mesh_clear()
    return co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]


def at(frame):
    """Evaluate the scene at a (fractional) frame."""
    f = float(frame)
    bpy.context.scene.frame_set(int(np.floor(f)), subframe=f - np.floor(f))


def default_import(path, fps=None):
    """An empty scene and Blender's importer with its defaults (glTF: the scene at ``fps``
    first, since the file has no rate). -> the new objects."""
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    if path.endswith(".fbx"):
        bpy.ops.import_scene.fbx(filepath=path)
    elif path.endswith(".glb"):
        sc.render.fps, sc.render.fps_base = timing.blender_fps(fps)
        bpy.ops.import_scene.gltf(filepath=path)
    else:
        bpy.ops.import_anim.bvh(filepath=path)
    return list(bpy.data.objects)


def landing(kind, k, rate):
    """The frame on which a reader puts the file's frame k: Blender's default importers by the
    file's extension ('.fbx', '.glb', '.bvh'), or 'exact' (``export.import_fbx``: 1 + k)."""
    sc = bpy.context.scene
    if kind.endswith(".fbx"):
        return 1.0 + k * sc.render.fps / rate
    if kind.endswith(".glb"):
        return k * sc.render.fps * sc.render.fps_base / rate
    return 1.0 + k


def check_character(source, kind, arm, tid, lo=None, hi=None, prefix="", rate=None, whole=False):
    """The re-imported ``arm`` against person ``tid`` over scene frames lo..hi (default: the
    person's first to last): joints on present frames, scale 0 on absent ones, key range."""
    present = set(source["present"][tid])
    lo = source["present"][tid][0] if lo is None else lo
    hi = source["present"][tid][-1] if hi is None else hi
    rate = rate or source["fps"]
    first, last = landing(kind, 0, rate), landing(kind, hi - lo, rate)
    assert tuple(arm.animation_data.action.frame_range) == pytest.approx((first, last), abs=2e-3), kind
    if whole:
        assert (first, last) == pytest.approx((round(first), round(last)), abs=1e-6)
    bones = [arm.pose.bones[prefix + n] for n in NAMES]
    absent = 0
    for f in range(lo, hi + 1):
        at(landing(kind, f - lo, rate))
        if f in present:
            J = np.array([arm.matrix_world @ b.head for b in bones])
            err = np.abs(J - source["joints"][tid][f]).max()
            assert err < TOL, (kind, tid, f, err)
        else:
            absent += 1
            assert max(arm.matrix_world.to_scale()) < 1e-6, (kind, tid, f, "absent but not hidden")
    return absent


def armature(objs, name):
    found = [o for o in objs if o.type == "ARMATURE" and o.name == name]
    assert found, (name, [o.name for o in objs])
    return found[0]


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


def fbx_summary(path):
    """-> (GlobalSettings props, {model name: (type, props)}, [(stack name, start s, stop s)])."""
    _, top = read_fbx(path)
    gs = props70(children(top, "GlobalSettings")[0])
    objects = children(top, "Objects")[0][2]
    models = {}
    for m in children(objects, "Model"):
        name = m[1][1].split("\x00")[0]
        assert name not in models, f"model name {name!r} repeats in {path}"
        models[name] = (m[1][2], props70(m))
    # (a property equal to the template's default, LocalStart 0, is left out of the file)
    stacks = [(s[1][1].split("\x00")[0], props70(s).get("LocalStart", [0])[0] / FBX_KTIME,
               props70(s)["LocalStop"][0] / FBX_KTIME) for s in children(objects, "AnimationStack")]
    return gs, models, stacks


# --------------------------------------------------------------------------- FBX

# preset -> (UpAxis, FrontAxisSign, UnitScaleFactor, root node scale, numbers per metre)
FBX_FILE = {"BLENDER": (1, 1, 1.0, 100.0, 1.0), "UNITY": (1, 1, 100.0, 1.0, 1.0), "UNREAL": (2, -1, 1.0, 1.0, 100.0)}


@pytest.mark.parametrize("preset", ["BLENDER", "UNITY", "UNREAL"])
def test_fbx_one_file_per_character_through_the_default_importer(loaded, source, preset, tmp_path):
    paths = export.export_fbx(bpy.context, tmp_path / "take.fbx", list(loaded.values()), preset)
    assert paths == [str(tmp_path / f"take_{tid}.fbx") for tid in IDS]
    up, front_sign, unit, root_scale, per_metre = FBX_FILE[preset]
    for tid, path in zip(IDS, paths):
        first, last = source["present"][tid][0], source["present"][tid][-1]
        gs, models, stacks = fbx_summary(path)
        assert (gs["UpAxis"][0], gs["FrontAxisSign"][0], gs["UnitScaleFactor"][0]) == (up, front_sign, unit)
        assert gs["CustomFrameRate"][0] == pytest.approx(source["fps"], rel=1e-6)
        # one armature (+ 24 bones) and its body, nothing of the other people, no leaf bones
        assert sorted(models) == sorted([source["names"][tid], f"{source['names'][tid]}_body", *NAMES])
        assert models[source["names"][tid]][1]["Lcl Scaling"] == pytest.approx([root_scale] * 3)
        shin = np.linalg.norm(models["left_ankle"][1]["Lcl Translation"])   # knee -> ankle, in file units
        assert shin == pytest.approx(per_metre * source["shin"][tid], rel=1e-4)
        # one take from 0 s over the person's own frames
        assert len(stacks) == 1 and stacks[0][0] == "Scene"
        assert stacks[0][1] == pytest.approx(0.0, abs=1e-9)
        assert stacks[0][2] == pytest.approx((last - first) / source["fps"], abs=1e-6)

        new = default_import(path)
        assert (bpy.context.scene.render.fps, round(bpy.context.scene.render.fps_base, 6)) == (30, 1.001)
        assert f"{source['names'][tid]}_body" in [o.name for o in new if o.type == "MESH"]
        absent = check_character(source, path, armature(new, source["names"][tid]), tid)
        assert absent == (12 if tid == "3" else 0)
        if preset == "BLENDER" and tid == "0":   # the skinned body comes back too
            body = bpy.data.objects[f"{source['names'][tid]}_body"]
            for f, want in source["verts"].items():
                at(landing(path, f - first, source["fps"]))
                assert np.abs(evaluated_vertices(body) - want).max() < TOL


def test_fbx_at_an_integer_rate_lands_on_whole_frames(loaded, source, tmp_path):
    """At 30 fps the default importer puts every key on a whole frame (1 .. N); at 29.97 it is
    1.001 k (its integer rate), which ``export.import_fbx`` corrects to whole frames."""
    path, = export.export_fbx(bpy.context, tmp_path / "ntsc", [loaded["3"]])
    bpy.ops.wm.read_homefile(use_empty=True)
    new = export.import_fbx(bpy.context, path)
    assert check_character(source, "exact", armature(new, source["names"]["3"]), "3", whole=True) == 12
    bpy.ops.wm.open_mainfile(filepath=str(source["blend"]))
    sc = bpy.context.scene
    sc.render.fps, sc.render.fps_base = 30, 1.0
    path, = export.export_fbx(bpy.context, tmp_path / "thirty", [bpy.data.objects[source["names"]["3"]]])
    new = default_import(path)
    assert check_character(source, path, armature(new, source["names"]["3"]), "3", rate=30.0, whole=True) == 12


def test_fbx_one_file_with_unique_skeletons(loaded, source, tmp_path):
    """``per_character=False``: one file, one take from the first frame anyone is present,
    every bone prefixed with its person's id; a person is hidden outside their own frames. The
    scene's rigs keep their bone names, vertex groups and F-Curve paths."""
    paths = export.export_fbx(bpy.context, tmp_path / "all", list(loaded.values()), "UNITY",
                              per_character=False, camera=True)
    assert paths == [str(tmp_path / "all.fbx")]
    gs, models, stacks = fbx_summary(paths[0])        # (fbx_summary asserts no name repeats)
    assert {f"{tid}_{n}" for tid in IDS for n in NAMES} <= set(models) and "pelvis" not in models
    assert source["camera"] in models and len(models) == 3 * 26 + 1
    assert stacks[0][1] == pytest.approx(0.0, abs=1e-9)
    assert stacks[0][2] == pytest.approx((70 - 11) / source["fps"], abs=1e-6)
    for tid, arm in loaded.items():
        assert sorted(b.name for b in arm.data.bones) == sorted(NAMES)
        body = bpy.data.objects[f"{arm.name}_body"]
        assert set(NAMES) <= {vg.name for vg in body.vertex_groups}
        bones = {fc.data_path.split('"')[1] for fc in compat.action_fcurves(arm.animation_data.action, arm)
                 if fc.data_path.startswith("pose.bones")}
        assert bones == set(NAMES)
    new = default_import(paths[0])
    for tid in IDS:
        absent = check_character(source, paths[0], armature(new, source["names"][tid]), tid, lo=11, hi=70,
                                 prefix=f"{tid}_")
        assert absent == {"0": 0, "3": 12, "7": 8}[tid]


def test_a_single_character_keeps_the_given_name_and_its_bone_names(loaded, source, tmp_path):
    """One armature: the file is the path given (no id suffix) and its bones keep their names,
    per character or not (nothing can collide)."""
    arm = loaded["3"]
    for per_character in (True, False):
        paths = export.export_fbx(bpy.context, tmp_path / "one.fbx", [arm], "BLENDER", per_character=per_character)
        assert paths == [str(tmp_path / "one.fbx")]
        assert export.file_paths(tmp_path / "one.fbx", ".fbx", [arm], per_character) == paths
        _, models, _ = fbx_summary(paths[0])
        assert set(NAMES) <= set(models) and "3_pelvis" not in models
    assert export.export_bvh(bpy.context, tmp_path / "one.bvh", [loaded["0"]]) == [str(tmp_path / "one.bvh")]
    assert export.file_paths(tmp_path / "x", ".fbx", list(loaded.values()), True) == \
        [str(tmp_path / f"x_{tid}.fbx") for tid in loaded]


def test_takes_on_the_nla_are_exported_as_the_scene_shows_them(loaded, source, tmp_path):
    """A rig whose motion was pushed to an NLA track (no active action): the copies' strips move
    with the clip; centimetres (Unreal) and prefixed bones edit copies of the strips' actions,
    never the scene's."""
    from pymaf_blender.blender import takes
    arm = loaded["3"]
    takes.push_takes(arm, [arm], gather=False)
    ad = arm.animation_data
    assert ad.action is None and len(ad.nla_tracks) == 1
    strip = ad.nla_tracks[0].strips[0]
    act = strip.action
    before = [(fc.data_path, fc.array_index, compat.get_keys(fc)[1].tobytes()) for fc in export._all_fcurves(act)]
    span = (strip.frame_start, strip.frame_end)
    fbx, = export.export_fbx(bpy.context, tmp_path / "nla", [arm], "UNREAL")
    glb, = export.export_gltf(bpy.context, tmp_path / "nla", list(loaded.values()), per_character=False)
    assert [(fc.data_path, fc.array_index, compat.get_keys(fc)[1].tobytes()) for fc in export._all_fcurves(act)] == before
    assert (strip.frame_start, strip.frame_end) == span and strip.action == act and ad.action is None
    assert check_character(source, fbx, armature(default_import(fbx), source["names"]["3"]), "3") == 12
    assert check_character(source, glb, armature(default_import(glb, fps=source["fps"]), source["names"]["3"]), "3",
                           lo=11, hi=70, prefix="3_") == 12


# --------------------------------------------------------------------------- glTF

def read_glb_json(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"glTF"
    n = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20:20 + n])


def test_gltf_one_file_per_character_through_the_default_importer(loaded, source, tmp_path):
    paths = export.export_gltf(bpy.context, tmp_path / "take", list(loaded.values()))
    assert paths == [str(tmp_path / f"take_{tid}.glb") for tid in IDS]
    assert bpy.context.scene.render.fps_base == pytest.approx(1.001)  # restored after the export
    for tid, path in zip(IDS, paths):
        first, last = source["present"][tid][0], source["present"][tid][-1]
        gl = read_glb_json(path)
        assert len(gl["skins"]) == 1 and len(gl["animations"]) == 1
        for ch in gl["animations"][0]["channels"]:     # every frame, true seconds from 0
            times = gl["accessors"][gl["animations"][0]["samplers"][ch["sampler"]]["input"]]
            assert times["count"] == last - first + 1
            assert times["min"][0] == pytest.approx(0.0, abs=1e-7)
            assert times["max"][0] == pytest.approx((last - first) / source["fps"], abs=1e-6)
        new = default_import(path, fps=source["fps"])
        check_character(source, path, armature(new, source["names"][tid]), tid)
    # the exact reader puts frame k on frame k
    bpy.ops.wm.read_homefile(use_empty=True)
    new = export.import_gltf(bpy.context, paths[1], fps=source["fps"])
    arm = armature(new, source["names"]["3"])
    assert tuple(arm.animation_data.action.frame_range) == pytest.approx((0, 59), abs=1e-3)


# --------------------------------------------------------------------------- camera

@pytest.mark.parametrize("fmt", ["BLENDER", "UNREAL", "GLTF"])
def test_camera_goes_into_fbx_and_gltf(loaded, source, fmt, tmp_path):
    """The scene camera, with its motion (and focal length: animated in FBX, the clip's first
    frame's field of view in glTF), shifted to the file's timeline like the rig."""
    if fmt == "GLTF":
        path, = export.export_gltf(bpy.context, tmp_path / "cam", [loaded["7"]], camera=True)
    else:
        path, = export.export_fbx(bpy.context, tmp_path / "cam", [loaded["7"]], fmt, camera=True)
    new = default_import(path, fps=source["fps"])
    cam = [o for o in new if o.type == "CAMERA"]
    assert [c.name for c in cam] == [source["camera"]]
    cam = cam[0]
    first, last = source["present"]["7"][0], source["present"]["7"][-1]
    for f in range(first, last + 1):
        at(landing(path, f - first, source["fps"]))
        M, lens, _ = source["cams"][f]
        got = np.array(cam.matrix_world)
        R = got[:3, :3] / np.linalg.norm(got[:3, :3], axis=0)    # the FBX importer scales cm files 0.01
        assert np.abs(got[:3, 3] - M[:3, 3]).max() < TOL and np.abs(R - M[:3, :3]).max() < 1e-5, f
        if fmt == "GLTF":
            assert cam.data.sensor_fit == "VERTICAL"       # glTF's yfov: the clip's first frame's
            assert cam.data.angle_y == pytest.approx(source["cams"][first][2], rel=1e-5)
        else:
            assert cam.data.lens == pytest.approx(lens, rel=1e-5), f
    if fmt != "GLTF":
        assert (cam.data.shift_x, cam.data.shift_y) == pytest.approx(source["shift"], abs=1e-6)


# --------------------------------------------------------------------------- BVH

def test_bvh_y_up_world_root_through_the_default_importer(loaded, source, tmp_path):
    paths = export.export_bvh(bpy.context, tmp_path / "motion.bvh", [loaded["0"], loaded["3"]])
    assert [os.path.basename(p) for p in paths] == ["motion_0.bvh", "motion_3_11-25.bvh", "motion_3_33-50.bvh",
                                                    "motion_3_56-70.bvh"]
    with open(paths[0]) as f:
        text = f.read()
    assert text.startswith("HIERARCHY\nROOT pelvis\n{\n\tOFFSET 0.000000 0.000000 0.000000\n"
                           "\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n")
    assert "Frames: 60\nFrame Time: 0.03336666667\n" in text
    # Y up, world space: frame 0's root position is the pelvis at (x, z, -y) of Blender's world
    root = np.array([float(v) for v in text.split("Frame Time: 0.03336666667\n")[1].split()[:3]])
    assert root == pytest.approx(export.Y_UP @ source["joints"]["0"][11][0], abs=1e-6)
    takes = [(11, 70), (11, 25), (33, 50), (56, 70)]
    for path, tid, (lo, hi) in zip(paths, ["0", "3", "3", "3"], takes):
        new = default_import(path)
        arm = [o for o in new if o.type == "ARMATURE"][0]
        assert check_character(source, path, arm, tid, lo=lo, hi=hi, whole=True) == 0


# --------------------------------------------------------------------------- behaviour

def _scene_state(loaded):
    sc = bpy.context.scene
    keys = {}
    for arm in loaded.values():
        for fc in compat.action_fcurves(arm.animation_data.action, arm):
            keys[(arm.name, fc.data_path, fc.array_index)] = compat.get_keys(fc)
    return {
        "ids": {c: sorted(getattr(bpy.data, c).keys()) for c in
                ("objects", "meshes", "armatures", "actions", "cameras", "collections", "materials")},
        "bones": {a.name: [b.name for b in a.data.bones] for a in loaded.values()},
        "groups": {o.name: [g.name for g in o.vertex_groups] for o in bpy.data.objects if o.type == "MESH"},
        "scene": (sc.frame_start, sc.frame_end, sc.frame_current, sc.render.fps, sc.render.fps_base,
                  sc.use_preview_range, sc.camera.name, sc.unit_settings.scale_length),
        "transforms": {o.name: tuple(np.array(o.matrix_world).ravel().round(7)) for o in bpy.data.objects},
        "keys": keys,
    }


def test_export_leaves_the_scene_as_it_was(loaded, source, tmp_path):
    sc = bpy.context.scene
    sc.frame_set(15)  # person "7" is absent: its body is keyed hidden
    body7 = bpy.data.objects[f"{source['names']['7']}_body"]
    assert body7.hide_viewport
    cam = bpy.data.objects[source["camera"]]
    for o in bpy.context.selected_objects:
        o.select_set(False)
    cam.select_set(True)
    bpy.context.view_layer.objects.active = cam
    before = _scene_state(loaded)
    arms = list(loaded.values())
    for preset in export.FBX_PRESETS:
        export.export_fbx(bpy.context, tmp_path / f"a_{preset}", arms, preset, camera=True)
    export.export_fbx(bpy.context, tmp_path / "b", arms, "UNREAL", per_character=False)
    export.export_gltf(bpy.context, tmp_path / "a", arms, camera=True)
    export.export_gltf(bpy.context, tmp_path / "b", arms, per_character=False)
    export.export_bvh(bpy.context, tmp_path / "a", arms)
    after = _scene_state(loaded)
    for key in before:
        assert after[key] == before[key] if key != "keys" else all(
            np.array_equal(after[key][k][0], v[0]) and np.array_equal(after[key][k][1], v[1])
            for k, v in before[key].items()), key
    assert [o.name for o in bpy.context.selected_objects] == [cam.name]
    assert bpy.context.view_layer.objects.active == cam
    assert body7.hide_viewport and body7.hide_render
    fcs = compat.action_fcurves(body7.animation_data.action, body7)
    assert fcs and not any(fc.mute for fc in fcs)
    sc.frame_set(70)
    assert not body7.hide_viewport
    assert not [p for p in os.listdir(tmp_path) if ".partial" in p]
    assert not [n for n in bpy.data.objects.keys() if re.match("~pymaf", n)]


def test_export_refuses_bad_input(loaded, tmp_path):
    with pytest.raises(ValueError, match="preset"):
        export.export_fbx(bpy.context, tmp_path / "x.fbx", [loaded["0"]], preset="MAYA")
    with pytest.raises(ValueError, match="nothing to export"):
        export.export_gltf(bpy.context, tmp_path / "x.glb", [])
    body = bpy.data.objects[f"{loaded['0'].name}_body"]
    with pytest.raises(ValueError, match="armature"):
        export.export_bvh(bpy.context, tmp_path / "x.bvh", [body])
    with pytest.raises(ValueError, match="folder"):
        export.export_fbx(bpy.context, tmp_path / "missing" / "x.fbx", [loaded["0"]])
    bpy.context.scene.camera = None
    with pytest.raises(ValueError, match="no camera"):
        export.export_gltf(bpy.context, tmp_path / "x.glb", [loaded["0"]], camera=True)
    assert not os.listdir(tmp_path)
