"""Blender-native rotoscoping for an imported shot (docs/roto.md).

``setup_roto`` turns one import (its camera and PyMAF rigs) into what a compositor expects:

* **Plate**: the video as a Movie Clip (``bpy.data.movieclips``), mapped like the import's
  movie image (clip ``frame_start`` 1, ``frame_offset`` 0: scene frame F shows video frame
  F - 1, ``timing``), made the scene's active clip (Movie Clip editor, tracking, stabilisation)
  and the camera background (source ``MOVIE_CLIP``).
* **Compositor**: nodes named ``PyMAF <import> ...``: the plate (Movie Clip node), the render
  (Render Layers, film transparent) alpha-over the plate to the output and a Viewer; per person
  the matte sequence (Image node), the editable mask (Mask node) and the actor cut out of the
  plate (Set Alpha), in a frame "PyMAF <import> Mattes". The view transform is set to Standard
  so the plate comes out as it went in.
* **Holdout** (optional): the bodies get the material "PyMAF Holdout" (object-linked slot, the
  mesh's own colour material is kept): they cut holes in the render, so CG behind the actors is
  hidden by the plate's actors.
* **Masks**: one Mask datablock per person, ``<rig>_mask`` with one layer ``<rig>``: a closed,
  filled spline with the chosen number of points, a shape key on every frame of the engine's
  contours (``<stem>_contours.npz``), hidden on the other frames (keyed ``hide`` /
  ``hide_render``). Shape keys are inserted with Blender's own operator in a Movie Clip editor
  (the Mask editor's data, editable and re-keyable there); without any window (``blender -b``)
  the points are keyed as F-Curves instead (same shapes, ``keying`` says which).
* **Tracks**: per person and chosen joint a 2D track ``<id>_<joint>`` in the clip's camera
  tracks, one keyed marker per frame at the joint's projection through the scene camera
  (the rig's world joints: the stored motion at the rig's smoothing, feet as keyed, times the
  rig's object matrix), switched off (disabled marker) on frames without the person. Usable by
  the tracking tools (2D stabilisation, plane tracks, track to empty).

Everything is re-runnable: the clip is reused (same file), our compositor nodes are rebuilt,
masks are rebuilt in place (same datablocks, so nodes keep pointing at them), tracks of the same
name are re-keyed. Coordinates and the maths are ``common.silhouette`` (numpy).
"""
from __future__ import annotations

import contextlib
import json
import os
import re

import bpy
import numpy as np

from ..common import gaps, kinematics, silhouette, smpl_topology
from ..common.result_schema import track_order
from . import animation, compat, rig, timing

NODE_PREFIX = "PyMAF"
HOLDOUT_MATERIAL = "PyMAF Holdout"
DEFAULT_MASK_POINTS = 32
JOINT_NAMES = tuple(rig.BONE_NAMES)
DEFAULT_JOINTS = ("pelvis", "neck", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                  "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
                  "left_ankle", "right_ankle")
MATTES_JSON_SUFFIX = "_mattes.json"
CONTOURS_SUFFIX = "_contours.npz"
SEARCH_SIZE_PX = 71           # Blender's default search area; the pattern keeps its default
KEYING = ("AUTO", "SHAPE_KEYS", "FCURVES")
_NEW_COMPOSITOR = "compositing_node_group" in bpy.types.Scene.bl_rna.properties   # 5.0+: node groups


# --------------------------------------------------------------------------- which rigs


def rig_info(arm) -> dict:
    """The raw data stored with a PyMAF rig (``animation.load_raw``; ValueError otherwise)."""
    return animation.load_raw(arm)


def imports_in_scene(scene) -> dict:
    """{import name: [PyMAF armatures]} of the scene."""
    out = {}
    for ob in scene.objects:
        if ob.type == "ARMATURE" and animation.RAW_KEY in ob.keys():
            try:
                name = str(ob[animation.RAW_KEY].get("import_name") or "")
            except (AttributeError, TypeError):
                continue
            out.setdefault(name, []).append(ob)
    for arms in out.values():
        arms.sort(key=lambda a: track_order(a[animation.RAW_KEY].get("track_id", "")))
    return out


