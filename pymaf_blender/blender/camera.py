"""The scene camera that reproduces the engine's pinhole, and the video behind it.

The camera object's matrix is ``blender_space.camera_object_matrix(world)``: in camera space at
the world origin looking along +Y, +Z up; in the floor world above the origin, tilted as the
floor estimate says. Either way engine camera point p is world point R p + t.
Lens, sensor and shift come from ``blender_space.blender_camera``; the render resolution is the
video's. Projecting a posed joint through it (``bpy_extras.object_utils.world_to_camera_view``)
lands on the engine's 2D keypoint (tests/blender/test_scene.py).
"""
from __future__ import annotations

import os

import bpy
from mathutils import Matrix

from ..common import blender_space
from . import timing


def build_camera(context, collection, name: str, meta: dict, world=None) -> bpy.types.Object:
    """Camera object ``name`` (linked to ``collection``) placed in ``world`` ((R, t), None:
    camera space), made the scene camera; sets the render resolution to the video's."""
    video, cam_meta = meta["video"], meta["camera"]
    W, H = int(video["width"]), int(video["height"])
    s = blender_space.blender_camera(float(cam_meta["focal_px"]), cam_meta["principal_point"], W, H)
    cam = bpy.data.cameras.new(name)
    cam.type = "PERSP"
    cam.sensor_fit = s["sensor_fit"]
    cam.sensor_width = s["sensor_width"]
    cam.lens = s["lens"]
    cam.shift_x = s["shift_x"]
    cam.shift_y = s["shift_y"]
    cam.clip_start = 0.05
    cam.clip_end = 1000.0
    obj = bpy.data.objects.new(name, cam)
    collection.objects.link(obj)
    obj.rotation_mode = "XYZ"
    obj.matrix_world = Matrix(blender_space.camera_object_matrix(world).tolist())
    scene = context.scene
    scene.camera = obj
    r = scene.render
    r.resolution_x, r.resolution_y = s["resolution_x"], s["resolution_y"]
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    return obj


def configure_image_user(image_user, image, duration: int = 0) -> None:
    """Movie playback so that scene frame F shows video frame F - 1 (``timing``).

    Blender shows movie frame ``F - frame_start + 1 + frame_offset`` (1-based) on scene frame
    F; with frame_start = 1 and no offset that is movie frame F, i.e. 0-based video frame
    F - 1 = ``timing.BLENDER_FRAME_OFFSET`` convention."""
    image_user.frame_start = timing.BLENDER_FRAME_OFFSET
    image_user.frame_offset = 0
    image_user.frame_duration = max(int(image.frame_duration or 0), int(duration), 1)
    image_user.use_cyclic = False
    image_user.use_auto_refresh = True


def load_video(path):
    """The video as a Blender movie image, or None when the file is missing or unreadable."""
    if not path or not os.path.isfile(path):
        return None
    try:
        img = bpy.data.images.load(os.path.abspath(path), check_existing=True)
    except (RuntimeError, OSError):
        return None
    if img.source not in {"MOVIE", "FILE", "SEQUENCE"}:
        return None
    return img


def set_background(cam_obj, image, duration: int = 0):
    """Show ``image`` (a movie) behind the camera, stretched to the frame. -> the background."""
    cam = cam_obj.data
    cam.show_background_images = True
    bg = cam.background_images.new()
    bg.source = "IMAGE"
    bg.image = image
    bg.frame_method = "STRETCH"   # same aspect as the render; stretch = exact fit
    bg.display_depth = "BACK"
    bg.alpha = 1.0
    if image.source == "MOVIE":
        configure_image_user(bg.image_user, image, duration)
    return bg
