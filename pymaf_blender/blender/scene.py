"""Build a Blender scene from an engine result: camera + video, and per person a rig, a skinned
body and keys. Conventions (axes, frames, names, gaps, stored data): docs/blender-scene.md.

    from pymaf_blender.common.result_schema import read_result
    from pymaf_blender.blender.scene import import_result, reapply_smoothing
    out = import_result(bpy.context, read_result("clip.npz"))
    reapply_smoothing(bpy.context, out["armatures"]["0"], 0.5)
"""
from __future__ import annotations

import math
import os
import re

import bpy
import numpy as np

from ..common import blender_space, floor, gaps
from ..common.result_schema import track_order
from . import animation, camera, datablocks, rig, timing

MAX_NAME_BYTES = 63          # Blender's ID name limit
RIG_TAG = "PyMAF"
FLOOR_SIZE_M = 30.0          # the floor plane's side: larger than most shots' acting area
_NO_RIG = ("the result file has no rig data (body/faces, body/weights, body/parents and "
           "tracks/<id>/rest_vertices, rest_joints): it was written by an engine older than 0.2. "
           "Re-run the engine on the video (python -m engine run VIDEO -o RESULT.npz) to get a "
           "file Blender can build rigs from")


def armature_name(import_name: str, track_id: str) -> str:
    return f"{import_name}_{RIG_TAG}_{track_id}"


def body_name(import_name: str, track_id: str) -> str:
    return f"{armature_name(import_name, track_id)}_body"


def floor_name(import_name: str) -> str:
    return f"{import_name}_floor"


def camera_name(import_name: str) -> str:
    return f"{import_name}_camera"


# --------------------------------------------------------------------------- validation

def _truncate_utf8(text: str, limit: int) -> str:
    b = text.encode("utf-8")[:max(limit, 0)]
    return b.decode("utf-8", "ignore")


def check_space(space) -> str:
    """One of ``animation.SPACES`` (ValueError otherwise)."""
    if space not in animation.SPACES:
        raise ValueError(f"space must be one of {', '.join(animation.SPACES)}, got {space!r}")
    return space


def scene_world(result, space: str) -> tuple:
    """The world the rigs and camera of ``result`` stand in. -> (space actually used, world
    (R, t) or None for camera space, Floor or None, warnings [str]). A floor that cannot be
    found falls back to camera space with a warning."""
    if space == "CAMERA":
        return space, None, None, []
    try:
        world, fl = floor.floor_world_of_result(result)
    except ValueError as exc:
        return "CAMERA", None, None, [f"no floor found ({exc}): the rigs are in camera space"]
    return space, world, fl, []


