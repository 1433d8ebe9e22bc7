"""Importing a result into Blender: rig, keys, gaps, body mesh, camera, video, smoothing, errors.

Real bpy (4.2 / 5.0 / 5.2 venvs). The result files and the reference arrays come from the
engine environment (tests/blender/make_results.py, run through subprocess): joints and vertices
from the engine's own SMPL layer (smplx ``lbs`` on the mannequin), keypoints projected with the
result's camera. Nothing here imports torch.
"""
import os
import sys

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from pymaf_blender.blender import animation, camera, compat, rig, scene, timing
from pymaf_blender.common import blender_space, gaps, kinematics, smoothing
from pymaf_blender.common.result_schema import read_result

NAMES = rig.BONE_NAMES
JOINT_TOL = 1e-4   # m
MESH_TOL = 1e-4    # m



@pytest.fixture
def result(results):
    return read_result(results / "multi.npz")


@pytest.fixture
def ref(results):
    with np.load(results / "multi_ref.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture
def imported(empty_scene, result):
    """Feet as the engine estimated them (not planted), so joints compare with the engine's FK."""
    return scene.import_result(bpy.context, result, plant_feet=False)


def rig_joints(arm, frames):
    """World positions of the 24 bone heads on each Blender frame: (n, 24, 3)."""
    sc = bpy.context.scene
    out = np.empty((len(frames), len(NAMES), 3))
    for i, f in enumerate(frames):
        sc.frame_set(int(f))
        mw = arm.matrix_world
        out[i] = [mw @ arm.pose.bones[n].head for n in NAMES]
    return out


def camera_space(points, arm):
    """Scene world points (..., 3) -> the references' frame: Blender axes with the engine
    camera at the origin (``blender_space.CAMERA_WORLD``), through the rig's stored world."""
    world = animation.raw_world(animation.load_raw(arm))
    return blender_space.camera_points_to_world(blender_space.world_points_to_camera(points, world))


def ref_joints(arm, frames):
    """``rig_joints`` in the references' frame."""
    return camera_space(rig_joints(arm, frames), arm)


def evaluated_vertices(obj):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    try:
        co = np.empty(len(me.vertices) * 3, np.float32)
        me.vertices.foreach_get("co", co)
        mw = np.array(ev.matrix_world)
    finally:
        ev.to_mesh_clear()
    co = co.reshape(-1, 3).astype(np.float64)
    return co @ mw[:3, :3].T + mw[:3, 3]


def scene_snapshot():
    sc = bpy.context.scene
    return ({k: sorted(getattr(bpy.data, k).keys()) for k in
             ("objects", "collections", "actions", "meshes", "armatures", "cameras", "images")},
            sc.render.fps, sc.render.fps_base, sc.frame_start, sc.frame_end, sc.camera,
            sc.render.resolution_x, sc.render.resolution_y)


# --------------------------------------------------------------------------- pure helpers

def test_blender_fps_and_frame_mapping():
    assert timing.blender_fps(30) == (30, 1.0)
    assert timing.blender_fps(25.0) == (25, 1.0)
    for rate, n in ((30000 / 1001, 30), (29.97, 30), (24000 / 1001, 24), (60000 / 1001, 60)):
        fps, base = timing.blender_fps(rate)
        assert (fps, base) == (n, 1.001)
    fps, base = timing.blender_fps(12.5)
    assert fps / base == pytest.approx(12.5)
    with pytest.raises(ValueError):
        timing.blender_fps(0)
    assert timing.frame_offset({"frame_start": 10}) == 11 and timing.frame_offset({}) == 1
    kf, hidden = timing.visibility_keys([13, 14, 15, 20, 21], 11, 30)
    assert kf.tolist() == [11, 13, 16, 20, 22] and hidden.tolist() == [1, 0, 1, 0, 1]
    kf, hidden = timing.visibility_keys(np.arange(11, 31), 11, 30)
    assert kf.tolist() == [11] and hidden.tolist() == [0]
    # a frame or two the estimator missed (up to 0.1 s) is bridged; longer gaps are absences
    assert gaps.shown_frames([1, 2, 4, 5, 9, 14], 30.0).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 14]
    assert gaps.shown_frames([1, 2, 4, 5, 9, 14], 10.0).tolist() == [1, 2, 3, 4, 5, 9, 14]
    assert gaps.shown_frames([7], 30.0).tolist() == [7]


