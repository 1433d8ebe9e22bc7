"""The overlay preview's Blender half: posed meshes evaluated in the scene and projected with the
scene camera, written for ``python -m engine.overlay`` (which draws them over the video), one frame
at a time (``projection_steps``: the interface stays responsive, memory stays one frame).

No GPU and no render engine: for every frame with a person, the evaluated (skinned) mesh's
vertices go through the camera's view and projection matrices (the same maths as
``bpy_extras.object_utils.world_to_camera_view``, vectorised). Blender frame F shows video
frame F - 1 (``blender.timing``). The file format is documented in ``engine/overlay.py``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import bpy
import numpy as np

from .blender import animation, timing


def camera_matrices(context, cam_obj, width: int, height: int) -> tuple:
    """(world -> camera view 4x4, projection 4x4) of ``cam_obj`` for a width x height image."""
    r = context.scene.render
    depsgraph = context.evaluated_depsgraph_get()
    proj = cam_obj.calc_matrix_camera(depsgraph, x=width, y=height, scale_x=r.pixel_aspect_x,
                                      scale_y=r.pixel_aspect_y)
    view = cam_obj.matrix_world.inverted()
    return np.array(view, np.float64), np.array(proj, np.float64)


def project(points_world: np.ndarray, view: np.ndarray, proj: np.ndarray, width: int, height: int) -> tuple:
    """World points (N, 3) -> (pixels (N, 2), x right / y down from the top-left corner;
    camera-frame points (N, 3) in OpenCV axes: x right, y down, z forward)."""
    p = np.c_[points_world, np.ones(len(points_world))]
    cam = p @ view.T                                 # Blender camera: x right, y up, -z forward
    clip = cam @ proj.T
    w = clip[:, 3:4]
    w = np.where(np.abs(w) < 1e-12, 1e-12, w)
    ndc = clip[:, :3] / w
    uv = np.c_[(ndc[:, 0] + 1.0) * 0.5 * width, (1.0 - ndc[:, 1]) * 0.5 * height]
    return uv, cam[:, :3] * np.array([1.0, -1.0, -1.0])


def evaluated_vertices(context, obj) -> np.ndarray:
    """World coordinates (V, 3) of ``obj``'s evaluated mesh (modifiers, i.e. skinning, applied)."""
    depsgraph = context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, np.float64)
        mesh.vertices.foreach_get("co", co)
    finally:
        ev.to_mesh_clear()
    M = np.array(ev.matrix_world, np.float64)
    co = co.reshape(-1, 3)
    return co @ M[:3, :3].T + M[:3, 3]


def triangles(mesh) -> np.ndarray:
    mesh.calc_loop_triangles()
    tri = np.empty(len(mesh.loop_triangles) * 3, np.int64)
    mesh.loop_triangles.foreach_get("vertices", tri)
    return tri.reshape(-1, 3)


def projection_steps(context, armatures, folder, max_frames: int = 900, meta_src=None):
    """Project every PyMAF rig's body on the frames its track has, one frame per step, into
    the overlay input ``folder`` for ``engine.overlay`` (layout in engine/overlay.py): a
    generator of ``(fraction, text)``. Each person's arrays hold only the frames the person is
    on, written to disk frame by frame (memory: one frame). ``meta.json`` is written last, so
    an interrupted folder is never taken for a complete one; closing the generator (cancel)
    or an error removes the folder. The scene's current frame is restored.

    Checks that fail at once (no camera, no body, no result file) raise ValueError before the
    first step. ``meta_src``: ``result_meta(armatures)`` when the caller has read it already.
    The generator's return value: {"frames": K, "clipped": bool, "people": [ids]}."""
    scene = context.scene
    cam_obj = scene.camera
    if cam_obj is None:
        raise ValueError("the scene has no camera")
    people = {}
    for arm in armatures:
        raw = animation.load_raw(arm)
        bodies = [o for o in arm.children if o.type == "MESH"]
        if not bodies:
            continue
        bl_frames = raw["frames"].astype(np.int64) + int(raw["frame_offset"])
        bl_frames = bl_frames[(bl_frames >= scene.frame_start) & (bl_frames <= scene.frame_end)]
        people[str(raw["track_id"])] = {"body": bodies[0], "frames": set(bl_frames.tolist()),
                                        "color": body_color(bodies[0], len(people))}
    if not people:
        raise ValueError("the PyMAF rigs have no body mesh to draw")
    meta_src = meta_src or result_meta(armatures)
    return _projection_steps(context, people, meta_src, Path(folder), max_frames)