def _plan(result, track_ids, strength, video_path, name, space="FLOOR", plant_feet=True):
    """Every check and every piece of maths that does not need Blender objects, before the
    scene is touched. -> dict."""
    if not all(hasattr(result, a) for a in ("meta", "tracks", "body", "validate", "has_rig")):
        raise ValueError(f"expected a MotionResult (pymaf_blender.common.result_schema.read_result), "
                         f"got {type(result).__name__}")
    result.validate()  # ResultError is a ValueError; names the key and the problem
    if not result.has_rig:
        raise ValueError(_NO_RIG)
    meta = result.meta
    available = sorted(result.tracks, key=track_order)
    if track_ids is None:
        ids = available
    else:
        if isinstance(track_ids, (str, int)):
            track_ids = [track_ids]
        ids = [str(t) for t in track_ids]
        unknown = [t for t in ids if t not in result.tracks]
        if unknown:
            raise ValueError(f"track id(s) {', '.join(unknown)} not in the result (it has "
                             f"{', '.join(available) or 'none'})")
        ids = list(dict.fromkeys(ids))
    if not ids:
        raise ValueError("no track to import (the result has no tracks or none was selected)")
    strength = animation.check_strength(strength)
    check_space(space)

    video = meta["video"]
    fps = video.get("fps")
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"meta/json: video.fps must be a positive number to key the motion, got {fps!r}")
    W, H = video.get("width"), video.get("height")
    if not all(isinstance(v, int) and v > 0 for v in (W, H)):
        raise ValueError(f"meta/json: video.width/height must be positive integers, got {W!r} x {H!r}")
    start = meta.get("frame_start") or 0
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"meta/json: frame_start must be a non-negative integer, got {start!r}")
    count = video.get("frame_count") or meta.get("frames_done") or 0
    last = max(int(result.tracks[t].frames[-1]) for t in ids)
    count = max(int(count), last + 1)
    offset = timing.frame_offset(meta)

    # Names: "<import>_PyMAF_<id>", "<import>_PyMAF_<id>_body", actions "..._motion" /
    # "..._body_visibility"; the import name is cut so the longest of them fits Blender's limit.
    if name is None or not str(name).strip():
        stem = os.path.splitext(os.path.basename(str(video_path or video.get("path") or "")))[0]
        name = stem or RIG_TAG
    name = re.sub(r"[\x00-\x1f\x7f]", "", str(name)).strip() or RIG_TAG
    longest = max(len(f"_{RIG_TAG}_{t}_body_visibility".encode()) for t in ids)
    budget = MAX_NAME_BYTES - longest - 4  # room for a "_<n>" suffix that makes the name unique
    if budget < 1:
        raise ValueError(f"track id(s) too long for Blender object names: {ids!r}")
    name = _truncate_utf8(name, budget)

    space, world, fl, warnings = scene_world(result, space)
    body = result.body
    people = {}
    for tid in ids:
        tr = result.tracks[tid]
        raw = animation.raw_from_track(tr, meta, tid, name, "", space, world, plant_feet)
        R, t, found = animation.world_motion(raw, strength)
        vertices = blender_space.body_points_to_armature(tr.rest_vertices)
        joints = blender_space.body_points_to_armature(tr.rest_joints)
        lift = blender_space.rest_on_floor(vertices)
        raw["strength"] = strength or 0.0
        people[tid] = {
            "raw": raw, "rotmat": R, "transl": t, "contacts": found,
            "joints": joints + lift, "vertices": vertices + lift,
            "frames_bl": raw["frames"].astype(np.float64) + offset,
        }
    return {
        "meta": meta, "ids": ids, "name": name, "people": people, "strength": strength,
        "space": space, "world": world, "floor": fl, "warnings": warnings,
        "fps": float(fps), "frame_start": offset, "frame_end": offset + count - 1,
        "video_path": video_path if video_path is not None else video.get("path"),
        "duration": int(meta.get("source_frame_count") or (start + count)),
        "faces": np.asarray(body.faces), "weights": np.asarray(body.weights), "parents": np.asarray(body.parents),
    }


def _unique_name(base: str) -> str:
    def taken(n):
        prefix = f"{n}_{RIG_TAG}_"
        return (n in bpy.data.collections or camera_name(n) in bpy.data.objects or floor_name(n) in bpy.data.objects
                or any(o.name.startswith(prefix) for o in bpy.data.objects))
    name, k = base, 2
    while taken(name):
        name = f"{base}_{k}"
        k += 1
    return name


# --------------------------------------------------------------------------- import

def import_result(context, result, *, track_ids=None, strength=None, video_path=None, name=None,
                  space="FLOOR", plant_feet=True) -> dict:
    """Build camera, video background and one animated, skinned rig per person.

    result: a ``MotionResult`` with rig data (``result.has_rig``); everything is validated
    before the scene is changed (a result without rig data raises ValueError saying to re-run
    the engine). track_ids: ids to import (default all). strength: smoothing slider in [0, 1]
    (``smoothing.params_for_strength``) applied on top of what the result holds; None = the
    result as it is. video_path: the video for the camera background (default meta.video.path;
    skipped silently when missing). name: import name (default the video's file name); the
    new collection and every object are named after it. space: where the rigs stand
    (``animation.SPACES``): "FLOOR" a Z-up world with the floor estimated from the people's
    feet at Z = 0 and the camera placed above it; "CAMERA" the engine's camera at the origin;
    "IN_PLACE" the floor world without the root's horizontal motion. "FLOOR" and "IN_PLACE"
    fall back to "CAMERA" with a warning when no floor is found. plant_feet (floor worlds):
    each person stood on the floor along the camera rays, planted feet pinned, contacts keyed
    as the custom properties ``pymaf_contact_left/right`` (``animation.world_motion``).

    -> {"collection", "camera", "floor" (a plane at Z = 0 in the floor worlds, else None),
        "armatures": {id: obj}, "meshes": {id: obj},
        "frame_start", "frame_end", "fps", "name", "space", "camera_height" (m, None in camera
        space), "camera_pitch_deg", "warnings": [str]}
    """
    steps = import_result_steps(context, result, track_ids=track_ids, strength=strength,
                                video_path=video_path, name=name, space=space, plant_feet=plant_feet)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def import_result_steps(context, result, *, track_ids=None, strength=None, video_path=None, name=None,
                        space="FLOOR", plant_feet=True):
    """``import_result`` one person at a time: a generator of ``(fraction, text)`` whose return
    value (``StopIteration.value``) is ``import_result``'s. Validation happens before the first
    step; closing the generator early (cancel) or an error removes everything it created."""
    plan = _plan(result, track_ids, strength, video_path, name, space, plant_feet)
    scene = context.scene
    if context.object is not None and context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    saved = (scene.render.fps, scene.render.fps_base, scene.frame_start, scene.frame_end,
             scene.camera, scene.render.resolution_x, scene.render.resolution_y,
             scene.render.resolution_percentage)
    created = []
    try:
        return (yield from _build(context, plan, created))
    except BaseException:        # GeneratorExit (cancelled) included
        _undo(scene, created, saved)
        raise