def test_bone_tails_point_at_a_child_and_leaves_continue():
    rng = np.random.default_rng(0)
    heads = rng.normal(size=(24, 3))
    parents = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
    tails = rig.bone_tails(heads, parents)
    assert np.allclose(tails[0], heads[3]) and np.allclose(tails[9], heads[12])  # spine, neck
    assert np.allclose(tails[1], heads[4]) and np.allclose(tails[18], heads[20])
    for leaf in (10, 11, 15, 22, 23):
        d = tails[leaf] - heads[leaf]
        p = heads[leaf] - heads[parents[leaf]]
        assert np.dot(d, p) / np.linalg.norm(d) / np.linalg.norm(p) == pytest.approx(1.0)
        assert 0.04 - 1e-9 <= np.linalg.norm(d) <= 0.15 + 1e-9


# --------------------------------------------------------------------------- rig and keys

def test_rig_structure(imported, result):
    assert set(imported["armatures"]) == set(result.tracks) == {"0", "3", "7"}
    coll = imported["collection"]
    assert coll.name == "video" and coll.name in bpy.context.scene.collection.children
    actions = set()
    for tid, arm in imported["armatures"].items():
        assert arm.name == f"video_PyMAF_{tid}" and arm.users_collection[0] == coll
        assert np.allclose(np.array(arm.matrix_world), np.eye(4))       # armature space = world
        bones = arm.data.bones
        assert sorted(b.name for b in bones) == sorted(NAMES)
        for j, name in enumerate(NAMES):
            b, p = bones[name], int(result.body.parents[j])
            assert (b.parent.name if b.parent else None) == (NAMES[p] if p >= 0 else None)
            assert b.length > 1e-3
        assert all(pb.rotation_mode == "QUATERNION" for pb in arm.pose.bones)
        action = arm.animation_data.action
        assert action.name == f"video_PyMAF_{tid}_motion"
        actions.add(action.name)
        body = imported["meshes"][tid]
        assert body.name == f"video_PyMAF_{tid}_body" and body.parent == arm
        assert len(body.data.vertices) == result.body.weights.shape[0]
        co = np.empty(3 * len(body.data.vertices), np.float32)
        body.data.vertices.foreach_get("co", co)
        assert abs(co.reshape(-1, 3)[:, 2].min()) < 1e-5       # the rest (bind) pose stands on Z = 0
        assert len(body.data.polygons) == result.body.faces.shape[0]
        assert [g.name for g in body.vertex_groups] == list(NAMES)
        mods = [m for m in body.modifiers if m.type == "ARMATURE"]
        assert len(mods) == 1 and mods[0].object == arm and not mods[0].use_deform_preserve_volume
    assert len(actions) == 3  # one action per person


def test_rig_joints_match_engine_fk_every_frame(imported, ref):
    off = imported["frame_start"]
    assert off == 11  # meta.frame_start = 10 -> video frame 10 is Blender frame 11
    for tid, arm in imported["armatures"].items():
        frames = ref[f"{tid}/frames"] + off
        J = ref_joints(arm, frames)
        err = np.abs(J - ref[f"{tid}/joints_world"]).max()
        assert err < JOINT_TOL, (tid, err)


