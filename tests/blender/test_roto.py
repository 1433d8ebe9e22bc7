"""Blender-native roto (pymaf_blender/blender/roto.py, roto_ops.py; docs/roto.md).

Real bpy (4.2 / 5.0 / 5.2). The shot is the fixture result (tests/blender/make_results.py: three
people, video frames carry their index as stripes). Until the engine's ``mattes`` command is
there the mattes are written here in its file format: per person and frame an ellipse that
moves, as an 8-bit PNG (filled analytically at pixel centres, not with our rasteriser) and as a
48-point contour in ``<stem>_contours.npz``; person "0" is tracked but hidden on frames 30-31.

Stated tolerances: a mask's points rasterised by ``silhouette.rasterize_polygon`` vs the matte
PNG: IoU >= 0.97 with 32 points, >= 0.93 with 12; Blender's own rendering of the mask
(compositor Mask node) vs the PNG: IoU >= 0.95; track markers vs the rigs' joints projected by
Blender (``world_to_camera_view``): 0.01 px; vs the engine's own 2D keypoints: mean < 1 px,
max < 2 px (as the scene tests).
"""
import contextlib
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view

from conftest import REPO, engine_python, no_chosen_engine
from layout_recorder import Recorder
from pymaf_blender.blender import roto, scene
from pymaf_blender.common import silhouette as sil
from pymaf_blender.common.result_schema import read_result

W, H = 1280, 720
STEM = "multi"
OCCLUDED = {"0": (30, 31)}          # tracked, but no matte / contour on these Blender frames


# --------------------------------------------------------------------------- fixture mattes

def _png_gray(path, a):
    """Write an (H, W) uint8 array as an 8-bit greyscale PNG (no library needed)."""
    import struct
    import zlib

    import numpy as np

    a = np.ascontiguousarray(a, np.uint8)
    h, w = a.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a], axis=1).tobytes()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def fixture_ellipse(k, f):
    """Person ``k``'s silhouette on Blender frame ``f``: (cx, cy, a, b) in pixels."""
    import math
    return 180.0 + 380.0 * k + 4.0 * (f - 11), 380.0 + 40.0 * math.sin(f / 6.0), 55.0 + 12.0 * k, 175.0 - 15.0 * k


def write_fixture_mattes(folder, stem, people, width, height, occluded, points=48):
    """The engine's mattes files for ``people`` {id: Blender frames}: ``<stem>_person<id>.####.png``
    (empty on ``occluded`` frames), ``<stem>_contours.npz`` (topmost first, clockwise on
    screen), ``<stem>_mattes.json``."""
    import json
    import os

    import numpy as np

    os.makedirs(folder, exist_ok=True)
    xc, yc = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    arrays, ids = {}, []
    for k, (tid, frames) in enumerate(people.items()):
        ids.append(tid)
        kept, pts = [], []
        for f in frames:
            f = int(f)
            cx, cy, a, b = fixture_ellipse(k, f)
            inside = ((xc - cx) / a) ** 2 + ((yc - cy) / b) ** 2 <= 1.0
            if f in occluded.get(tid, ()):
                inside[:] = False
            else:
                t = -np.pi / 2 + np.arange(points) * 2 * np.pi / points
                kept.append(f)
                pts.append(np.stack([cx + a * np.cos(t), cy + b * np.sin(t)], 1))
            _png_gray(os.path.join(folder, f"{stem}_person{tid}.{f:04d}.png"), inside * np.uint8(255))
        arrays[f"{tid}/frames"] = np.asarray(kept, np.int64)
        arrays[f"{tid}/points"] = np.asarray(pts, np.float32).reshape(len(kept), points, 2)
    np.savez(os.path.join(folder, f"{stem}_contours.npz"), width=np.int64(width), height=np.int64(height),
             ids=np.array(ids), **arrays)
    with open(os.path.join(folder, f"{stem}_mattes.json"), "w", encoding="utf-8") as fh:
        json.dump({"format": "pymaf-mattes", "width": width, "height": height,
                   "people": [{"track_id": t} for t in ids]}, fh)