def _build(context, plan, created):
    scene = context.scene
    name = _unique_name(plan["name"])
    coll = bpy.data.collections.new(name)
    created.append(coll)
    scene.collection.children.link(coll)

    fps_int, fps_base = timing.blender_fps(plan["fps"])
    scene.render.fps, scene.render.fps_base = fps_int, fps_base
    scene.frame_start, scene.frame_end = plan["frame_start"], plan["frame_end"]

    cam = camera.build_camera(context, coll, camera_name(name), plan["meta"], plan["world"])
    created += [cam, cam.data]
    out_floor = None
    if plan["world"] is not None:
        out_floor = rig.build_floor(coll, floor_name(name), FLOOR_SIZE_M)
        created += [out_floor, out_floor.data]
    warnings = list(plan["warnings"])
    images_before = set(bpy.data.images)
    img = camera.load_video(plan["video_path"])
    if img is not None and img not in images_before:
        created.append(img)
    if img is not None:
        camera.set_background(cam, img, plan["duration"])
    elif plan["video_path"]:
        warnings.append(f"video not found or unreadable, no camera background: {plan['video_path']}")

    for o in context.view_layer.objects:
        if o.select_get():
            o.select_set(False)
    armatures, meshes = {}, {}
    n = len(plan["ids"])
    for k, tid in enumerate(plan["ids"]):
        yield k / n, f"Building the rigs: person {tid} ({k + 1}/{n})"
        p = plan["people"][tid]
        arm = rig.build_armature(context, coll, armature_name(name, tid), p["joints"], plan["parents"])
        created += [arm, arm.data]
        body = rig.build_body(coll, body_name(name, tid), arm, p["vertices"], plan["faces"], plan["weights"])
        created += [body, body.data]
        mat = rig.person_material(f"{body.name}_material", k)
        created.append(mat)
        body.data.materials.append(mat)
        raw = p["raw"]
        raw["import_name"], raw["body"] = name, body.name
        q_bone, loc = animation.key_values(p["rotmat"], p["transl"], raw["rest_root"], rig.bone_rest_matrices(arm),
                                           rig.root_rest_head(arm))
        created.append(animation.write_pose_keys(arm, p["frames_bl"], q_bone, loc, f"{arm.name}_motion"))
        if p["contacts"] is not None:
            animation.write_contact_keys(arm, p["frames_bl"], p["contacts"])
        shown = gaps.shown_frames(p["frames_bl"], plan["fps"])
        kf, hidden = timing.visibility_keys(shown, scene.frame_start, scene.frame_end)
        created.append(animation.write_visibility_keys(body, kf, hidden, f"{body.name}_visibility"))
        animation.store_raw(arm, raw)
        armatures[tid], meshes[tid] = arm, body
        arm.select_set(True)
    context.view_layer.objects.active = armatures[plan["ids"][0]]
    scene.frame_set(scene.frame_start)
    fl = plan["floor"]
    return {"collection": coll, "camera": cam, "floor": out_floor, "armatures": armatures, "meshes": meshes,
            "frame_start": scene.frame_start, "frame_end": scene.frame_end,
            "fps": scene.render.fps / scene.render.fps_base, "name": name, "space": plan["space"],
            "camera_height": fl.camera_height if fl else None,
            "camera_pitch_deg": fl.camera_pitch_deg if fl else None, "warnings": warnings}


def _undo(scene, created, saved):
    """Remove what a failed import created and restore the scene settings it changed."""
    if bpy.context.object is not None and bpy.context.object.mode != "OBJECT":
        try:
            bpy.ops.object.mode_set(mode="OBJECT")
        except RuntimeError:
            pass
    datablocks.remove(created)
    (scene.render.fps, scene.render.fps_base, scene.frame_start, scene.frame_end, scene.camera,
     scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage) = saved


def reapply_smoothing(context, armature_obj, strength) -> None:
    """Re-key ``armature_obj`` from the raw data kept with the rig, filtered at ``strength`` in
    [0, 1] (0 = the imported result exactly). No engine run."""
    animation.reapply(context, armature_obj, strength)