def test_keys_only_on_track_frames_and_continuous(imported, result):
    for tid, arm in imported["armatures"].items():
        want = result.tracks[tid].frames + imported["frame_start"]
        fcs = compat.action_fcurves(arm.animation_data.action, arm)
        assert len(fcs) == 24 * 4 + 3
        q = {}
        for fc in fcs:
            frames, values = compat.get_keys(fc)
            assert np.array_equal(frames, want.astype(np.float32)), (tid, fc.data_path)
            assert all(k.interpolation == "LINEAR" for k in fc.keyframe_points[:3])
            if fc.data_path.endswith("rotation_quaternion"):
                q.setdefault(fc.data_path, [None] * 4)[fc.array_index] = values
        assert len(q) == 24
        for path, comps in q.items():
            qq = np.stack(comps, -1)
            assert np.all(np.sum(qq[1:] * qq[:-1], -1) > 0), path  # hemisphere-continuous


def test_gaps_hide_the_body_and_keys_around_them_are_exact(imported, result, ref):
    """Track "3" has gaps (result frames 15-21 and 40-44), track "7" starts at result frame 8."""
    sc = bpy.context.scene
    off = imported["frame_start"]
    for tid in ("3", "7"):
        body, arm = imported["meshes"][tid], imported["armatures"][tid]
        present = set((result.tracks[tid].frames + off).tolist())
        for f in range(sc.frame_start, sc.frame_end + 1):
            sc.frame_set(f)
            assert body.hide_viewport == body.hide_render == (f not in present), (tid, f)
            assert not arm.hide_viewport  # the skeleton stays visible
        # The frames on both sides of every gap carry the engine's pose.
        frames = result.tracks[tid].frames
        edge = np.flatnonzero(np.diff(frames) > 1)
        rows = np.unique(np.r_[edge, edge + 1, 0, len(frames) - 1])
        J = ref_joints(arm, frames[rows] + off)
        assert np.abs(J - ref[f"{tid}/joints_world"][rows]).max() < JOINT_TOL
    # No keys inside the gaps: the F-Curves jump straight from one side to the other.
    fc = compat.action_fcurves(imported["armatures"]["3"].animation_data.action, imported["armatures"]["3"])[0]
    keyed = set(compat.get_keys(fc)[0].astype(int).tolist())
    assert not keyed & {off + f for f in range(15, 22)} and not keyed & {off + f for f in range(40, 45)}
    # Shown again when the person comes back; the evaluated mesh is there and posed.
    sc.frame_set(off + 22)
    body = imported["meshes"]["3"]
    assert not body.hide_viewport and len(evaluated_vertices(body)) == len(body.data.vertices)


def test_skinned_mesh_matches_engine_vertices(imported, ref):
    sc = bpy.context.scene
    for tid, body in imported["meshes"].items():
        frames = ref[f"{tid}/frames"] + imported["frame_start"]
        for row, want in zip(ref[f"{tid}/vert_rows"], ref[f"{tid}/verts_world"]):
            sc.frame_set(int(frames[row]))
            err = np.abs(camera_space(evaluated_vertices(body), body.parent) - want).max()
            assert err < MESH_TOL, (tid, row, err)


def test_scene_timing_follows_the_video(imported, result):
    sc = bpy.context.scene
    meta = result.meta
    assert sc.render.fps == 30 and sc.render.fps_base == pytest.approx(1.001)
    assert imported["fps"] == pytest.approx(meta["video"]["fps"], rel=1e-6)
    start = meta["frame_start"]
    assert (sc.frame_start, sc.frame_end) == (start + 1, start + meta["video"]["frame_count"])
    assert (imported["frame_start"], imported["frame_end"]) == (sc.frame_start, sc.frame_end)


# --------------------------------------------------------------------------- world

def sole_heights(arm, frames, result, tid):
    """Per frame, the lowest sole's height above the world floor (Z = 0): foot joints lowered
    by their rest heights above the sole."""
    from pymaf_blender.common import floor
    tr = result.tracks[tid]
    off = floor.sole_offsets(tr.rest_joints, tr.rest_vertices)
    J = rig_joints(arm, frames)[:, list(floor.FOOT_JOINTS)]
    return (J[..., 2] - off).min(axis=1)