@pytest.fixture(scope="session")
def result(results):
    return read_result(results / "multi.npz")


@pytest.fixture(scope="session")
def mattes(results, result):
    folder = results / "fixture_mattes"
    if not (folder / f"{STEM}_contours.npz").exists():
        off = result.meta["frame_start"] + 1
        people = {tid: (tr.frames + off).tolist() for tid, tr in sorted(result.tracks.items())}
        write_fixture_mattes(str(folder), STEM, people, W, H, OCCLUDED)
    return folder


@pytest.fixture
def shot(empty_scene, result, results):
    """The shot imported with the engine's feet (so the rigs reproject onto its keypoints)."""
    out = scene.import_result(bpy.context, result, plant_feet=False)
    for arm in out["armatures"].values():
        arm["pymaf_result_file"] = str(results / "multi.npz")
    return out


def matte(path):
    """A PNG matte as (H, W) bool, row 0 at the top."""
    img = bpy.data.images.load(str(path))
    try:
        w, h = img.size
        px = np.empty(w * h * img.channels, np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(h, w, img.channels)[::-1, :, 0] > 0.5
    finally:
        bpy.data.images.remove(img)


def index_of(tid):
    return sorted(["0", "3", "7"]).index(tid)


# --------------------------------------------------------------------------- compositor renders

def _output_socket(sc):
    return roto.compositor_tree(sc)[1]


def render_socket(sc, socket, frame, tmp):
    """Render the compositor with ``socket`` on its output at ``frame`` -> (H, W, 4), row 0 at
    the top. The bodies are hidden and the render is Workbench (only the compositor matters)."""
    nt = socket.node.id_data
    out = _output_socket(sc)
    saved = [l.from_socket for l in out.links]
    for l in list(out.links):
        nt.links.remove(l)
    nt.links.new(socket, out)
    sc.render.engine = "BLENDER_WORKBENCH"
    sc.render.image_settings.file_format = "OPEN_EXR"
    sc.render.filepath = str(tmp / f"render_{frame}.exr")
    hidden = [o for o in sc.objects if o.type == "MESH" and not o.hide_render]
    for o in hidden:
        o.hide_render = True
    try:
        sc.frame_set(frame)
        bpy.ops.render.render(write_still=True)
    finally:
        for o in hidden:
            o.hide_render = False
        for l in list(out.links):
            nt.links.remove(l)
        for s in saved:
            nt.links.new(s, out)
    img = bpy.data.images.load(sc.render.filepath)
    try:
        w, h = img.size
        px = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(h, w, 4)[::-1]
    finally:
        bpy.data.images.remove(img)


def stripes(rgb_row):
    """The video frame index the fixture's 8 stripes say (most significant bit on the left)."""
    edges = np.linspace(0, len(rgb_row), 9).astype(int)
    bits = [int(rgb_row[(edges[b] + edges[b + 1]) // 2] > 0.5) for b in range(8)]
    return int("".join(map(str, bits)), 2)


# --------------------------------------------------------------------------- plate

def test_plate_is_a_movie_clip_mapped_like_the_plate(shot, results, tmp_path):
    """Clip frame mapping = the import's movie image (start 1, offset 0): scene frame F shows
    video frame F - 1 (a render of the compositor's plate node reads the stripes); the camera
    background now shows the clip; the compositor holds plate, render and the alpha-over."""
    cam = shot["camera"]
    iu = cam.data.background_images[0].image_user
    info = roto.setup_roto(bpy.context, tracks=False)
    sc = bpy.context.scene
    clip = info["clip"]
    assert os.path.samefile(bpy.path.abspath(clip.filepath), results / "video.mp4")
    assert (clip.frame_start, clip.frame_offset) == (iu.frame_start, iu.frame_offset) == (1, 0)
    assert clip.frame_duration == 72 and tuple(clip.size) == (W, H) and sc.active_clip == clip
    bgs = cam.data.background_images
    assert len(bgs) == 1 and bgs[0].source == "MOVIE_CLIP" and bgs[0].clip == clip and cam.data.show_background_images
    nodes = info["nodes"]
    assert nodes["plate"].name == "PyMAF video Plate" and nodes["plate"].clip == clip
    over = nodes["cg over plate"]
    bg, fg = roto._alpha_over_inputs(over)
    assert bg.links[0].from_node == nodes["plate"] and fg.links[0].from_node == nodes["render"]
    assert _output_socket(sc).links[0].from_node == over
    assert sc.render.film_transparent and sc.render.use_compositing
    assert info["warnings"] == ["no mattes chosen: no masks (run Mattes, or choose the mattes folder)"]
    for F in (sc.frame_start, sc.frame_start + 1, 40, 72):
        px = render_socket(sc, nodes["plate"].outputs["Image"], F, tmp_path)
        assert px.shape == (H, W, 4)
        assert stripes(px[H // 2, :, :3].mean(-1)) == F - 1, F


# --------------------------------------------------------------------------- masks

def evaluated_polygon(mask, frame):
    return sil.mask_to_pixels(roto.mask_points_at(mask, bpy.context, frame), W, H)


def layer_hidden(mask, frame):
    bpy.context.scene.frame_set(frame)
    ev = mask.evaluated_get(bpy.context.evaluated_depsgraph_get())
    return ev.layers[0].hide_render, ev.layers[0].hide


@pytest.mark.parametrize("keying", ["SHAPE_KEYS", "FCURVES"])
def test_masks_follow_the_mattes(shot, mattes, result, keying, tmp_path):
    """A Mask per person, keyed on every contour frame, hidden where the person has none: its
    points rasterised by our code match the matte PNG (IoU >= 0.97 at 32 points), and so does
    Blender's own rendering of it (compositor Mask node, IoU >= 0.95), either keying."""
    info = roto.setup_roto(bpy.context, mattes=str(mattes), keying=keying, tracks=False)
    assert info["keying"] == keying and not info["warnings"]
    masks = info["masks"]
    assert sorted(masks) == ["0", "3", "7"]
    off = result.meta["frame_start"] + 1
    for tid, mask in masks.items():
        arm = shot["armatures"][tid]
        assert mask.name == f"{arm.name}_mask" and [l.name for l in mask.layers] == [arm.name]
        spline = mask.layers[0].splines[0]
        assert len(spline.points) == 32 and spline.use_cyclic and spline.use_fill
        fcs = [fc.data_path for fc in roto.compat.action_fcurves(mask.animation_data.action, mask)]
        point_curves = [p for p in fcs if ".points[" in p]
        assert (len(point_curves) == 64) == (keying == "FCURVES")   # shape keys live in the layer
        frames = (result.tracks[tid].frames + off).tolist()
        shown = [f for f in frames if f not in OCCLUDED.get(tid, ())]
        for f in (shown[0], shown[len(shown) // 2], shown[-1], shown[7] if len(shown) > 7 else shown[1]):
            poly = evaluated_polygon(mask, f)
            got = sil.rasterize_polygon(poly, H, W)
            want = matte(mattes / f"{STEM}_person{tid}.{f:04d}.png")
            assert sil.iou(got, want) >= 0.97, (tid, f, sil.iou(got, want))
            assert layer_hidden(mask, f) == (False, False)
        absent = [f for f in range(bpy.context.scene.frame_start, bpy.context.scene.frame_end + 1) if f not in shown]
        assert absent
        for f in absent[:3] + absent[-2:]:
            assert layer_hidden(mask, f) == (True, True), (tid, f)
    # a shape of its own on every frame (the silhouette moves)
    a, b = evaluated_polygon(masks["0"], 20), evaluated_polygon(masks["0"], 21)
    assert np.abs(a - b).max() > 1.0
    want = matte(mattes / f"{STEM}_person3.0036.png")
    got = render_socket(bpy.context.scene, info["nodes"]["mask 3"].outputs["Mask"], 36, tmp_path)[..., 0] > 0.5
    assert sil.iou(got, want) >= 0.95, sil.iou(got, want)


def test_fewer_mask_points_and_blenders_own_rendering(shot, mattes, result, tmp_path):
    """The user-set point count (12): the spline is the contour resampled (IoU >= 0.93 by our
    rasteriser); Blender's compositor renders every person's Mask node like the matte (IoU >=
    0.95) and nothing on hidden frames, and the matte Image node shows file F on frame F."""
    info = roto.setup_roto(bpy.context, mattes=str(mattes), mask_points=12, tracks=False)
    sc = bpy.context.scene
    for tid, mask in info["masks"].items():
        assert len(mask.layers[0].splines[0].points) == 12
        f = 40
        want = matte(mattes / f"{STEM}_person{tid}.{f:04d}.png")
        assert sil.iou(sil.rasterize_polygon(evaluated_polygon(mask, f), H, W), want) >= 0.93
    nodes = info["nodes"]
    for tid, f in (("0", 40), ("3", 47), ("7", 62)):
        want = matte(mattes / f"{STEM}_person{tid}.{f:04d}.png")
        got = render_socket(sc, nodes[f"mask {tid}"].outputs["Mask"], f, tmp_path)[..., 0] > 0.5
        assert sil.iou(got, want) >= 0.95, (tid, f, sil.iou(got, want))
        shown = render_socket(sc, nodes[f"matte {tid}"].outputs["Image"], f, tmp_path)[..., 0] > 0.5
        assert sil.iou(shown, want) > 0.999, (tid, f)
        other = matte(mattes / f"{STEM}_person{tid}.{f + 3:04d}.png")
        assert sil.iou(shown, other) < 0.95          # a moving silhouette: the frame is the right one
    assert not (render_socket(sc, nodes["mask 0"].outputs["Mask"], 31, tmp_path)[..., 0] > 0.5).any()
    assert nodes["actor 0"].inputs["Alpha"].links[0].from_node == nodes["matte 0"]


# --------------------------------------------------------------------------- tracks

def test_track_markers_are_the_projected_joints(shot, result, results):
    """Markers at frame f = the rig's joints on frame f projected by Blender (0.01 px) and the
    engine's own keypoints (as the scene tests); disabled on frames without the person."""
    info = roto.setup_roto(bpy.context)
    sc, cam = bpy.context.scene, shot["camera"]
    clip = info["clip"]
    tracks = clip.tracking.tracks
    assert sorted(info["tracks"]) == ["0", "3", "7"]
    assert all(len(v) == len(roto.DEFAULT_JOINTS) for v in info["tracks"].values())
    assert len(tracks) == 3 * len(roto.DEFAULT_JOINTS)
    with np.load(results / "multi_ref.npz") as z:
        ref = {k: z[k] for k in z.files}
    off = result.meta["frame_start"] + 1
    names = roto.JOINT_NAMES
    err_blender, err_engine = [], []
    for tid, arm in shot["armatures"].items():
        frames = (result.tracks[tid].frames + off).tolist()
        rows = sorted({0, 5, len(frames) // 2, len(frames) - 1})
        for row in rows:
            f = frames[row]
            sc.frame_set(f)
            for joint in roto.DEFAULT_JOINTS:
                m = roto.marker_at(tracks[f"{tid}_{joint}"], f)
                assert m.frame == f and not m.mute and m.is_keyed
                p = arm.matrix_world @ arm.pose.bones[joint].head
                v = world_to_camera_view(sc, cam, p)
                err_blender.append(max(abs(m.co[0] - v.x) * W, abs(m.co[1] - v.y) * H))
                j = names.index(joint)
                k = np.flatnonzero(ref[f"{tid}/kp_joint"] == j)
                if len(k):
                    px = sil.normalized_to_pixels(np.array(m.co[:]), W, H)
                    err_engine.append(np.linalg.norm(px - ref[f"{tid}/kp_uv"][row, k[0]]))
        # off where the person is not: before it appears, in the gaps, after it leaves
        have = set(frames)
        pelvis = tracks[f"{tid}_pelvis"]
        for f in range(1, sc.frame_end + 1):
            m = roto.marker_at(pelvis, f)
            assert (m is not None and not m.mute) == (f in have), (tid, f)
    assert max(err_blender) < 0.01, max(err_blender)
    assert np.mean(err_engine) < 1.0 and max(err_engine) < 2.0, (np.mean(err_engine), max(err_engine))
    assert tracks["0_left_wrist"].use_custom_color


def test_tracking_tools_take_the_tracks(shot, tmp_path):
    """2D stabilisation on a person's pelvis track moves the compositor's stabilised plate by
    the track's motion; four torso tracks make a plane track."""
    info = roto.setup_roto(bpy.context, joints=["pelvis", "left_shoulder", "right_shoulder", "left_hip",
                                                 "right_hip"])
    sc, clip = bpy.context.scene, info["clip"]
    tracks = clip.tracking.tracks
    for t in tracks:
        t.select = t.name == "0_pelvis"
    f0, f1 = sc.frame_start, 41
    with roto.mask_editor(bpy.context, clip) as (override, space):
        space.mode = "TRACKING"
        sc.frame_set(f1)
        with bpy.context.temp_override(**override):
            assert bpy.ops.clip.stabilize_2d_add() == {"FINISHED"}
            for t in tracks:
                t.select = t.name.startswith("3_") and t.name != "3_pelvis"
            assert bpy.ops.clip.create_plane_track() == {"FINISHED"}
    stab = clip.tracking.stabilization
    assert [t.name for t in stab.tracks] == ["0_pelvis"]
    assert len(clip.tracking.plane_tracks) == 1
    stab.use_2d_stabilization = True
    stab.anchor_frame = f0
    # the plate and its stabilised version on frame f1: the stripes move by the track's motion
    nt, _ = roto.compositor_tree(sc)
    node = nt.nodes.new("CompositorNodeStabilize")
    node.clip = clip
    nt.links.new(info["nodes"]["plate"].outputs["Image"], node.inputs["Image"])
    pelvis = tracks["0_pelvis"]
    dx = (roto.marker_at(pelvis, f1).co[0] - roto.marker_at(pelvis, f0).co[0]) * W
    assert abs(dx) > 40                            # the walker did move
    row = lambda px: px[H // 3, :, :3].mean(-1)    # noqa: E731 (above the people: only stripes)
    plain = row(render_socket(sc, info["nodes"]["plate"].outputs["Image"], f1, tmp_path))
    steady = row(render_socket(sc, node.outputs["Image"], f1, tmp_path))
    edges = lambda r: np.flatnonzero(np.abs(np.diff(r)) > 0.5)   # noqa: E731
    e0, e1 = edges(plain), edges(steady)
    assert len(e0) >= 2
    shift = [e1[np.argmin(np.abs(e1 - (e - dx)))] - e for e in e0 if 2 < e - dx < W - 2]
    assert shift and np.abs(np.array(shift) + dx).max() < 2.0, (shift, dx)


# --------------------------------------------------------------------------- holdout and re-runs

def test_holdout_bodies_cut_the_render(shot, tmp_path):
    """Holdout on: each body's first slot holds "PyMAF Holdout" on the object (its own material
    stays on the mesh) and a Cycles render has zero alpha on the body in front of a CG wall;
    off: the body renders opaque again."""
    sc = bpy.context.scene
    body = shot["meshes"]["0"]
    own = body.data.materials[0]
    roto.setup_roto(bpy.context, tracks=False, holdout=True)
    assert all(roto.is_holdout(m) for m in shot["meshes"].values())
    assert body.data.materials[0] == own and body.material_slots[0].material.name == roto.HOLDOUT_MATERIAL
    # a CG wall behind the people, across the whole view (15 m in front of the camera)
    M = np.array(shot["camera"].matrix_world)
    corners = [M[:3, :3] @ np.array(c, float) + M[:3, 3] for c in ((-40, -40, -15), (40, -40, -15), (40, 40, -15),
                                                                  (-40, 40, -15))]
    wall = bpy.data.objects.new("wall", bpy.data.meshes.new("wall"))
    wall.data.from_pydata([tuple(c) for c in corners], [], [(0, 1, 2, 3)])
    sc.collection.objects.link(wall)
    sc.render.engine = "CYCLES"
    sc.cycles.samples, sc.cycles.device = 1, "CPU"
    sc.render.resolution_percentage = 10
    sc.render.use_compositing = False
    f = 20
    arm = shot["armatures"]["0"]

    def alpha_at_pelvis():
        sc.frame_set(f)
        v = world_to_camera_view(sc, shot["camera"], arm.matrix_world @ arm.pose.bones["spine1"].head)
        sc.render.filepath = str(tmp_path / "holdout.exr")
        sc.render.image_settings.file_format = "OPEN_EXR"
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(sc.render.filepath)
        w, h = img.size
        px = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(px)
        bpy.data.images.remove(img)
        px = px.reshape(h, w, 4)
        return px[int(v.y * h), int(v.x * w), 3], px[h - 2, w // 2, 3]   # top row: the wall (the floor is a shadow catcher)

    body_alpha, wall_alpha = alpha_at_pelvis()
    assert body_alpha < 0.05 and wall_alpha > 0.95, (body_alpha, wall_alpha)
    roto.set_holdout(shot["meshes"].values(), False)
    assert not any(roto.is_holdout(m) for m in shot["meshes"].values()) and body.material_slots[0].material == own
    body_alpha, _ = alpha_at_pelvis()
    assert body_alpha > 0.95


def test_running_again_makes_no_duplicates(shot, mattes):
    first = roto.setup_roto(bpy.context, mattes=str(mattes))
    sc = bpy.context.scene

    def state():
        nt, _ = roto.compositor_tree(sc)
        clip = first["clip"]
        return (sorted(bpy.data.movieclips.keys()), sorted(bpy.data.masks.keys()), sorted(bpy.data.images.keys()),
                sorted(n.name for n in nt.nodes), sorted(t.name for t in clip.tracking.tracks),
                len(shot["camera"].data.background_images), sorted(bpy.data.materials.keys()),
                sum(len(t.markers) for t in clip.tracking.tracks))

    before = state()
    masks = dict(first["masks"])
    again = roto.setup_roto(bpy.context, mattes=str(mattes), mask_points=20)
    assert state() == before
    assert again["masks"] == masks and all(len(m.layers[0].splines[0].points) == 20 for m in masks.values())
    assert again["nodes"]["mask 0"].mask == masks["0"]


def test_bad_input_changes_nothing(shot, mattes, tmp_path):
    def snap():
        return {k: sorted(getattr(bpy.data, k).keys()) for k in ("movieclips", "masks", "images", "node_groups")}

    before = snap()
    for kwargs, match in (({"video_path": str(tmp_path / "none.mp4")}, "footage was not found"),
                          ({"mattes": str(tmp_path / "nope")}, "mattes folder was not found"),
                          ({"mask_points": 2}, "at least 3 points"),
                          ({"joints": ["pelvis", "tail"]}, "unknown: tail"),
                          ({"import_name": "other"}, "no PyMAF rig of an import named 'other'")):
        with pytest.raises(ValueError, match=match):
            roto.setup_roto(bpy.context, **kwargs)
        assert snap() == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no mattes in"):
        roto.setup_roto(bpy.context, mattes=str(tmp_path / "empty"))


# --------------------------------------------------------------------------- operators and the panel

def panel_texts():
    rec = Recorder()
    bpy.types.PYMAF_PT_roto.draw(SimpleNamespace(layout=rec), bpy.context)
    return rec.texts


FAKE_MATTES = '''
import json, os, sys, time
sys.path.insert(0, {tests!r})
{helpers}

def option(argv, name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default

def main(argv):
    with open(os.environ["ROTO_FAKE_ARGV"], "a") as fh:
        fh.write(json.dumps(argv) + "\\n")
    args = [a for a in argv if a not in ("-u",)]
    if args[:3] != ["-m", "engine", "mattes"]:
        print("error: unknown command", file=sys.stderr)
        return 2
    if os.environ.get("ROTO_FAKE_MODE") == "old":
        print("error: unknown command 'mattes'", file=sys.stderr)
        return 2
    import numpy as np
    result = np.load(args[3])
    meta = json.loads(bytes(result["meta/json"]).decode())
    out, stem = option(args, "--out"), option(args, "--name")
    people = option(args, "--people").split(",")
    off = int(meta.get("frame_start") or 0) + 1
    frames = {{t: (result[f"tracks/{{t}}/frames"] + off).tolist() for t in people}}
    n = 3
    for i in range(n):
        print(json.dumps({{"event": "progress", "stage": "mattes", "done": i + 1, "total": n}}), flush=True)
        time.sleep(0.01)
    write_fixture_mattes(out, stem, frames, {W}, {H}, {{}})
    print(json.dumps({{"event": "done", "result": out}}), flush=True)
    return 0

sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture
def fake_mattes_engine(tmp_path, monkeypatch, results):
    """An engine Python that answers ``-m engine mattes`` with the fixture's files."""
    script = tmp_path / "fake_mattes.py"
    helpers = "\n\n".join(inspect.getsource(f) for f in (_png_gray, fixture_ellipse, write_fixture_mattes))
    script.write_text(FAKE_MATTES.format(tests=str(Path(__file__).parent), helpers=helpers, W=W, H=H))
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(0o755)
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("PYMAF_ENGINE_PYTHON", str(wrapper))
    monkeypatch.setenv("ROTO_FAKE_ARGV", str(argv_log))
    with no_chosen_engine():
        yield argv_log


def test_mattes_button_then_set_up_roto(shot, addon, fake_mattes_engine, results, monkeypatch):
    """Mattes runs ``engine mattes`` on the last result (progress, the scene's people, the
    plate, a folder next to the result) and offers its folder to Set Up Roto, which builds masks
    and tracks from it; an engine without the command is explained; panel draws."""
    sc = bpy.context.scene
    result_path = results / "multi.npz"
    sc.pymaf.last_result = str(result_path)
    assert "Import a video first" not in panel_texts()
    out_dir = results / "multi_mattes"
    assert bpy.ops.pymaf.roto_mattes() == {"FINISHED"}
    argv = [json.loads(l) for l in fake_mattes_engine.read_text().splitlines()][-1]
    assert argv[:5] == ["-u", "-m", "engine", "mattes", str(result_path)]
    opt = lambda k: argv[argv.index(k) + 1]   # noqa: E731
    assert opt("--out") == str(out_dir) and opt("--progress") == "jsonl" and opt("--name") == "multi"
    assert opt("--people") == "0,3,7" and os.path.samefile(opt("--video"), results / "video.mp4")
    assert opt("--format") == "png" and int(opt("--contour-points")) >= 32 and opt("--alpha") == "body"
    assert sc.pymaf_roto.mattes_path == str(out_dir) and (out_dir / "multi_contours.npz").is_file()
    assert "press Set Up Roto" in sc.pymaf.last_summary
    sc.pymaf_roto.mask_points = 24
    sc.pymaf_roto.joints = {"pelvis", "head"}
    assert bpy.ops.pymaf.roto_setup() == {"FINISHED"}
    assert sorted(bpy.data.masks.keys()) == [f"video_PyMAF_{t}_mask" for t in ("0", "3", "7")]
    assert all(len(m.layers[0].splines[0].points) == 24 for m in bpy.data.masks)
    assert sorted(t.name for t in sc.active_clip.tracking.tracks) == sorted(
        f"{t}_{j}" for t in ("0", "3", "7") for j in ("head", "pelvis"))
    assert bpy.ops.pymaf.roto_holdout(enable=True) == {"FINISHED"}
    assert all(roto.is_holdout(m) for m in bpy.data.objects if m.type == "MESH" and m.name.endswith("_body"))
    assert "1. Mattes from the last result" in panel_texts()
    joints = sc.pymaf_roto.bl_rna.properties["joints"]
    assert joints.default_flag == set(roto.DEFAULT_JOINTS)
    assert [i.identifier for i in joints.enum_items] == list(roto.JOINT_NAMES)
    sc.pymaf_roto.matte_alpha = "SEGMENTATION"
    assert bpy.ops.pymaf.roto_mattes() == {"FINISHED"}
    argv = [json.loads(l) for l in fake_mattes_engine.read_text().splitlines()][-1]
    assert argv[argv.index("--alpha") + 1] == "segmentation" and "--video" in argv
    elsewhere = results / "not_in_scene.npz"            # a result no rig of the scene shows: no plate
    shutil.copyfile(result_path, elsewhere)
    with pytest.raises(RuntimeError, match="Segmentation mattes are read off the plate"):
        bpy.ops.pymaf.roto_mattes(result=str(elsewhere), out_dir=str(results / "x"))
    sc.pymaf_roto.matte_alpha = "BODY"
    monkeypatch.setenv("ROTO_FAKE_MODE", "old")
    with pytest.raises(RuntimeError, match="this engine has no 'mattes' command"):
        bpy.ops.pymaf.roto_mattes()
    sc.pymaf.last_result = ""
    with pytest.raises(RuntimeError, match="import a video first"):
        bpy.ops.pymaf.roto_mattes()
    assert "Import a video first" in panel_texts()


def test_set_up_roto_operator_errors(empty_scene, addon):
    with pytest.raises(RuntimeError, match="no PyMAF rig in the scene"):
        bpy.ops.pymaf.roto_setup()


def test_real_engine_mattes(shot, addon, results, monkeypatch):
    """The real engine's ``mattes`` command through the button. Its contours outline the
    largest visible region of a person (a person split by another in front has more than one),
    so the masks are compared with the contour polygon rasterised at full detail: the mask at
    the contour's own point count (64) is it (IoU >= 0.99) and matches the PNG wherever the
    contour does (>= 0.9); 32 points keep IoU >= 0.83 with it (the measured minimum on this
    shot is 0.85, the mean 0.91)."""
    py = engine_python()
    has = subprocess.run([str(py), "-m", "engine", "mattes", "--help"], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    if has.returncode != 0:
        pytest.skip("the engine has no 'mattes' command yet (engine/mattes.py): "
                    + (has.stderr.strip().splitlines() or ["?"])[-1])
    monkeypatch.setenv("PYMAF_ENGINE_PYTHON", str(py))
    sc = bpy.context.scene
    sc.pymaf.last_result = str(results / "multi.npz")
    out = results / "real_mattes"
    with no_chosen_engine():
        assert bpy.ops.pymaf.roto_mattes(out_dir=str(out)) == {"FINISHED"}
    found = roto.find_mattes(str(out), "multi")
    assert found["contours"] and sorted(found["people"]) == ["0", "3", "7"], found
    contours = sil.load_contours(found["contours"])
    assert (contours["width"], contours["height"]) == (W, H)
    n = next(iter(contours["people"].values()))[1].shape[1]
    assert n >= 64                                    # the button asks for at least 64 points
    checked = 0
    for points, least in ((n, 0.99), (32, 0.83)):
        info = roto.setup_roto(bpy.context, mattes=str(out), tracks=False, mask_points=points)
        for tid, mask in info["masks"].items():
            frames, outline = contours["people"][tid]
            for i in range(0, len(frames), 11):
                f = int(frames[i])
                full = sil.rasterize_polygon(outline[i], H, W)
                got = sil.rasterize_polygon(evaluated_polygon(mask, f), H, W)
                assert sil.iou(got, full) >= least, (points, tid, f, sil.iou(got, full))
                if points == n:
                    png = matte(found["people"][tid][f])
                    if sil.iou(full, png) >= 0.9:
                        assert sil.iou(got, png) >= 0.9, (tid, f)
                        checked += 1
    assert checked >= 5