def import_rigs(scene, import_name=None, armatures=None) -> tuple:
    """-> (import name, its armatures). ``armatures`` given: their import (all of them must
    share it); else ``import_name``; else the scene's only import."""
    imports = imports_in_scene(scene)
    if armatures:
        names = {str(a[animation.RAW_KEY].get("import_name") or "") for a in armatures
                 if animation.RAW_KEY in a.keys()}
        if len(names) != 1:
            raise ValueError("choose the rigs of one import (they come from different imports)" if names
                             else "the chosen objects are not PyMAF rigs")
        import_name = names.pop()
    if import_name is None:
        if not imports:
            raise ValueError("no PyMAF rig in the scene: import a video first")
        if len(imports) > 1:
            raise ValueError(f"the scene holds several imports ({', '.join(sorted(imports))}): select a rig "
                             f"of the one to set up")
        import_name = next(iter(imports))
    if import_name not in imports:
        raise ValueError(f"no PyMAF rig of an import named {import_name!r} in the scene")
    return import_name, imports[import_name]


def import_camera(scene, import_name):
    from .scene import camera_name
    cam = bpy.data.objects.get(camera_name(import_name))
    if cam is None or cam.type != "CAMERA":
        cam = scene.camera
    if cam is None or cam.type != "CAMERA":
        raise ValueError(f"the import {import_name!r} has no camera ({camera_name(import_name)}) and the scene "
                         f"has none")
    return cam


def plate_path(cam, arms, override=None) -> str:
    """The footage: ``override``; else the camera's background movie (what the import used);
    else the video the result was made from."""
    if override:
        return os.path.abspath(bpy.path.abspath(override))
    for bg in cam.data.background_images:
        if bg.source == "MOVIE_CLIP" and bg.clip is not None:
            return os.path.abspath(bpy.path.abspath(bg.clip.filepath))
        if bg.source == "IMAGE" and bg.image is not None and bg.image.source == "MOVIE":
            return os.path.abspath(bpy.path.abspath(bg.image.filepath))
    for arm in arms:
        video = rig_info(arm).get("video")
        if video:
            return os.path.abspath(video)
    return ""


# --------------------------------------------------------------------------- plate


def load_clip(path: str):
    """The footage as a Movie Clip (an existing clip of the same file is reused), frames mapped
    like the plate: scene frame F shows video frame F - 1 (clip frame_start 1, offset 0)."""
    if not path or not os.path.isfile(path):
        raise ValueError(f"the footage was not found: {path or '(none)'}; choose the video")
    try:
        clip = bpy.data.movieclips.load(os.path.abspath(path), check_existing=True)
    except RuntimeError as exc:
        raise ValueError(f"Blender cannot open the footage {path}: {exc}") from None
    clip.frame_start = timing.BLENDER_FRAME_OFFSET
    clip.frame_offset = 0
    return clip


def clip_last_frame(clip) -> int:
    return int(clip.frame_start) + max(int(clip.frame_duration), 1) - 1


def set_clip_background(cam_obj, clip):
    """The camera shows ``clip`` behind the scene: the import's movie-image background is
    switched to the clip (its image stays referenced), else a clip background is added.
    -> the background entry."""
    cam = cam_obj.data
    cam.show_background_images = True
    bgs = list(cam.background_images)
    bg = next((b for b in bgs if b.source == "MOVIE_CLIP" and b.clip == clip), None)
    if bg is None:
        path = os.path.normcase(os.path.abspath(bpy.path.abspath(clip.filepath)))
        bg = next((b for b in bgs if b.source == "IMAGE" and b.image is not None and
                   os.path.normcase(os.path.abspath(bpy.path.abspath(b.image.filepath))) == path), None)
    if bg is None:
        bg = cam.background_images.new()
        bg.frame_method = "STRETCH"
        bg.display_depth = "BACK"
        bg.alpha = 1.0
    bg.source = "MOVIE_CLIP"
    bg.clip = clip
    bg.use_camera_clip = False
    bg.clip_user.use_render_undistorted = False
    return bg


# --------------------------------------------------------------------------- mattes on disk