def test_floor_world_stands_people_on_the_floor_and_places_the_camera(imported, result, ref):
    """The fixture's camera is level, 0.45-0.6 m above the pelvises: the floor world puts the
    camera 1.5-2.2 m up, nearly level, and every person's lowest sole near Z = 0."""
    assert imported["space"] == "FLOOR" and not imported["warnings"]
    assert 1.5 < imported["camera_height"] < 2.2 and abs(imported["camera_pitch_deg"]) < 6
    cam = imported["camera"]
    raw = animation.load_raw(imported["armatures"]["0"])
    R, t = animation.raw_world(raw)
    assert raw["space"] == "FLOOR" and np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) > 0
    fl = imported["floor"]
    assert fl.name == "video_floor" and fl.is_shadow_catcher and fl.display_type == "WIRE"
    co = np.empty(3 * len(fl.data.vertices))
    fl.data.vertices.foreach_get("co", co)
    assert np.allclose(co.reshape(-1, 3)[:, 2], 0.0) and np.allclose(np.array(fl.matrix_world), np.eye(4))
    assert np.allclose(t, [0, 0, imported["camera_height"]])
    assert np.allclose(np.array(cam.matrix_world), blender_space.camera_object_matrix((R, t)), atol=1e-6)
    for tid, arm in imported["armatures"].items():
        h = sole_heights(arm, ref[f"{tid}/frames"] + imported["frame_start"], result, tid)
        assert abs(np.median(h)) < 0.06 and h.min() > -0.12, (tid, np.median(h), h.min())
    # All rigs share one world (one floor for the shot).
    for arm in imported["armatures"].values():
        assert np.allclose(animation.raw_world(animation.load_raw(arm))[0], R)


def test_camera_space_and_in_place(empty_scene, result, ref):
    cam_out = scene.import_result(bpy.context, result, space="CAMERA", track_ids=["0"])
    floor_out = scene.import_result(bpy.context, result, space="FLOOR", track_ids=["0"])
    still = scene.import_result(bpy.context, result, space="IN_PLACE", track_ids=["0"])
    assert (cam_out["space"], cam_out["camera_height"], cam_out["floor"]) == ("CAMERA", None, None)
    cam = cam_out["camera"]
    assert np.allclose(np.array(cam.matrix_world.to_translation()), 0)
    assert np.allclose(np.array(cam.rotation_euler), blender_space.CAMERA_EULER_XYZ, atol=1e-6)
    frames = ref["0/frames"] + cam_out["frame_start"]
    # Camera space: the rig is where the engine put it, without any conversion.
    assert np.abs(rig_joints(cam_out["armatures"]["0"], frames) - ref["0/joints_world"]).max() < JOINT_TOL
    # In place: the pelvis stays above the world origin at the floor world's height; the
    # pose relative to the pelvis is the floor world's.
    J_floor = rig_joints(floor_out["armatures"]["0"], frames)
    J_still = rig_joints(still["armatures"]["0"], frames)
    assert still["space"] == "IN_PLACE" and np.abs(J_still[:, 0, :2]).max() < 1e-5
    assert np.abs(J_still[:, 0, 2] - J_floor[:, 0, 2]).max() < 1e-5
    rel = lambda J: J - J[:, :1]  # noqa: E731
    assert np.abs(rel(J_still) - rel(J_floor)).max() < 1e-5
    assert np.ptp(J_floor[:, 0, :2], axis=0).max() > 0.5   # the walker did move


