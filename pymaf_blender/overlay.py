"""The overlay preview's Blender half: posed meshes evaluated in the scene and projected with the
scene camera, written for ``python -m engine.overlay`` (which draws them over the video).

No GPU and no render engine: for every frame with a person, the evaluated (skinned) mesh's
vertices go through the camera's view and projection matrices (the same maths as
``bpy_extras.object_utils.world_to_camera_view``, vectorised). Blender frame F shows video
frame F - 1 (``blender.timing``). The file format is documented in ``engine/overlay.py``.
"""
from __future__ import annotations

import json

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


def projection_input(context, armatures, max_frames: int = 900) -> dict:
    """Project every PyMAF rig's body on the frames its track has -> arrays for
    ``engine.overlay`` (see ``write_input``). The scene's current frame is restored."""
    scene = context.scene
    cam_obj = scene.camera
    if cam_obj is None:
        raise ValueError("the scene has no camera")
    people, frames_all = {}, set()
    for arm in armatures:
        raw = animation.load_raw(arm)
        bodies = [o for o in arm.children if o.type == "MESH"]
        if not bodies:
            continue
        bl_frames = raw["frames"].astype(np.int64) + int(raw["frame_offset"])
        bl_frames = bl_frames[(bl_frames >= scene.frame_start) & (bl_frames <= scene.frame_end)]
        people[str(raw["track_id"])] = {"arm": arm, "body": bodies[0], "frames": set(bl_frames.tolist())}
        frames_all.update(bl_frames.tolist())
    if not people:
        raise ValueError("the PyMAF rigs have no body mesh to draw")
    meta_src = _result_meta(armatures)
    width, height = int(meta_src["video"]["width"]), int(meta_src["video"]["height"])
    frames = sorted(frames_all)
    clipped = len(frames) > max_frames
    frames = frames[:max_frames]
    K = len(frames)
    out_people = {}
    for pid, p in people.items():
        faces = triangles(p["body"].data)
        V = len(p["body"].data.vertices)
        out_people[pid] = {"faces": faces, "uv": np.zeros((K, V, 2), np.float32),
                           "cam": np.zeros((K, V, 3), np.float32), "present": np.zeros(K, bool)}
    current = scene.frame_current
    try:
        for k, f in enumerate(frames):
            scene.frame_set(f)
            view, proj = camera_matrices(context, cam_obj, width, height)
            for pid, p in people.items():
                if f not in p["frames"]:
                    continue
                uv, cam = project(evaluated_vertices(context, p["body"]), view, proj, width, height)
                o = out_people[pid]
                o["uv"][k], o["cam"][k], o["present"][k] = uv, cam, True
    finally:
        scene.frame_set(current)
    video_frames = np.asarray(frames, np.int64) - timing.BLENDER_FRAME_OFFSET
    return {"video": meta_src["video"]["path_in_blender"], "width": width, "height": height,
            "fps": float(meta_src["video"]["fps"]), "video_frames": video_frames, "people": out_people,
            "clipped": clipped}


def _result_meta(armatures) -> dict:
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


def write_input(path, data: dict) -> None:
    meta = {"video": data["video"], "width": data["width"], "height": data["height"], "fps": data["fps"],
            "people": sorted(data["people"])}
    arrays = {"meta/json": np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
              "video_frames": np.asarray(data["video_frames"], np.int64)}
    for pid, p in data["people"].items():
        for key in ("faces", "uv", "cam", "present"):
            arrays[f"people/{pid}/{key}"] = p[key]
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