def _projection_steps(context, people, meta_src, folder: Path, max_frames: int):
    scene = context.scene
    width, height = int(meta_src["video"]["width"]), int(meta_src["video"]["height"])
    frames = sorted(set().union(*(p["frames"] for p in people.values())))
    clipped = len(frames) > max_frames
    frames = frames[:max_frames]
    K = len(frames)
    if folder.exists():
        shutil.rmtree(folder)
    current = scene.frame_current
    try:
        folder.mkdir(parents=True)
        np.save(folder / "video_frames.npy", np.asarray(frames, np.int64) - timing.BLENDER_FRAME_OFFSET)
        for pid, p in people.items():
            sub = folder / "people" / pid
            sub.mkdir(parents=True)
            on = np.array([k for k, f in enumerate(frames) if f in p["frames"]], np.int64)
            V = len(p["body"].data.vertices)
            np.save(sub / "faces.npy", triangles(p["body"].data))
            np.save(sub / "frames.npy", on)
            np.save(sub / "color.npy", np.asarray(p["color"], np.uint8))
            p["row"] = {int(k): r for r, k in enumerate(on)}
            p["uv"] = np.lib.format.open_memmap(sub / "uv.npy", mode="w+", dtype=np.float32, shape=(len(on), V, 2))
            p["cam"] = np.lib.format.open_memmap(sub / "cam.npy", mode="w+", dtype=np.float32, shape=(len(on), V, 3))
        cam_obj = scene.camera
        for k, f in enumerate(frames):
            yield k / max(K, 1), f"Overlay: projecting the bodies, frame {k + 1}/{K}"
            scene.frame_set(f)
            view, proj = camera_matrices(context, cam_obj, width, height)
            for p in people.values():
                r = p["row"].get(k)
                if r is None:
                    continue
                p["uv"][r], p["cam"][r] = project(evaluated_vertices(context, p["body"]), view, proj, width, height)
        for p in people.values():
            for key in ("uv", "cam"):
                p[key].flush()
                p[key] = None           # closes the memory map
        meta = {"format": "pymaf-overlay-input", "version": 2, "video": meta_src["video"]["path_in_blender"],
                "width": width, "height": height, "fps": float(meta_src["video"]["fps"]), "people": sorted(people)}
        (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    except BaseException:               # an error, or cancelled (GeneratorExit)
        for p in people.values():
            p["uv"] = p["cam"] = None
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        scene.frame_set(current)
    return {"frames": K, "clipped": clipped, "people": sorted(people)}


def body_color(body, index: int) -> tuple:
    """The sRGB colour the body's material records (``rig.person_material``), else the palette's."""
    from .common.palette import person_color_srgb

    for mat in getattr(body.data, "materials", []) or []:
        if mat is not None and "pymaf_color_srgb" in mat:
            return tuple(int(c) for c in mat["pymaf_color_srgb"])
    return person_color_srgb(index)


def result_meta(armatures) -> dict:
    """The video (path, size, rate) the rigs were imported from: the kept result file's
    metadata, with the path of the movie the scene camera shows when there is one."""
    from .common.result_schema import read_result

    for arm in armatures:
        path = arm.get("pymaf_result_file")
        if path:
            meta = read_result(path, validate=False).meta
            video = dict(meta["video"])
            video["path_in_blender"] = _camera_movie() or video["path"]
            return {"video": video}
    raise ValueError("the rigs do not record their result file (pymaf_result_file); import the video again")


def _camera_movie():
    cam = bpy.context.scene.camera
    if cam is None or cam.type != "CAMERA":
        return None
    for bg in cam.data.background_images:
        if bg.image is not None and bg.image.source == "MOVIE":
            return bpy.path.abspath(bg.image.filepath)
    return None