def test_no_floor_falls_back_to_camera_space_with_a_warning(empty_scene, result):
    """Everyone's feet level with the camera: a floor through the camera is a failed estimate;
    the import goes on in camera space (no floor plane, no planting) and says why."""
    for tr in result.tracks.values():
        tr.transl[:, 1] -= 1.77          # the fixture's floor is 1.77 m below the camera
    out = scene.import_result(bpy.context, result, track_ids=["0"])
    assert out["space"] == "CAMERA" and out["floor"] is None and out["camera_height"] is None
    assert any("no floor found" in w and "camera would stand" in w for w in out["warnings"]), out["warnings"]
    raw = animation.load_raw(out["armatures"]["0"])
    assert raw["space"] == "CAMERA" and not raw["plant_feet"]
    assert np.allclose(np.array(out["camera"].matrix_world.to_translation()), 0)


def keyed_contacts(arm):
    fcs = {fc.data_path: fc for fc in compat.action_fcurves(arm.animation_data.action, arm)}
    return np.stack([compat.get_keys(fcs[f'["{p}"]'])[1] for p in animation.CONTACT_PROPS], 1) > 0.5


def test_planted_feet_by_default(empty_scene, result):
    """The default import stands each person on the floor and pins planted feet: the keys are
    the numpy clean-up's pose (contacts.clean_track), contacts are keyed as custom properties,
    planted feet do not slide, no sole is below the floor; the estimate's feet did slide."""
    from pymaf_blender.common import contacts, floor

    out = scene.import_result(bpy.context, result, track_ids=["0", "3"])
    raw_out = scene.import_result(bpy.context, result, track_ids=["0", "3"], plant_feet=False)
    for tid in ("0", "3"):
        arm = out["armatures"][tid]
        raw = animation.load_raw(arm)
        assert raw["plant_feet"] and not animation.load_raw(raw_out["armatures"][tid])["plant_feet"]
        tr = result.tracks[tid]
        frames = tr.frames + out["frame_start"]
        J, J0 = rig_joints(arm, frames), rig_joints(raw_out["armatures"][tid], frames)
        R, t, found = animation.world_motion(raw, None)
        want = kinematics.posed_joints(R, tr.rest_joints, result.body.parents, t)
        assert np.abs(J - want).max() < JOINT_TOL
        c = keyed_contacts(arm)
        assert np.array_equal(c, found) and 0.1 < c.mean() < 1.0, c.mean()
        sole = floor.sole_offsets(tr.rest_joints, tr.rest_vertices)
        for run in floor.consecutive_runs(tr.frames):
            before, after = contacts.foot_skate(J0[run], c[run]), contacts.foot_skate(J[run], c[run])
            assert after < 0.5 and before > 2.0, (tid, before, after)
        assert contacts.penetration(J, sole)[1] < 0.01      # mm
        assert np.abs(J - J0).max() < 0.25                   # cleaned, not a different motion
    # Re-smoothing keeps the feet planted (the clean-up runs on the smoothed motion).
    arm = out["armatures"]["0"]
    scene.reapply_smoothing(bpy.context, arm, 0.8)
    J = rig_joints(arm, result.tracks["0"].frames + out["frame_start"])
    c = keyed_contacts(arm)
    assert contacts.foot_skate(J, c) < 0.5


# --------------------------------------------------------------------------- camera

@pytest.mark.parametrize("W,H,cx,cy", [(1280, 720, 652.0, 348.0), (720, 1280, 352.5, 651.0),
                                       (1000, 1000, 480.0, 530.0)])
def test_camera_reproduces_the_pinhole(empty_scene, W, H, cx, cy):
    """Blender's shift is in units of the sensor-fit side (the width here), also for portrait."""
    f = 1100.0
    meta = {"video": {"width": W, "height": H}, "camera": {"focal_px": f, "principal_point": [cx, cy]}}
    coll = bpy.data.collections.new("c")
    empty_scene.collection.children.link(coll)
    cam = camera.build_camera(bpy.context, coll, "cam", meta)
    bpy.context.view_layer.update()
    rng = np.random.default_rng(1)
    P = rng.uniform([-1.5, -1.5, 2.0], [1.5, 1.5, 8.0], size=(50, 3))
    want = f * P[:, :2] / P[:, 2:] + [cx, cy]
    world = blender_space.camera_points_to_world(P)
    got = []
    for p in world:
        v = world_to_camera_view(empty_scene, cam, Vector(p))
        got.append((v.x * W, (1 - v.y) * H))
    assert np.abs(np.array(got) - want).max() < 1e-3