def find_mattes(path, prefer_stem: str = "") -> dict:
    """The engine's mattes (``python -m engine mattes``): ``path`` a folder or its
    ``<stem>_mattes.json``. -> {"folder", "stem", "json" (dict, {} when unreadable),
    "contours" (path or None), "people": {track id: {Blender frame: PNG path}}}.
    Several sets in one folder: the one named ``prefer_stem``, else the newest."""
    p = os.path.abspath(bpy.path.abspath(str(path))) if path else ""
    if not p or not os.path.exists(p):
        raise ValueError(f"the mattes folder was not found: {p or '(none chosen)'}; run Mattes first")
    if os.path.isfile(p):
        folder, base = os.path.dirname(p), os.path.basename(p)
        stem = None
        for suffix in (MATTES_JSON_SUFFIX, CONTOURS_SUFFIX):
            if base.endswith(suffix):
                stem = base[:-len(suffix)]
        if stem is None:
            raise ValueError(f"{p} is not a mattes file (<name>{MATTES_JSON_SUFFIX} or <name>{CONTOURS_SUFFIX})")
    else:
        folder = p
        stems = {}
        for entry in os.listdir(folder):
            for suffix in (MATTES_JSON_SUFFIX, CONTOURS_SUFFIX):
                if entry.endswith(suffix):
                    stem = entry[:-len(suffix)]
                    stems[stem] = max(stems.get(stem, 0.0), os.path.getmtime(os.path.join(folder, entry)))
        if not stems:
            raise ValueError(f"no mattes in {folder} (no *{MATTES_JSON_SUFFIX} or *{CONTOURS_SUFFIX}); run Mattes first")
        stem = prefer_stem if prefer_stem in stems else max(stems, key=lambda s: (stems[s], s))
    doc = {}
    jpath = os.path.join(folder, stem + MATTES_JSON_SUFFIX)
    if os.path.isfile(jpath):
        try:
            with open(jpath, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (OSError, ValueError):
            doc = {}
    contours = os.path.join(folder, stem + CONTOURS_SUFFIX)
    pattern = re.compile(re.escape(stem) + r"_person(.+)\.(\d+)\.png$")
    people = {}
    for entry in os.listdir(folder):
        m = pattern.match(entry)
        if m:
            people.setdefault(m.group(1), {})[int(m.group(2))] = os.path.join(folder, entry)
    return {"folder": folder, "stem": stem, "json": doc if isinstance(doc, dict) else {},
            "contours": contours if os.path.isfile(contours) else None, "people": people}


def load_matte_sequence(files: dict, name: str):
    """{Blender frame: PNG} of one person -> an image sequence (file number = Blender frame)."""
    first = files[min(files)]
    img = bpy.data.images.load(first, check_existing=True)
    img.source = "SEQUENCE"
    img.name = name
    try:
        img.colorspace_settings.name = "Non-Color"   # an alpha matte, not a picture
    except TypeError:
        pass
    return img


def configure_sequence_user(user, last_frame: int) -> None:
    """An image user (an Image node) showing file number F on scene frame F."""
    user.frame_start = timing.BLENDER_FRAME_OFFSET
    user.frame_offset = 0
    user.frame_duration = max(int(last_frame), 1)
    user.use_cyclic = False
    user.use_auto_refresh = True


# --------------------------------------------------------------------------- compositor


def _alpha_over_inputs(node) -> tuple:
    """(background, foreground) inputs of an Alpha Over node (5.0 names them; 4.x has
    Fac, Image, Image)."""
    if "Background" in node.inputs:
        return node.inputs["Background"], node.inputs["Foreground"]
    return node.inputs[1], node.inputs[2]


def compositor_tree(scene):
    """The scene's compositor node tree, switched on (4.x ``scene.node_tree``; 5.0+ the scene's
    compositing node group, made when there is none). -> (tree, the output's input socket)."""
    if _NEW_COMPOSITOR:
        nt = scene.compositing_node_group
        if nt is None:
            nt = bpy.data.node_groups.new(f"{NODE_PREFIX} Compositing", "CompositorNodeTree")
            scene.compositing_node_group = nt
        outputs = [i for i in nt.interface.items_tree if getattr(i, "item_type", "") == "SOCKET"
                   and i.in_out == "OUTPUT"]
        if not outputs:
            nt.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        out = next((n for n in nt.nodes if n.bl_idname == "NodeGroupOutput"), None)
        if out is None:
            out = nt.nodes.new("NodeGroupOutput")
            out.location = (900, 0)
        return nt, out.inputs[0]
    fresh = not scene.use_nodes
    scene.use_nodes = True
    nt = scene.node_tree
    if fresh:   # the default tree Blender makes: keep its Composite node, drop its Render Layers
        for n in [n for n in nt.nodes if n.bl_idname == "CompositorNodeRLayers" and not n.name.startswith(NODE_PREFIX)]:
            nt.nodes.remove(n)
    out = next((n for n in nt.nodes if n.bl_idname == "CompositorNodeComposite"), None)
    if out is None:
        out = nt.nodes.new("CompositorNodeComposite")
        out.location = (900, 0)
    return nt, out.inputs["Image"]


def node_name(import_name: str, what: str) -> str:
    return f"{NODE_PREFIX} {import_name} {what}"


def build_compositor(scene, import_name: str, clip, people: list) -> dict:
    """Our nodes in the scene's compositor (old ones of this import removed first).

    people: [(track id, matte image or None, Mask or None)]. -> {role: node}: "plate",
    "render", "cg over plate", "viewer", "mattes" (the frame), "matte <id>", "mask <id>",
    "actor <id>", "output" (the node of the output socket)."""
    nt, out_socket = compositor_tree(scene)
    prefix = node_name(import_name, "")
    for n in [n for n in nt.nodes if n.name.startswith(prefix)]:
        nt.nodes.remove(n)
    nodes = {}

    def add(kind, what, x, y, label=None):
        n = nt.nodes.new(kind)
        n.name = node_name(import_name, what)
        n.label = label or what
        n.location = (x, y)
        nodes[what.lower()] = n
        return n

    plate = add("CompositorNodeMovieClip", "Plate", 0, 300)
    plate.clip = clip
    render = add("CompositorNodeRLayers", "Render", 0, 0)
    render.scene = scene
    over = add("CompositorNodeAlphaOver", "CG over Plate", 400, 200)
    bg, fg = _alpha_over_inputs(over)
    nt.links.new(plate.outputs["Image"], bg)
    nt.links.new(render.outputs["Image"], fg)
    for link in list(out_socket.links):
        nt.links.remove(link)
    nt.links.new(over.outputs["Image"], out_socket)
    nodes["output"] = out_socket.node
    viewer = add("CompositorNodeViewer", "Viewer", 700, 350)
    nt.links.new(over.outputs["Image"], viewer.inputs["Image"])
    frame = add("NodeFrame", "Mattes", 0, -300, label=f"{NODE_PREFIX} {import_name}: mattes and masks")
    for k, (tid, image, mask) in enumerate(people):
        y = -350 - 260 * k
        alpha = None
        if image is not None:
            m = add("CompositorNodeImage", f"Matte {tid}", 0, y, label=f"Matte {tid}")
            m.image = image
            configure_sequence_user(m, int(image.get("pymaf_last_frame", scene.frame_end)))
            m.parent = frame
            alpha = m.outputs["Image"]
        if mask is not None:
            mk = add("CompositorNodeMask", f"Mask {tid}", 0, y - 130, label=f"Mask {tid}")
            mk.mask = mask
            mk.parent = frame
            alpha = alpha if alpha is not None else mk.outputs["Mask"]
        if alpha is not None:
            actor = add("CompositorNodeSetAlpha", f"Actor {tid}", 350, y, label=f"Actor {tid} (plate x matte)")
            nt.links.new(plate.outputs["Image"], actor.inputs["Image"])
            nt.links.new(alpha, actor.inputs["Alpha"])
            actor.parent = frame
    scene.render.use_compositing = True
    scene.render.film_transparent = True
    try:
        scene.view_settings.view_transform = "Standard"
    except TypeError:
        pass
    return nodes


# --------------------------------------------------------------------------- holdout


def holdout_material():
    """The shared "PyMAF Holdout" material: a Holdout shader (zero alpha in Cycles and EEVEE)."""
    mat = bpy.data.materials.get(HOLDOUT_MATERIAL)
    if mat is None:
        mat = bpy.data.materials.new(HOLDOUT_MATERIAL)
        if mat.node_tree is None:   # 4.x; from 5.0 every material has nodes
            mat.use_nodes = True
        nt = mat.node_tree
        nt.nodes.clear()
        hold = nt.nodes.new("ShaderNodeHoldout")
        out = nt.nodes.new("ShaderNodeOutputMaterial")
        out.location = (250, 0)
        nt.links.new(hold.outputs[0], out.inputs["Surface"])
        mat.diffuse_color = (0.05, 0.05, 0.05, 1.0)
    return mat


def set_holdout(meshes, on: bool) -> None:
    """Bodies as holdouts (the first material slot linked to the object, holding "PyMAF
    Holdout") or back to their own material (the slot linked to the mesh again)."""
    mat = holdout_material() if on else None
    for body in meshes:
        if not body.material_slots:
            body.data.materials.append(None)
        slot = body.material_slots[0]
        if on:
            slot.link = "OBJECT"
            slot.material = mat
        elif slot.link == "OBJECT":
            slot.material = None
            slot.link = "DATA"


def is_holdout(body) -> bool:
    return bool(body.material_slots) and body.material_slots[0].link == "OBJECT" and \
        body.material_slots[0].material is not None and body.material_slots[0].material.name == HOLDOUT_MATERIAL


# --------------------------------------------------------------------------- masks


def mask_name(arm) -> str:
    return f"{arm.name}_mask"


@contextlib.contextmanager
def mask_editor(context, clip):
    """A Movie Clip editor in Mask mode for operators (an area of the window switched over and
    back); yields (override dict, space) or None when there is no window (``blender -b``)."""
    wm = context.window_manager
    window = context.window or (wm.windows[0] if wm and len(wm.windows) else None)
    screen = window.screen if window is not None else None
    if screen is None or not len(screen.areas):
        yield None
        return
    # an open clip editor, else the largest area but the one the button was pressed in (its
    # regions must outlive the operator)
    others = [a for a in screen.areas if a != context.area] or list(screen.areas)
    area = next((a for a in screen.areas if a.type == "CLIP_EDITOR"), None) or \
        max(others, key=lambda a: a.width * a.height)
    old_type = area.type
    area.type = "CLIP_EDITOR"
    space = area.spaces.active
    saved = (space.clip, space.mode, space.mask)
    try:
        space.clip = clip
        space.mode = "MASK"
        region = next((r for r in area.regions if r.type == "WINDOW"), None)
        yield {"window": window, "screen": screen, "area": area, "region": region, "space_data": space}, space
    finally:
        try:
            space.clip, space.mode = saved[0], saved[1]
            space.mask = saved[2]
        except (ReferenceError, TypeError):
            pass
        area.type = old_type


def _new_mask(name: str, layer_name: str, count: int, frame_start: int, frame_end: int, smooth: bool):
    mask = bpy.data.masks.get(name)
    if mask is None:
        mask = bpy.data.masks.new(name)
    else:
        mask.animation_data_clear()
        mask.layers.clear()
    mask.frame_start, mask.frame_end = int(frame_start), int(frame_end)
    layer = mask.layers.new(name=layer_name)
    spline = layer.splines.new()
    if len(spline.points) < count:
        spline.points.add(count - len(spline.points))
    spline.use_cyclic = True
    spline.use_fill = True
    for p in spline.points:
        p.handle_type = "AUTO" if smooth else "VECTOR"
    return mask, layer, spline


def _set_points(spline, co: np.ndarray) -> None:
    spline.points.foreach_set("co", np.ascontiguousarray(co, np.float32).ravel())
    spline.points.foreach_set("select", np.ones(len(spline.points), bool))


def mask_shapes(contours: dict, ids, count: int) -> dict:
    """{id: (Blender frames (n,), mask-space points (n, count, 2))} from ``load_contours``."""
    W, H = contours["width"], contours["height"]
    out = {}
    for tid in ids:
        if tid not in contours["people"]:
            continue
        frames, points = contours["people"][tid]
        if not len(frames):
            continue
        co = np.stack([silhouette.pixels_to_mask(silhouette.simplify_contour(p, count), W, H) for p in points])
        out[tid] = (np.asarray(frames, np.int64), co)
    return out


def build_masks(context, arms: dict, shapes: dict, count: int, keying: str = "AUTO", clip=None,
                smooth: bool = True) -> tuple:
    """One Mask per person with a shape per contour frame, hidden elsewhere.

    arms {id: armature}; shapes from ``mask_shapes``. keying: "SHAPE_KEYS" (Blender's mask
    shape keys, through its operator: needs a window), "FCURVES" (the points' F-Curves), "AUTO"
    (shape keys when there is a window). -> ({id: mask}, the keying used)."""
    if keying not in KEYING:
        raise ValueError(f"keying must be one of {', '.join(KEYING)}, got {keying!r}")
    scene = context.scene
    masks, splines = {}, {}
    for tid, (frames, co) in shapes.items():
        arm = arms[tid]
        mask, layer, spline = _new_mask(mask_name(arm), arm.name, count, scene.frame_start, scene.frame_end, smooth)
        _set_points(spline, co[0])
        masks[tid], splines[tid] = mask, (layer, spline)
    if not masks:
        return masks, keying
    used = keying
    if keying in ("AUTO", "SHAPE_KEYS"):
        with mask_editor(context, clip) as editor:
            if editor is None:
                if keying == "SHAPE_KEYS":
                    raise ValueError("mask shape keys need a window (Blender's mask operator); use FCURVES")
                used = "FCURVES"
            else:
                used = "SHAPE_KEYS"
                _key_shapes_with_operator(scene, editor, masks, splines, shapes)
    if used == "FCURVES":
        _key_shapes_with_fcurves(masks, splines, shapes)
    const = compat.interpolation_value("CONSTANT")
    for tid, mask in masks.items():
        layer = splines[tid][0]
        kf, hidden = timing.visibility_keys(shapes[tid][0], scene.frame_start, scene.frame_end)
        action = compat.ensure_action(mask, f"{mask.name}_animation")
        for prop in ("hide", "hide_render"):
            fc = compat.ensure_fcurve(action, mask, layer.path_from_id(prop), 0, layer.name)
            compat.set_keys(fc, kf, hidden, const)
        mask["pymaf_keying"] = used
        mask["pymaf_track_id"] = tid
    return masks, used


def _key_shapes_with_operator(scene, editor, masks, splines, shapes) -> None:
    override, space = editor
    keep = scene.frame_current
    by_frame = {}
    for tid, (frames, _) in shapes.items():
        for i, f in enumerate(frames.tolist()):
            by_frame.setdefault(int(f), []).append((tid, i))
    try:
        with bpy.context.temp_override(**override):
            for f in sorted(by_frame):
                scene.frame_set(f)   # evaluated first: masks copy their shape at f back, then ours go in
                for tid, i in by_frame[f]:
                    space.mask = masks[tid]
                    _set_points(splines[tid][1], shapes[tid][1][i])
                    if bpy.ops.mask.shape_key_insert() != {"FINISHED"}:
                        raise RuntimeError(f"Blender refused a mask shape key for person {tid} on frame {f}")
    finally:
        scene.frame_set(keep)


def _key_shapes_with_fcurves(masks, splines, shapes) -> None:
    linear = compat.interpolation_value("LINEAR")
    for tid, mask in masks.items():
        layer, spline = splines[tid]
        frames, co = shapes[tid]
        action = compat.ensure_action(mask, f"{mask.name}_animation")
        base = f'layers["{bpy.utils.escape_identifier(layer.name)}"].splines[0].points'
        for i in range(len(spline.points)):
            path = f"{base}[{i}].co"     # (mask points cannot make their own path)
            for k in range(2):
                fc = compat.ensure_fcurve(action, mask, path, k, layer.name)
                compat.set_keys(fc, frames.astype(np.float64), co[:, i, k], linear)


def mask_points_at(mask, context, frame: int) -> np.ndarray:
    """(N, 2) mask-space points of the mask's first spline, evaluated on ``frame``."""
    context.scene.frame_set(int(frame))
    ev = mask.evaluated_get(context.evaluated_depsgraph_get())
    pts = ev.layers[0].splines[0].points
    co = np.empty(2 * len(pts), np.float32)
    pts.foreach_get("co", co)
    return co.reshape(-1, 2).astype(np.float64)


# --------------------------------------------------------------------------- tracks


def camera_projection(scene, cam_obj) -> tuple:
    """-> (focal px, principal point, matrix_world (4, 4), width, height) of the scene camera."""
    cam = cam_obj.data
    if cam.type != "PERSP":
        raise ValueError(f"the camera {cam_obj.name} is not a perspective camera")
    r = scene.render
    W, H = r.resolution_x, r.resolution_y
    focal, pp = silhouette.camera_intrinsics(cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit,
                                            cam.shift_x, cam.shift_y, W, H, r.pixel_aspect_y / r.pixel_aspect_x)
    return focal, pp, np.array(cam_obj.matrix_world, np.float64), W, H


def world_joints(arm) -> tuple:
    """The rig's joints in the world on its keyed frames: the stored motion at the rig's
    smoothing (feet planted as keyed; ``animation.world_motion``) through the rig's object
    matrix. -> (Blender frames (T,) int64, joints (T, 24, 3))."""
    raw = rig_info(arm)
    R, t, _ = animation.world_motion(raw, raw.get("strength") or None)
    J = kinematics.posed_joints(R, raw["rest_joints"], smpl_topology.SMPL_PARENTS, t)
    M = np.array(arm.matrix_world, np.float64)
    J = J @ M[:3, :3].T + M[:3, 3]
    return raw["frames"].astype(np.int64) + int(raw["frame_offset"]), J


def track_name(track_id: str, joint: str) -> str:
    return f"{track_id}_{joint}"


def build_tracks(scene, clip, cam_obj, arms: dict, joints) -> dict:
    """Per person and joint a track ``<id>_<joint>`` with a keyed marker on each frame the
    person is seen (short gaps, up to ``gaps.BRIDGED_GAP_S``, interpolated) at the joint's
    projection, disabled outside. -> {id: [track names]}."""
    joints = list(joints)
    unknown = [j for j in joints if j not in JOINT_NAMES]
    if unknown:
        raise ValueError(f"unknown joint(s) {', '.join(unknown)}; choose from {', '.join(JOINT_NAMES)}")
    focal, pp, M, W, H = camera_projection(scene, cam_obj)
    last = max(clip_last_frame(clip), scene.frame_end)
    fps = scene.render.fps / scene.render.fps_base
    longest = gaps.longest_bridged(fps)
    idx = [JOINT_NAMES.index(j) for j in joints]
    tracking = clip.tracking
    half = (SEARCH_SIZE_PX / 2.0) / W, (SEARCH_SIZE_PX / 2.0) / H
    out = {}
    for tid, arm in arms.items():
        frames, J = world_joints(arm)
        J = J[:, idx]
        uv = silhouette.pixels_to_normalized(silhouette.project_to_pixels(J, M, focal, pp), W, H)
        front = silhouette.depth_in_front(J, M) > 1e-6
        color = _person_color(arm)
        names = []
        for k, joint in enumerate(joints):
            ok = front[:, k]
            f, co = silhouette.fill_short_gaps(frames[ok], uv[ok, k], longest)
            name = track_name(tid, joint)
            tr = tracking.tracks.get(name)
            if not len(f):                # never in front of the camera: no track (an old one: off)
                for m in (tr.markers if tr is not None else ()):
                    m.mute = True
                continue
            if tr is None:
                tr = tracking.tracks.new(name=name, frame=int(f[0]))
            off = silhouette.disabled_marker_frames(f, 1, last)
            _write_markers(tr, f, co, off, half)
            if color is not None:
                tr.use_custom_color = True
                tr.color = color
            names.append(name)
        out[tid] = names
    return out


def _person_color(arm):
    for child in arm.children:
        for slot in child.material_slots:
            mat = slot.material
            if mat is not None and "pymaf_color_srgb" in mat.keys():
                return tuple(float(c) / 255.0 for c in mat["pymaf_color_srgb"])
    return None


def _write_markers(track, frames, co, off, half) -> None:
    """Replace the track's markers: keyed ones on ``frames`` at ``co`` (normalised), disabled
    ones on ``off`` (at the nearest keyed position), none elsewhere."""
    frames = [int(f) for f in frames]
    want = set(frames) | set(int(f) for f in off)
    markers = track.markers
    smin, smax = (-half[0], -half[1]), (half[0], half[1])
    for f, c in zip(frames, np.asarray(co, np.float64)):
        m = markers.insert_frame(f, co=(float(c[0]), float(c[1])))
        m.mute = False
        m.is_keyed = True
        m.search_min, m.search_max = smin, smax
    arr = np.asarray(frames)
    for f in off:
        f = int(f)
        near = co[int(np.argmin(np.abs(arr - f)))]
        m = markers.insert_frame(f, co=(float(near[0]), float(near[1])))
        m.mute = True
        m.is_keyed = True
        m.search_min, m.search_max = smin, smax
    for f in [m.frame for m in markers if m.frame not in want]:
        markers.delete_frame(f)


def marker_at(track, frame: int):
    """The marker Blender uses for ``frame`` (the last one at or before it), or None."""
    return track.markers.find_frame(int(frame), exact=False)


# --------------------------------------------------------------------------- all of it


def setup_roto(context, *, import_name=None, armatures=None, video_path=None, mattes=None,
               masks: bool = True, mask_points: int = DEFAULT_MASK_POINTS, smooth_masks: bool = True,
               tracks: bool = True, joints=DEFAULT_JOINTS, holdout=None, compositor: bool = True,
               keying: str = "AUTO") -> dict:
    """Set up roto for one import (see the module's docstring). Everything is checked before
    the scene changes; a failure half-way removes what was created.

    import_name / armatures: which import (default: the scene's only one). video_path: the
    footage (default the camera's background movie, else the result's video). mattes: the
    engine's mattes folder or ``<stem>_mattes.json`` (None: masks and matte nodes skipped).
    mask_points: points per mask spline (the contour is resampled to it). holdout: True / False
    switch the bodies' holdout on / off, None leaves it. keying: mask keying (``build_masks``).
    -> {"name", "clip", "camera", "background", "nodes", "masks" {id: mask}, "keying",
        "tracks" {id: [names]}, "mattes" (``find_mattes`` or None), "matte_images" {id: image},
        "holdout" (bool or None), "warnings" [str]}"""
    scene = context.scene
    name, arm_list = import_rigs(scene, import_name, armatures)
    arms = {str(rig_info(a)["track_id"]): a for a in arm_list}
    cam = import_camera(scene, name)
    path = plate_path(cam, arm_list, video_path)
    if not path or not os.path.isfile(path):
        raise ValueError(f"the footage was not found: {path or '(none recorded)'}; choose the video")
    mask_points = int(mask_points)
    if mask_points < 3:
        raise ValueError(f"a mask needs at least 3 points, got {mask_points}")
    if keying not in KEYING:
        raise ValueError(f"keying must be one of {', '.join(KEYING)}, got {keying!r}")
    joints = list(joints or [])
    if tracks:
        unknown = [j for j in joints if j not in JOINT_NAMES]
        if unknown or not joints:
            raise ValueError(f"choose joints to track from {', '.join(JOINT_NAMES)}"
                             + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
        camera_projection(scene, cam)
    warnings = []
    found, shapes = None, {}
    if mattes:
        found = find_mattes(mattes, prefer_stem=_result_stem(arm_list))
        if masks:
            if found["contours"] is None:
                warnings.append(f"no contours file in {found['folder']}: no masks (run Mattes again)")
            else:
                contours = silhouette.load_contours(found["contours"])
                shapes = mask_shapes(contours, list(arms), mask_points)
                missing = [t for t in arms if t not in shapes]
                if missing:
                    warnings.append(f"no contour for person(s) {', '.join(missing)} in {found['contours']}")
    elif masks:
        warnings.append("no mattes chosen: no masks (run Mattes, or choose the mattes folder)")

    before = {k: set(getattr(bpy.data, k)) for k in ("movieclips", "masks", "images", "materials", "node_groups",
                                                     "actions")}
    saved = (scene.render.use_compositing, scene.render.film_transparent, scene.view_settings.view_transform,
             scene.active_clip)
    try:
        clip = load_clip(path)
        scene.active_clip = clip
        bg = set_clip_background(cam, clip)
        mask_blocks, used = {}, None
        if shapes:
            mask_blocks, used = build_masks(context, arms, shapes, mask_points, keying, clip, smooth_masks)
        images = {}
        if found is not None:
            for tid in arms:
                files = found["people"].get(tid)
                if files:
                    img = load_matte_sequence(files, f"{found['stem']}_person{tid}")
                    img["pymaf_last_frame"] = int(max(files))
                    images[tid] = img
        nodes = {}
        if compositor:
            nodes = build_compositor(scene, name, clip,
                                     [(t, images.get(t), mask_blocks.get(t)) for t in arms])
        track_names = build_tracks(scene, clip, cam, arms, joints) if tracks else {}
        if holdout is not None:
            set_holdout([m for a in arm_list for m in rig_meshes(a)], bool(holdout))
    except BaseException:
        for k, had in before.items():
            data = getattr(bpy.data, k)
            for block in [b for b in data if b not in had]:
                try:
                    data.remove(block)
                except (ReferenceError, RuntimeError):
                    pass
        try:
            (scene.render.use_compositing, scene.render.film_transparent, scene.view_settings.view_transform,
             scene.active_clip) = saved
        except (ReferenceError, TypeError):
            pass
        raise
    return {"name": name, "clip": clip, "camera": cam, "background": bg, "nodes": nodes, "masks": mask_blocks,
            "keying": used, "tracks": track_names, "mattes": found, "matte_images": images,
            "holdout": holdout, "warnings": warnings}


def rig_meshes(arm) -> list:
    return [ob for ob in arm.children if ob.type == "MESH"]


def _result_stem(arms) -> str:
    for arm in arms:
        path = arm.get("pymaf_result_file")
        if path:
            return os.path.splitext(os.path.basename(str(path)))[0]
    return ""