def test_posed_rig_reprojects_onto_engine_keypoints(imported, ref):
    sc = bpy.context.scene
    cam = imported["camera"]
    assert sc.camera == cam and imported["space"] == "FLOOR"
    W, H = sc.render.resolution_x, sc.render.resolution_y
    assert (W, H) == (1280, 720)
    errors = []
    for tid, arm in imported["armatures"].items():
        frames = ref[f"{tid}/frames"] + imported["frame_start"]
        kp, joint = ref[f"{tid}/kp_uv"], ref[f"{tid}/kp_joint"]
        J = rig_joints(arm, frames)
        for i in range(len(frames)):
            uv = []
            for p in J[i, joint]:
                v = world_to_camera_view(sc, cam, Vector(p))
                uv.append((v.x * W, (1 - v.y) * H))
            errors.append(np.linalg.norm(np.array(uv) - kp[i], axis=-1))
    errors = np.concatenate(errors)
    assert errors.size > 3 * 40 * 10
    assert errors.mean() < 1.0 and errors.max() < 2.0, (errors.mean(), errors.max())


def test_video_background_and_frame_mapping(imported, results):
    """The camera shows the video; a render of the same movie set up the same way shows, on
    scene frame F, the video frame F - 1 (the fixture's frames carry their index as stripes)."""
    cam = imported["camera"].data
    assert cam.show_background_images and len(cam.background_images) == 1
    bg = cam.background_images[0]
    img = bg.image
    assert os.path.samefile(bpy.path.abspath(img.filepath), results / "video.mp4")
    assert img.source == "MOVIE" and img.frame_duration == 72
    iu = bg.image_user
    assert (iu.frame_start, iu.frame_offset, iu.frame_duration) == (1, 0, 72) and not iu.use_cyclic

    sc = bpy.context.scene
    mat = bpy.data.materials.new("plate")
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True  # always on (and deprecated) from 5.0
    nt = mat.node_tree
    nt.nodes.clear()
    tex = nt.nodes.new("ShaderNodeTexImage")
    tex.image = img
    tex.interpolation = "Closest"
    camera.configure_image_user(tex.image_user, img, 72)
    em = nt.nodes.new("ShaderNodeEmission")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(tex.outputs["Color"], em.inputs["Color"])
    nt.links.new(em.outputs["Emission"], out.inputs["Surface"])
    me = bpy.data.meshes.new("plate")
    me.from_pydata([(-1, -1, 0), (1, -1, 0), (1, 1, 0), (-1, 1, 0)], [], [(0, 1, 2, 3)])
    uv = me.uv_layers.new()
    uv.data.foreach_set("uv", [0, 0, 1, 0, 1, 1, 0, 1])
    me.materials.append(mat)
    plate = bpy.data.objects.new("plate", me)
    sc.collection.objects.link(plate)
    ortho = bpy.data.cameras.new("ortho")
    ortho.type, ortho.ortho_scale = "ORTHO", 2.0
    oc = bpy.data.objects.new("ortho", ortho)
    oc.location = (0, 0, 3)
    sc.collection.objects.link(oc)
    sc.camera = oc  # looks straight down at the plate; the people stand 4-7 m away along +Y
    sc.render.engine = "CYCLES"
    sc.cycles.samples = 1
    sc.cycles.device = "CPU"
    sc.cycles.filter_width = 0.01  # no blending of neighbouring stripes
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = 64, 8, 100
    sc.render.image_settings.file_format = "OPEN_EXR"
    tmp = results / "render"
    tmp.mkdir(exist_ok=True)
    for F in (sc.frame_start, sc.frame_start + 1, 40, sc.frame_end):
        sc.frame_set(F)
        sc.render.filepath = str(tmp / f"f{F}.exr")
        bpy.ops.render.render(write_still=True)
        shot = bpy.data.images.load(sc.render.filepath)
        rgb = np.array(shot.pixels[:]).reshape(8, 64, 4)[:, :, :3].mean(-1)
        px = rgb[4, 4::8]  # the middle of each of the 8 stripes
        bits = (px > 0.5).astype(int)
        assert int("".join(map(str, bits)), 2) == F - 1, (F, px)
        bpy.data.images.remove(shot)


def test_missing_video_is_skipped_silently(empty_scene, result):
    out = scene.import_result(bpy.context, result, video_path="/nonexistent/clip.mp4", track_ids=["0"])
    assert len(out["camera"].data.background_images) == 0
    assert out["warnings"] and "/nonexistent/clip.mp4" in out["warnings"][0]
    assert out["collection"].name == "clip"  # named after the given video


# --------------------------------------------------------------------------- several imports

def test_several_imports_and_track_selection_coexist(empty_scene, result, ref):
    a = scene.import_result(bpy.context, result, track_ids=["3"], plant_feet=False)
    b = scene.import_result(bpy.context, result, track_ids=[0, "7"], plant_feet=False)
    c = scene.import_result(bpy.context, result, track_ids="0", name="take two", plant_feet=False)
    assert set(a["armatures"]) == {"3"} and set(b["armatures"]) == {"0", "7"}
    assert a["collection"].name == "video" and b["collection"].name == "video_2"
    assert c["armatures"]["0"].name == "take two_PyMAF_0"
    names = [o.name for o in bpy.data.objects]
    assert len(names) == len(set(names)) == 4 + 6 + 4  # camera + floor + rig and body per person
    for out, tid in ((a, "3"), (b, "0"), (c, "0")):
        frames = ref[f"{tid}/frames"][[0, -1]] + out["frame_start"]
        J = ref_joints(out["armatures"][tid], frames)
        assert np.abs(J - ref[f"{tid}/joints_world"][[0, -1]]).max() < JOINT_TOL


# --------------------------------------------------------------------------- smoothing

def _pose_key_values(arm):
    return {(fc.data_path, fc.array_index): compat.get_keys(fc)[1]
            for fc in compat.action_fcurves(arm.animation_data.action, arm)}


def _fk_world(R, transl, parents, rest_joints):
    return blender_space.camera_points_to_world(kinematics.posed_joints(R, rest_joints, parents, transl))


def test_reapply_smoothing_without_the_engine(empty_scene, result, ref, tmp_path):
    assert "torch" not in sys.modules
    out = scene.import_result(bpy.context, result, plant_feet=False)
    arm = out["armatures"]["0"]
    arm_name = arm.name
    raw_keys = _pose_key_values(arm)
    frames = ref["0/frames"] + out["frame_start"]
    J0 = ref_joints(arm, frames)

    # Save and reopen: the raw data lives in the .blend, not in the result file.
    path = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))
    arm = bpy.data.objects[arm_name]

    scene.reapply_smoothing(bpy.context, arm, 0.9)
    assert arm["pymaf"]["strength"] == pytest.approx(0.9)
    J1 = ref_joints(arm, frames)
    # Same as filtering the result's own arrays with smoothing.smooth_track in numpy.
    tr = result.tracks["0"]
    raw = animation.load_raw(arm)
    p = smoothing.params_for_strength(0.9)
    R = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1).astype(np.float64)
    assert np.array_equal(raw["rotmat"], R.astype(np.float32))
    fps = result.meta["video"]["fps"]
    R = smoothing.smooth_track(tr.frames, R, fps, params=p)
    t = smoothing.smooth_track(tr.frames, np.asarray(tr.transl, np.float64), fps, params=p)
    want = _fk_world(R, t, result.body.parents, tr.rest_joints)
    assert np.abs(J1 - want).max() < JOINT_TOL
    # Less jitter: mean joint acceleration drops clearly.
    acc = lambda J: np.linalg.norm(np.diff(J, 2, axis=0), axis=-1).mean()  # noqa: E731
    assert acc(J1) < 0.6 * acc(J0), (acc(J1), acc(J0))
    assert np.abs(J1 - J0).max() < 0.1  # smoothing, not a different motion

    # Strength 0 gives back the raw pose exactly (bit for bit on the keys).
    scene.reapply_smoothing(bpy.context, arm, 0.0)
    back = _pose_key_values(arm)
    assert back.keys() == raw_keys.keys()
    assert all(np.array_equal(back[k], raw_keys[k]) for k in raw_keys)
    assert np.abs(ref_joints(arm, frames) - ref["0/joints_world"]).max() < JOINT_TOL


def test_reapply_respects_gaps_and_import_strength_matches(empty_scene, result):
    a = scene.import_result(bpy.context, result, track_ids=["3"], strength=0.6)
    b = scene.import_result(bpy.context, result, track_ids=["3"])
    scene.reapply_smoothing(bpy.context, b["armatures"]["3"], 0.6)
    ka, kb = _pose_key_values(a["armatures"]["3"]), _pose_key_values(b["armatures"]["3"])
    assert all(np.array_equal(ka[k], kb[k]) for k in ka)
    # Keys stay on the track's frames (the gaps are not filled by re-keying).
    fc = compat.action_fcurves(b["armatures"]["3"].animation_data.action, b["armatures"]["3"])[0]
    assert np.array_equal(compat.get_keys(fc)[0], (result.tracks["3"].frames + b["frame_start"]).astype(np.float32))


def test_reapply_refuses_bad_input(imported):
    arm = imported["armatures"]["0"]
    with pytest.raises(ValueError, match="strength"):
        scene.reapply_smoothing(bpy.context, arm, 1.5)
    with pytest.raises(ValueError, match="not a rig imported by PyMAF"):
        scene.reapply_smoothing(bpy.context, imported["camera"], 0.5)


# --------------------------------------------------------------------------- errors

def test_result_without_rig_data_leaves_the_scene_unchanged(imported, results):
    before = scene_snapshot()
    bare = read_result(results / "norig.npz")
    assert not bare.has_rig
    with pytest.raises(ValueError, match="re-run the engine|Re-run the engine"):
        scene.import_result(bpy.context, bare)
    assert scene_snapshot() == before


@pytest.mark.parametrize("kwargs,match", [
    ({"track_ids": ["42"]}, "not in the result"),
    ({"track_ids": []}, "no track"),
    ({"strength": 2.0}, "strength"),
    ({"strength": "strong"}, "strength"),
    ({"space": "SKY"}, "space must be one of"),
])
def test_bad_arguments_leave_the_scene_unchanged(imported, result, kwargs, match):
    before = scene_snapshot()
    with pytest.raises(ValueError, match=match):
        scene.import_result(bpy.context, result, **kwargs)
    assert scene_snapshot() == before


def test_invalid_result_leaves_the_scene_unchanged(imported, result):
    before = scene_snapshot()
    result.tracks["3"].transl[2, 0] = np.nan
    with pytest.raises(ValueError, match="transl"):
        scene.import_result(bpy.context, result)
    assert scene_snapshot() == before
    with pytest.raises(ValueError, match="MotionResult"):
        scene.import_result(bpy.context, {"meta": {}})
    assert scene_snapshot() == before


def test_failure_while_building_is_rolled_back(imported, result, monkeypatch):
    """Validation passes but Blender fails half-way (second person): nothing is left behind."""
    before = scene_snapshot()
    calls = []
    real = rig.build_body

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(rig, "build_body", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        scene.import_result(bpy.context, result, name="other")
    assert len(calls) == 2
    assert scene_snapshot() == before
